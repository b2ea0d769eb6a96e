//! `cloudproxy up` as a child process on private ports, with what it printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{cloudproxy_bin, reserve_ports, ChildGuard};

/// A running `cloudproxy up`.
pub(crate) struct Up {
    pub guard: ChildGuard,
    /// `http://127.0.0.1:PORT` of the control plane.
    pub control: String,
    pub tls: SocketAddr,
    pub udp: SocketAddr,
    pub media: SocketAddr,
    /// `http://127.0.0.1:PORT` of the media service's WebRTC endpoint.
    pub media_http: String,
    pub operator_key: String,
    pub data: PathBuf,
}

/// Starts `cloudproxy up` with `data` as its data directory and waits for `ready`.
pub(crate) fn start_up(data: &Path, patience: Duration) -> Up {
    let p = reserve_ports(7, true);
    let a = |i: usize| format!("127.0.0.1:{}", p[i]);
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.arg("up")
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--control", &a(0), "--media", &a(1), "--turn", &a(2)])
        .args(["--tls", &a(3), "--metrics", &a(4)])
        .args(["--media-http", &a(5), "--media-webrtc", &a(6)])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let (guard, lines) = ChildGuard::spawn("cloudproxy up", cmd).unwrap();
    let deadline = Instant::now() + patience;
    let (mut control, mut tls, mut udp, mut media) = (None, None, None, None);
    let mut media_http = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l == "ready" => break,
            Ok(l) => match l.split_once(' ') {
                Some(("control", v)) => control = Some(v.to_owned()),
                Some(("tls", v)) => tls = v.parse().ok(),
                Some(("udp", v)) => udp = v.parse().ok(),
                Some(("media", v)) => media = v.parse().ok(),
                Some(("whip", v)) => media_http = v.strip_suffix("/v1/whip").map(str::to_owned),
                _ => {}
            },
            Err(_) => panic!("cloudproxy up is not ready:\n{}", guard.output.text()),
        }
    }
    let operator_key = std::fs::read_to_string(data.join("operator.key"))
        .unwrap()
        .trim()
        .to_owned();
    Up {
        control: control.expect("a control line"),
        tls: tls.expect("a tls line"),
        udp: udp.expect("a udp line"),
        media: media.expect("a media line"),
        media_http: media_http.expect("a whip line"),
        operator_key,
        data: data.to_owned(),
        guard,
    }
}
