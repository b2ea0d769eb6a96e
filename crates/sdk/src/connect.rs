//! Finding a path and joining the channel over it.
//!
//! Every mode is a list of candidate paths raced Happy-Eyeballs style (RFC 8305 §5): the first
//! starts at once, each next one when the stagger delay passes or the previous one fails, and
//! the first to reach the media service wins; the others are cancelled. Candidates that timed
//! out are tried again, in order, while the join's deadline leaves room: on a lossy network one
//! lost handshake flight can cost an attempt its whole timeout.
//!
//! A join is JOIN, answered with a CHALLENGE, then JOIN with its cookie, answered with JOINED
//! (the media service's return-routability check, `cloudproxy_media::wire`). The CHALLENGE
//! already proves the path both ways, so the race ends there: only the winner echoes its
//! cookie, and the losers never become members. (Were each candidate to finish its join, a
//! loser's late JOIN would take the uid's seat from the winner: one member per channel and uid.)
//!
//! A cancelled candidate gives back what it made: its [`Pipe`] is dropped with the task, and a
//! dropped pipe deletes its allocation in the background (UDP: Refresh with LIFETIME 0, after
//! waiting for an Allocate still in flight; TCP/TLS: the connection closes), and says LEAVE to
//! the media service if it had joined (see `release.rs`).
//!
//! | mode | candidates, in order |
//! |---|---|
//! | Auto | direct UDP to the media service, then the Auto proxies over TLS (TCP 443) |
//! | Force UDP | the published proxies over TURN/UDP |
//! | Force TCP | the published proxies over TURN/TLS on TCP 443 |
//!
//! With an HTTP proxy configured ([`ClientConfig::http_proxy`]), the TCP candidates connect
//! through it with CONNECT (`http_proxy.rs`); the UDP candidates are unchanged.
//!
//! In the Force modes no candidate addresses anything but a proxy: the media service is reached
//! only through the relay, so nothing is sent to any other address.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudproxy_media::wire::Cookie;
use tokio::task::JoinSet;

use crate::error::{JoinError, PathAttempt, PathFailure};
use crate::event::PathKind;
use crate::media::{self, MediaMsg};
use crate::pipe::{Answer, Layer, Pipe};
use crate::{ClientConfig, CloudProxyType, SdkError};

/// One path to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub kind: PathKind,
    pub target: SocketAddr,
}

/// The result of a successful join.
pub(crate) struct Joined {
    pub pipe: Pipe,
    pub uid: u32,
    pub members: u16,
    pub seen_as: SocketAddr,
    pub elapsed: Duration,
}

/// Credentials from a token: TURN username/password, and the whole token for the media join.
#[derive(Debug, Clone)]
pub(crate) struct Credential {
    pub username: String,
    pub password: String,
    pub token: String,
}

impl Credential {
    /// Splits and parses the token with `cloudproxy_proto::token` and checks that it was minted
    /// for this channel and uid.
    pub(crate) fn for_join(token: &str, channel: &str, uid: u32) -> Result<Self, SdkError> {
        use cloudproxy_proto::token;
        let bad = |e: token::TokenError| SdkError::BadToken(e.to_string());
        let (username, password) = token::split(token).map_err(bad)?;
        let claims = token::claims(username).map_err(bad)?;
        if claims.channel != channel || claims.uid != uid {
            return Err(SdkError::BadToken(format!(
                "the token is for channel {:?} uid {}, not channel {channel:?} uid {uid}",
                claims.channel, claims.uid,
            )));
        }
        Ok(Self {
            username: username.into(),
            password: password.into(),
            token: token.into(),
        })
    }
}

/// The candidates of `mode`, the list rotated by `offset` (reconnects try the next proxy first).
pub(crate) fn candidates(
    config: &ClientConfig,
    mode: CloudProxyType,
    offset: usize,
) -> Result<Vec<Candidate>, SdkError> {
    let rotate = |list: &[SocketAddr], kind: PathKind| -> Vec<Candidate> {
        let n = list.len().max(1);
        (0..list.len())
            .map(|i| Candidate {
                kind,
                target: list[(i + offset) % n],
            })
            .collect()
    };
    Ok(match mode {
        CloudProxyType::None => {
            let mut c = vec![Candidate {
                kind: PathKind::Direct,
                target: config.media,
            }];
            c.extend(rotate(&config.proxies.auto, PathKind::TurnTls));
            c
        }
        CloudProxyType::UdpProxy => {
            if config.proxies.udp.is_empty() {
                return Err(SdkError::NoProxies("UDP"));
            }
            rotate(&config.proxies.udp, PathKind::TurnUdp)
        }
        CloudProxyType::TcpProxy => {
            if config.proxies.tls.is_empty() {
                return Err(SdkError::NoProxies("TLS"));
            }
            rotate(&config.proxies.tls, PathKind::TurnTls)
        }
    })
}

