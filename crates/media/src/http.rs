//! The WHIP-style HTTP endpoint of the WebRTC side (see `docs/webrtc.md`): it parses and
//! bounds requests, then hands each to the event loop as a [`Command`] and waits for the
//! answer. It runs as tasks of the media thread's runtime; the sessions stay in the loop.
//!
//! * `POST /v1/whip?echo=0|1` — `Authorization: Bearer <token>`, `Content-Type:
//!   application/sdp`, the offer → `201`, `Location: /v1/whip/<session>`, the answer.
//! * `PATCH /v1/whip/<session>` — `application/trickle-ice-sdpfrag` → `204`; `400
//!   too_many_candidates` past [`MAX_REMOTE_CANDIDATES`](crate::webrtc::MAX_REMOTE_CANDIDATES)
//!   in all.
//! * `DELETE /v1/whip/<session>` → `204`, `404` for an unknown session.
//! * Errors are `{"error": code, "message": sentence}`. Bodies above [`MAX_BODY`] get 413; a
//!   connection lives at most [`CONNECTION_DEADLINE`] (a client sending one byte at a time is
//!   cut off); at most [`MAX_CONNECTIONS`] at once (further ones wait in the accept queue).
//! * CORS: every reply allows any origin and exposes `Location`; `OPTIONS` answers the
//!   preflight. Auth is a bearer token, never a cookie, so `*` gives a page nothing more
//!   than it already holds.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::server::SessionId;
use crate::webrtc::ApiError;

/// Largest request body (an offer with candidates is a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// The longest a connection stays open, request and reply included.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// A request for the event loop.
pub(crate) enum Command {
    Offer {
        token: String,
        echo: bool,
        sdp: String,
        reply: oneshot::Sender<Result<(SessionId, String), ApiError>>,
    },
    Candidates {
        id: SessionId,
        frag: String,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Delete {
        id: SessionId,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Stats {
        reply: oneshot::Sender<(crate::webrtc::WebStats, crate::server::Stats)>,
    },
}

type Loop = mpsc::Sender<Command>;

pub(crate) fn router(commands: Loop) -> Router {
    Router::new()
        .route("/v1/whip", post(offer).options(preflight))
        .route(
            "/v1/whip/{id}",
            patch(candidates).delete(delete).options(preflight),
        )
        .fallback(|| async { ApiError::new(404, "not_found", "no such endpoint") })
        .layer(axum::middleware::map_response(cors))
        .with_state(commands)
}

/// Serves `router` on `listener` until `stop` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let listener = Bounded {
        inner: listener,
        permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await;
}

async fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location"),
    );
    r
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "POST, PATCH, DELETE"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

#[derive(serde::Deserialize)]
struct OfferQuery {
    echo: Option<String>,
}

async fn offer(
    State(commands): State<Loop>,
    Query(q): Query<OfferQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let echo = match q.echo.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => {
            return Err(ApiError::new(
                400,
                "bad_query",
                format!("echo must be 0 or 1, not '{other}'"),
            ))
        }
    };
    let token = bearer(request.headers())?;
    let sdp = text_body(request, "application/sdp").await?;
    let (reply, answer) = oneshot::channel();
    let command = Command::Offer {
        token,
        echo,
        sdp,
        reply,
    };
    let (id, answer) = ask(&commands, command, answer).await??;
    let location = format!("/v1/whip/{id}");
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, location),
        ],
        answer,
    )
        .into_response())
}

async fn candidates(
    State(commands): State<Loop>,
    Path(id): Path<String>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let id = session(&id)?;
    let frag = text_body(request, "application/trickle-ice-sdpfrag").await?;
    let (reply, done) = oneshot::channel();
    ask(&commands, Command::Candidates { id, frag, reply }, done).await??;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete(
    State(commands): State<Loop>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = session(&id)?;
    let (reply, done) = oneshot::channel();
    ask(&commands, Command::Delete { id, reply }, done).await??;
    Ok(StatusCode::NO_CONTENT)
}

async fn ask<T>(
    commands: &Loop,
    command: Command,
    answer: oneshot::Receiver<T>,
) -> Result<T, ApiError> {
    let stopped = || ApiError::new(503, "stopping", "the media service is stopping");
    commands.send(command).await.map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())
}

fn session(id: &str) -> Result<SessionId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::new(404, "unknown_session", format!("no session {id}")))
}

fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(token.trim().to_owned())
        }
        _ => Err(ApiError::new(
            401,
            "unauthorized",
            "an 'Authorization: Bearer <token>' header is required",
        )),
    }
}

fn content_type(headers: &HeaderMap, want: &str) -> Result<(), ApiError> {
    let got = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = got.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(ApiError::new(
            415,
            "unsupported_media_type",
            format!("Content-Type must be {want}, not '{got}'"),
        ))
    }
}

/// The body of a request of media type `want` (415 otherwise) as UTF-8, at most [`MAX_BODY`]
/// bytes (a larger declared length is refused before reading).
async fn text_body(request: Request, want: &str) -> Result<String, ApiError> {
    let headers = request.headers();
    content_type(headers, want)?;
    let too_large = || {
        ApiError::new(
            413,
            "body_too_large",
            format!("the body is over {MAX_BODY} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let bytes: Bytes = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| too_large())?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::new(400, "malformed_body", "the body is not UTF-8"))
}

/// The TCP listener, with a cap on connections and a deadline on each.
struct Bounded {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for Bounded {
    type Io = Deadline;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let sleep = Box::pin(tokio::time::sleep(CONNECTION_DEADLINE));
                    return (
                        Deadline {
                            stream,
                            sleep,
                            _permit: permit,
                        },
                        addr,
                    );
                }
                // E.g. EMFILE: wait rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails its reads and writes once its deadline has passed, so hyper
/// closes it.
pub(crate) struct Deadline {
    stream: TcpStream,
    sleep: Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Deadline {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection deadline")
}

impl AsyncRead for Deadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Deadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
