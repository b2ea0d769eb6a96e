//! Checking one path at a time, for `cloudproxy diagnose`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::connect::{self, Candidate, Credential};
use crate::error::PathFailure;
use crate::event::PathKind;
use crate::media::{self, MediaMsg};
use crate::{ClientConfig, SdkError};

/// What one path achieved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// The transport probed: direct UDP, TURN/UDP or TURN/TLS.
    pub path: PathKind,
    /// The address probed: a proxy, or the media service for a direct path.
    pub target: SocketAddr,
    /// Connect, TURN set-up and media join, in milliseconds.
    pub join_ms: u64,
    /// Median round-trip time of a few PINGs through the path, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The source address the media service saw.
    pub seen_as: SocketAddr,
}

/// Joins over exactly one path (`kind` to `target`), measures the RTT with `pings` PINGs,
/// and leaves. Bounded by the config's attempt timeout, half a second per PING, and the
/// leave's bounds (LEFT, then the release).
pub async fn probe(
    config: &ClientConfig,
    kind: PathKind,
    target: SocketAddr,
    channel: &str,
    uid: u32,
    token: &str,
    pings: u32,
) -> Result<Result<Probe, PathFailure>, SdkError> {
    let credential = Credential::for_join(token, channel, uid)?;
    let tls = crate::tls::client_config(&config.tls_trust)
        .map_err(|e| SdkError::BadToken(format!("TLS configuration: {e}")))?;
    let started = Instant::now();
    let c = Candidate { kind, target };
    let joined = match tokio::time::timeout(
        config.attempt_timeout,
        connect::attempt(config, &tls, c, &credential, started),
    )
    .await
    {
        Ok(Ok(j)) => j,
        Ok(Err(f)) => return Ok(Err(f)),
        Err(_) => return Ok(Err(PathFailure::Timeout)),
    };
    let mut pipe = joined.pipe;
    let mut rtts = Vec::new();
    let mut buf = Vec::with_capacity(2048);
    let mut ping = Vec::with_capacity(64);
    let epoch = Instant::now();
    for _ in 0..pings {
        let t = epoch.elapsed().as_micros() as u64;
        media::ping(t, &mut ping);
        if pipe.send(&ping).await.is_err() {
            break;
        }
        let wait = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                r = pipe.recv(&mut buf) => {
                    if r.is_err() { break; }
                    if let Some(MediaMsg::Pong { t: sent }) = media::parse(&buf) {
                        if sent == t {
                            rtts.push((epoch.elapsed().as_micros() as u64 - t) as f64 / 1000.0);
                            break;
                        }
                    }
                }
            }
        }
    }
    // Leave as a session does: LEAVE answered with LEFT, then the allocation deleted.
    crate::client::say_leave(&mut pipe, &mut buf).await;
    pipe.close().await;
    rtts.sort_by(|a, b| a.total_cmp(b));
    Ok(Ok(Probe {
        path: kind,
        target,
        join_ms: joined.elapsed.as_millis() as u64,
        rtt_ms: rtts.get(rtts.len() / 2).copied(),
        seen_as: joined.seen_as,
    }))
}