/// Races `candidates` to the media service's CHALLENGE, then finishes the join on the winner:
/// the joined path, or every failure.
/// Less join time than this left: a timed-out candidate is not tried again.
const RETRY_ROOM: Duration = Duration::from_millis(500);

pub(crate) async fn race(
    config: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    candidates: Vec<Candidate>,
    credential: &Credential,
) -> Result<(Candidate, Joined), JoinError> {
    let started = Instant::now();
    let deadline = started + config.join_timeout;
    let proxy_name = || config.http_proxy.as_ref().map(ToString::to_string);
    let mut pending: VecDeque<Candidate> = candidates.into();
    // Candidates that timed out: tried again, in order, once every candidate has had its turn
    // and while the join's deadline leaves room (on a lossy network one lost SYN or handshake
    // flight can cost an attempt its whole timeout; the next try usually gets through).
    let mut timed_out: Vec<Candidate> = Vec::new();
    let mut running: JoinSet<(Candidate, Result<Reached, PathFailure>)> = JoinSet::new();
    let mut attempts = Vec::new();
    let mut in_flight: Vec<Candidate> = Vec::new();
    let spawn = |running: &mut JoinSet<_>, c: Candidate| {
        let config = config.clone();
        let tls = tls.clone();
        let credential = credential.clone();
        running.spawn(async move {
            let r =
                tokio::time::timeout(config.attempt_timeout, reach(&config, &tls, c, &credential))
                    .await
                    .unwrap_or(Err(PathFailure::Timeout));
            (c, r)
        });
    };
    let spawn_next = |running: &mut JoinSet<_>,
                      in_flight: &mut Vec<Candidate>,
                      pending: &mut VecDeque<Candidate>,
                      timed_out: &mut Vec<Candidate>|
     -> bool {
        if pending.is_empty()
            && in_flight.is_empty()
            && deadline.saturating_duration_since(Instant::now()) >= RETRY_ROOM
        {
            pending.extend(timed_out.drain(..));
        }
        let Some(c) = pending.pop_front() else {
            return false;
        };
        in_flight.push(c);
        spawn(running, c);
        true
    };
    spawn_next(&mut running, &mut in_flight, &mut pending, &mut timed_out);
    loop {
        let stagger = tokio::time::sleep(config.stagger);
        tokio::select! {
            done = running.join_next() => match done {
                Some(Ok((c, Ok(reached)))) => {
                    // The losers' pipes are dropped with their tasks and release themselves.
                    running.abort_all();
                    let left = deadline.saturating_duration_since(Instant::now());
                    let finished = tokio::time::timeout(
                        left.min(config.attempt_timeout),
                        finish(config, reached, credential, started),
                    )
                    .await
                    .unwrap_or(Err(PathFailure::Timeout));
                    return match finished {
                        Ok(joined) => Ok((c, joined)),
                        Err(failure) => {
                            attempts.push(PathAttempt { path: c.kind, target: c.target, failure });
                            Err(JoinError::new(attempts, started.elapsed(), proxy_name()))
                        }
                    };
                }
                Some(Ok((c, Err(failure)))) => {
                    in_flight.retain(|x| *x != c);
                    if matches!(failure, PathFailure::Timeout) {
                        timed_out.push(c);
                    }
                    attempts.push(PathAttempt { path: c.kind, target: c.target, failure });
                    if !spawn_next(&mut running, &mut in_flight, &mut pending, &mut timed_out)
                        && running.is_empty()
                    {
                        return Err(JoinError::new(attempts, started.elapsed(), proxy_name()));
                    }
                }
                Some(Err(_)) | None => {
                    if !spawn_next(&mut running, &mut in_flight, &mut pending, &mut timed_out)
                        && running.is_empty()
                    {
                        return Err(JoinError::new(attempts, started.elapsed(), proxy_name()));
                    }
                }
            },
            _ = stagger => {
                spawn_next(&mut running, &mut in_flight, &mut pending, &mut timed_out);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                running.abort_all();
                for c in in_flight {
                    attempts.push(PathAttempt { path: c.kind, target: c.target, failure: PathFailure::Timeout });
                }
                for c in pending {
                    attempts.push(PathAttempt { path: c.kind, target: c.target, failure: PathFailure::Cancelled });
                }
                return Err(JoinError::new(attempts, started.elapsed(), proxy_name()));
            }
        }
    }
}

/// How long opening a tunnel through the HTTP proxy may take within one attempt: less than
/// the attempt, so that a silent proxy is reported as the proxy's timeout, by its name.
pub(crate) fn tunnel_patience(attempt: Duration) -> Duration {
    attempt * 3 / 4
}

/// A candidate that reached the media service: its pipe, and the cookie to join with.
pub(crate) struct Reached {
    pipe: Pipe,
    cookie: Cookie,
}

/// How often a JOIN is resent while nothing answers it.
const JOIN_RESEND: Duration = Duration::from_millis(400);

/// One candidate, whole: open the pipe, then join the channel over it.
pub(crate) async fn attempt(
    config: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    c: Candidate,
    credential: &Credential,
    started: Instant,
) -> Result<Joined, PathFailure> {
    let reached = reach(config, tls, c, credential).await?;
    finish(config, reached, credential, started).await
}

/// Opens the pipe and sends JOIN (resent every [`JOIN_RESEND`]) until the CHALLENGE comes.
async fn reach(
    config: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    c: Candidate,
    credential: &Credential,
) -> Result<Reached, PathFailure> {
    let mut pipe = match c.kind {
        PathKind::Direct => Pipe::direct(c.target).await?,
        kind => {
            let name = config
                .tls_server_name
                .clone()
                .unwrap_or_else(|| c.target.ip().to_string());
            let via = config
                .tunnel_for(kind, c.target)
                .map(|proxy| (proxy, tunnel_patience(config.attempt_timeout)));
            Pipe::turn(
                kind,
                c.target,
                config.media,
                &credential.username,
                &credential.password,
                Some((tls, &name)),
                via,
            )
            .await?
        }
    };
    let join = media::join(&credential.token, config.echo, None);
    let cookie = send_join(&mut pipe, join, |msg| match msg {
        MediaMsg::Challenge { cookie } => Answer::Done(cookie),
        _ => Answer::Ignore,
    })
    .await?;
    Ok(Reached { pipe, cookie })
}

/// Sends `join` over `pipe` (again every [`JOIN_RESEND`]) until `answer` makes something of
/// what the media service says; its ERROR fails the path.
async fn send_join<T>(
    pipe: &mut Pipe,
    join: Vec<u8>,
    mut answer: impl FnMut(MediaMsg) -> Answer<T>,
) -> Result<T, PathFailure> {
    pipe.exchange(
        Layer::Media,
        join,
        || Some(JOIN_RESEND),
        |reply| match media::parse(reply) {
            Some(MediaMsg::Error {
                code,
                app_id,
                message,
                ..
            }) => Err(PathFailure::Media {
                code,
                app_id,
                message,
            }),
            Some(msg) => Ok(answer(msg)),
            None => Ok(Answer::Ignore),
        },
    )
    .await
}

/// Echoes the cookie in a JOIN (resent every [`JOIN_RESEND`]; a stale cookie earns a fresh
/// CHALLENGE, echoed in turn) until JOINED.
async fn finish(
    config: &ClientConfig,
    reached: Reached,
    credential: &Credential,
    started: Instant,
) -> Result<Joined, PathFailure> {
    let Reached { mut pipe, cookie } = reached;
    let join = media::join(&credential.token, config.echo, Some(cookie));
    let (uid, members, seen_as) = send_join(&mut pipe, join, |msg| match msg {
        MediaMsg::Joined {
            uid,
            members,
            seen_as,
        } => Answer::Done((uid, members, seen_as)),
        MediaMsg::Challenge { cookie } => {
            Answer::Resend(media::join(&credential.token, config.echo, Some(cookie)))
        }
        _ => Answer::Ignore,
    })
    .await?;
    pipe.joined_media();
    Ok(Joined {
        pipe,
        uid,
        members,
        seen_as,
        elapsed: started.elapsed(),
    })
}
