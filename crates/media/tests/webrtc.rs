//! The WebRTC endpoint over real sockets: a str0m peer made here (full ICE, as a browser is)
//! posts its offer, connects to the service's ICE-lite agent, and exchanges data-channel
//! messages with a UDP member of the same channel. Then the HTTP endpoint under hostile input.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use cloudproxy_media::blocking::{Client, Reply};
use cloudproxy_media::webrtc::MAX_REMOTE_CANDIDATES;
use cloudproxy_media::wire::{self, Packet};
use cloudproxy_media::{Limits, MediaConfig, MediaService, WebConfig};
use cloudproxy_testkit::apps::App;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

mod common;

use common::APP;

const WAIT: Duration = Duration::from_secs(20);

/// The tests count the process's open descriptors, so they run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn service_with(max_sessions: usize) -> MediaService {
    service_config(MediaConfig::default(), max_sessions)
}

fn service_config(base: MediaConfig, max_sessions: usize) -> MediaService {
    common::service(MediaConfig {
        web: Some(WebConfig {
            max_sessions,
            ..WebConfig::on("127.0.0.1:0".parse().unwrap())
        }),
        ..base
    })
}

fn service() -> MediaService {
    service_with(1_000)
}

/// POSTs a valid offer (with a data channel) authorized by `token`.
fn offer_with(http_addr: SocketAddr, token: &str) -> Response {
    http(
        http_addr,
        "POST",
        "/v1/whip",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/sdp"),
        ],
        offer_with_channel().as_bytes(),
    )
}

/// `(status, head, body)`.
type Response = (u16, String, String);

/// One HTTP/1.1 request, `Connection: close`: `(status, headers, body)`.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    // A refused body may be cut off by the server's close: keep what was read.
    let _ = s.write_all(body);
    read_response(&mut s)
}

fn read_response(s: &mut TcpStream) -> Response {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A WebRTC peer as a browser is (controlling, full ICE), made with str0m over one UDP
/// socket, with a `cloudproxy` data channel.
struct WebPeer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    channel: ChannelId,
    open: bool,
    inbox: Vec<Vec<u8>>,
    location: String,
    http: SocketAddr,
}

impl WebPeer {
    /// Offer, POST, answer: `Err((status, body))` when the service refuses.
    fn post(
        http_addr: SocketAddr,
        bearer: &str,
        echo: bool,
        trickle: bool,
    ) -> Result<WebPeer, (u16, String)> {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::new(Instant::now());
        let candidate = Candidate::host(local, "udp").unwrap();
        if !trickle {
            rtc.add_local_candidate(candidate.clone());
        }
        let mut api = rtc.sdp_api();
        let channel = api.add_channel("cloudproxy".into());
        let (offer, pending): (_, SdpPendingOffer) = api.apply().unwrap();
        let auth = format!("Bearer {bearer}");
        let path = format!("/v1/whip?echo={}", u8::from(echo));
        let (status, head, body) = http(
            http_addr,
            "POST",
            &path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/sdp"),
            ],
            offer.to_sdp_string().as_bytes(),
        );
        if status != 201 {
            return Err((status, body));
        }
        assert_eq!(header(&head, "content-type"), Some("application/sdp"));
        assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
        let location = header(&head, "location").expect("Location").to_owned();
        assert!(body.contains("a=ice-lite"), "an ICE-lite answer: {body}");
        let answer = SdpAnswer::from_sdp_string(&body).expect("the answer parses");
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        if trickle {
            // The candidate follows by PATCH (RFC 8840), as a trickling browser sends it.
            rtc.add_local_candidate(candidate.clone());
            let frag = format!(
                "a=ice-ufrag:x\r\na=mid:0\r\na={}\r\na=end-of-candidates\r\n",
                candidate.to_sdp_string()
            );
            let (status, _, body) = http(
                http_addr,
                "PATCH",
                &location,
                &[("Content-Type", "application/trickle-ice-sdpfrag")],
                frag.as_bytes(),
            );
            assert_eq!(status, 204, "{body}");
        }
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        Ok(WebPeer {
            rtc,
            socket,
            local,
            channel,
            open: false,
            inbox: Vec::new(),
            location,
            http: http_addr,
        })
    }

    /// Drives the Rtc for about `for_at_most`, or until `done` holds.
    fn drive_until(&mut self, for_at_most: Duration, mut done: impl FnMut(&WebPeer) -> bool) {
        let deadline = Instant::now() + for_at_most;
        let mut buf = vec![0u8; 2000];
        while Instant::now() < deadline && !done(self) {
            let timeout = loop {
                match self.rtc.poll_output().expect("poll_output") {
                    Output::Transmit(t) => {
                        let _ = self.socket.send_to(&t.contents, t.destination);
                    }
                    Output::Timeout(t) => break t,
                    Output::Event(Event::ChannelOpen(id, _)) if id == self.channel => {
                        self.open = true;
                    }
                    Output::Event(Event::ChannelData(d)) => self.inbox.push(d.data),
                    Output::Event(_) => {}
                }
            };
            let wait = timeout
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(5));
            self.socket.set_read_timeout(Some(wait)).unwrap();
            let input = match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => match buf[..n].try_into() {
                    Ok(contents) => Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: Protocol::Udp,
                            source: from,
                            destination: self.local,
                            contents,
                        },
                    ),
                    Err(_) => continue,
                },
                Err(_) => Input::Timeout(Instant::now()),
            };
            self.rtc.handle_input(input).expect("handle_input");
        }
    }

    /// Waits for the data channel to open and JOINED to arrive: `(uid, members, address)`.
    fn joined(&mut self) -> (u32, u16, SocketAddr) {
        self.drive_until(WAIT, |p| !p.inbox.is_empty());
        assert!(self.open, "the data channel opened");
        let first = self.inbox.remove(0);
        match wire::decode(&first).expect("a wire datagram") {
            Packet::Joined { uid, members, addr } => (uid, members, addr),
            other => panic!("expected JOINED, got {other:?}"),
        }
    }

    fn send(&mut self, p: Packet<'_>) {
        let mut v = Vec::new();
        p.encode_vec(&mut v).unwrap();
        let mut ch = self.rtc.channel(self.channel).expect("the channel is open");
        assert!(ch.write(true, &v).unwrap(), "the message was queued");
    }

    /// The next message, decoded into an owned reply.
    fn recv(&mut self) -> Reply {
        self.drive_until(WAIT, |p| !p.inbox.is_empty());
        assert!(!self.inbox.is_empty(), "a message within {WAIT:?}");
        let m = self.inbox.remove(0);
        match Reply::from_packet(wire::decode(&m).expect("a wire datagram")) {
            Some(r @ (Reply::Forwarded { .. } | Reply::Pong(_) | Reply::Left)) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn delete(&self) -> u16 {
        http(self.http, "DELETE", &self.location, &[], b"").0
    }
}

fn data(seq: u32, payload: &[u8]) -> Packet<'_> {
    Packet::Data {
        seq,
        sent_micros: 7,
        payload,
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_str0m_peer_and_a_udp_client_exchange_50_messages_each_way() {
    let _serial = serial();
    let service = service();
    let http_addr = service.http_addr().unwrap();
    let t0 = Instant::now();
    let mut web = WebPeer::post(http_addr, &APP.token("room", 1, 600), true, false).expect("201");
    let (uid, members, seen) = web.joined();
    let join_time = t0.elapsed();
    println!("str0m peer: POST to JOINED in {join_time:?}");
    assert_eq!((uid, members), (1, 1));
    assert_eq!(seen, web.local, "JOINED carries the address ICE selected");

    let mut udp = Client::connect(service.local_addrs()[0]).unwrap();
    let (_, members, _) = udp.join(&APP.token("room", 2, 600), false, WAIT).unwrap();
    assert_eq!(members, 2);

    for i in 0..50u32 {
        let payload = format!("web {i}");
        web.send(data(i, payload.as_bytes()));
        // Echo: the sender's own DATA comes back to it too.
        match web.recv() {
            Reply::Forwarded {
                from_uid,
                payload: p,
                ..
            } => assert_eq!((from_uid, p), (1, payload.clone().into_bytes())),
            other => panic!("{other:?}"),
        }
        match udp.recv(WAIT).unwrap() {
            Reply::Forwarded {
                from_uid,
                seq,
                payload: p,
                ..
            } => assert_eq!((from_uid, seq, p), (1, i, payload.into_bytes())),
            other => panic!("{other:?}"),
        }
    }
    for i in 0..50u32 {
        let payload = format!("udp {i}");
        let seq = udp.send_data(payload.as_bytes()).unwrap();
        match web.recv() {
            Reply::Forwarded {
                from_uid,
                seq: s,
                payload: p,
                ..
            } => assert_eq!((from_uid, s, p), (2, seq, payload.into_bytes())),
            other => panic!("{other:?}"),
        }
    }
    web.send(Packet::Ping(42));
    assert_eq!(web.recv(), Reply::Pong(42));
    let (stats, core) = service.web_stats().unwrap();
    assert_eq!((stats.sessions, core.members), (1, 2));
    assert!(stats.messages >= 51, "{stats:?}");

    assert_eq!(web.delete(), 204);
    assert_eq!(web.delete(), 404, "a second DELETE finds nothing");
    udp.leave(WAIT).unwrap();
    let (stats, core) = service.web_stats().unwrap();
    assert_eq!(
        (stats.sessions, stats.addresses, core.members, core.channels),
        (0, 0, 0, 0)
    );
}

#[test]
fn trickled_candidates_and_leave_over_the_data_channel() {
    let _serial = serial();
    let service = service();
    let http_addr = service.http_addr().unwrap();
    let mut web = WebPeer::post(http_addr, &APP.token("t", 5, 600), false, true).expect("201");
    let (uid, _, seen) = web.joined();
    assert_eq!((uid, seen), (5, web.local));
    // No echo: a lone member's DATA goes nowhere, PING still answers.
    web.send(data(1, b"alone"));
    web.send(Packet::Ping(9));
    assert_eq!(web.recv(), Reply::Pong(9));
    web.send(Packet::Leave);
    assert_eq!(web.recv(), Reply::Left);
    let (stats, core) = service.web_stats().unwrap();
    assert_eq!((stats.sessions, core.members), (0, 0));
    assert_eq!(web.delete(), 404, "LEAVE ended the session");
}

#[test]
fn hundreds_of_join_leave_cycles_return_everything_to_zero() {
    let _serial = serial();
    let service = service();
    let http_addr = service.http_addr().unwrap();
    let fds = open_fds();
    let cycles = 200;
    let t0 = Instant::now();
    for i in 0..cycles {
        let mut web =
            WebPeer::post(http_addr, &APP.token("churn", i, 600), false, false).expect("201");
        if i % 5 == 0 {
            // Every 5th goes all the way to JOINED; the others leave while connecting.
            web.joined();
        }
        assert_eq!(web.delete(), 204);
    }
    println!("{cycles} POST/DELETE cycles in {:?}", t0.elapsed());
    let (stats, core) = service.web_stats().unwrap();
    println!("after: {stats:?}, members {}", core.members);
    assert_eq!(
        (stats.sessions, stats.addresses, core.members, core.channels),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.admitted, u64::from(cycles));
    assert_eq!(stats.ended, u64::from(cycles));
    // The peers' sockets were dropped with them; the service holds no connection either.
    let deadline = Instant::now() + WAIT;
    while open_fds() > fds && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(open_fds() <= fds, "fds {} > {fds}", open_fds());
}

#[test]
fn a_silent_browser_is_removed_after_the_member_timeout() {
    let _serial = serial();
    let timeout = Duration::from_secs(2);
    let service = service_config(
        MediaConfig {
            limits: Limits {
                member_timeout: timeout,
                ..Limits::default()
            },
            ..MediaConfig::default()
        },
        1_000,
    );
    let http_addr = service.http_addr().unwrap();
    // One that connects and then goes silent (the tab died), one that never connects.
    let mut gone =
        WebPeer::post(http_addr, &APP.token("quiet", 1, 600), false, false).expect("201");
    gone.joined();
    let never = WebPeer::post(http_addr, &APP.token("quiet", 2, 600), false, false).expect("201");
    let t0 = Instant::now();
    drop(gone);
    let (stats, core) = service.web_stats().unwrap();
    assert_eq!((stats.sessions, core.members), (2, 2));
    let deadline = t0 + WAIT;
    let (stats, core) = loop {
        let (stats, core) = service.web_stats().unwrap();
        if stats.sessions == 0 || Instant::now() > deadline {
            break (stats, core);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("silent sessions removed after {:?}", t0.elapsed());
    assert_eq!(
        (stats.sessions, stats.addresses, core.members, core.channels),
        (0, 0, 0, 0)
    );
    assert!(core.timeouts >= 1, "{core:?}");
    assert!(t0.elapsed() >= timeout - Duration::from_millis(100));
    assert_eq!(never.delete(), 404, "the session ended with its member");
}

#[test]
fn a_udp_join_with_the_same_identity_takes_a_browsers_seat() {
    let _serial = serial();
    let service = service();
    let http_addr = service.http_addr().unwrap();
    let mut web = WebPeer::post(http_addr, &APP.token("seat", 7, 600), false, false).expect("201");
    web.joined();
    let mut udp = Client::connect(service.local_addrs()[0]).unwrap();
    let (uid, members, _) = udp.join(&APP.token("seat", 7, 600), false, WAIT).unwrap();
    assert_eq!((uid, members), (7, 1), "the UDP JOIN replaced the browser");
    let (stats, core) = service.web_stats().unwrap();
    assert_eq!((stats.sessions, core.members, core.replaced), (0, 1, 1));
    assert_eq!(web.delete(), 404);
}

#[test]
fn an_unspecified_webrtc_address_advertises_loopback() {
    let _serial = serial();
    // Bound to 0.0.0.0 with no public address: once a start-up error, now loopback (with a
    // warning), which serves this machine's browsers.
    let service = common::service(MediaConfig {
        web: Some(WebConfig {
            webrtc: Some("0.0.0.0:0".parse().unwrap()),
            ..WebConfig::on("127.0.0.1:0".parse().unwrap())
        }),
        ..MediaConfig::default()
    });
    let bound = service.webrtc_addr().unwrap();
    assert!(bound.ip().is_unspecified(), "{bound}");
    let (status, _, answer) = offer_with(service.http_addr().unwrap(), &APP.token("lo", 1, 600));
    assert_eq!(status, 201, "{answer}");
    let hosts: Vec<SocketAddr> = answer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"))
        .map(|l| {
            Candidate::from_sdp_string(l)
                .expect("the candidate parses")
                .addr()
        })
        .collect();
    assert_eq!(
        hosts,
        ["127.0.0.1".parse().unwrap()].map(|ip| SocketAddr::new(ip, bound.port()))
    );
    // And a peer on this machine connects to it.
    let mut web = WebPeer::post(
        service.http_addr().unwrap(),
        &APP.token("lo", 2, 600),
        false,
        false,
    )
    .expect("201");
    let (uid, _, seen) = web.joined();
    assert_eq!((uid, seen), (2, web.local));
}

#[test]
fn trickled_candidates_past_the_cap_are_refused_and_the_session_goes_on() {
    let _serial = serial();
    let service = service();
    let http_addr = service.http_addr().unwrap();
    let mut web = WebPeer::post(http_addr, &APP.token("cap", 1, 600), false, false).expect("201");
    web.joined();
    let patch = |ports: std::ops::Range<u16>| {
        let mut frag = String::from("a=ice-ufrag:x\r\na=mid:0\r\n");
        for port in ports {
            let c = Candidate::host(SocketAddr::from(([127, 0, 0, 1], port)), "udp").unwrap();
            frag.push_str(&format!("a={}\r\n", c.to_sdp_string()));
        }
        http(
            http_addr,
            "PATCH",
            &web.location,
            &[("Content-Type", "application/trickle-ice-sdpfrag")],
            frag.as_bytes(),
        )
    };
    let refused = |(status, head, body): Response, what: &str| {
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(header(&head, "content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "too_many_candidates", "{what}: {body}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains("32")),
            "{body}"
        );
    };
    let cap = u16::try_from(MAX_REMOTE_CANDIDATES).unwrap();
    assert_eq!(cap, 32, "docs/webrtc.md states the cap");
    // One PATCH over the cap adds none of its candidates: the cap's worth still fits after.
    refused(patch(20_000..20_000 + cap + 1), "one PATCH over the cap");
    assert_eq!(patch(20_000..20_000 + cap - 1).0, 204);
    assert_eq!(patch(30_000..30_001).0, 204, "the last one that fits");
    refused(patch(30_001..30_002), "one past the cap");
    // A PATCH without candidates still passes; the session still answers and leaves cleanly.
    let (status, _, body) = http(
        http_addr,
        "PATCH",
        &web.location,
        &[("Content-Type", "application/trickle-ice-sdpfrag")],
        b"a=end-of-candidates\r\n",
    );
    assert_eq!(status, 204, "{body}");
    web.send(Packet::Ping(3));
    assert_eq!(web.recv(), Reply::Pong(3));
    assert_eq!(web.delete(), 204);
    let (stats, core) = service.web_stats().unwrap();
    assert_eq!(
        (stats.sessions, stats.addresses, core.members, core.channels),
        (0, 0, 0, 0)
    );
}

#[test]
fn a_seat_taken_by_a_live_member_is_409_and_limits_are_503() {
    let _serial = serial();
    let service = service_with(2);
    let http_addr = service.http_addr().unwrap();
    let a = WebPeer::post(http_addr, &APP.token("s", 1, 600), false, false).expect("201");
    let (status, body) = WebPeer::post(http_addr, &APP.token("s", 1, 600), false, false)
        .err()
        .expect("refused");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("\"error\":\"seat_taken\""), "{body}");
    let _b = WebPeer::post(http_addr, &APP.token("s", 2, 600), false, false).expect("201");
    let (status, body) = WebPeer::post(http_addr, &APP.token("s", 3, 600), false, false)
        .err()
        .expect("refused");
    assert_eq!(status, 503, "{body}");
    assert_eq!(a.delete(), 204);
    WebPeer::post(http_addr, &APP.token("s", 3, 600), false, false)
        .expect("a freed session is reusable");
}

#[test]
fn hostile_requests_get_clear_statuses_and_leak_nothing() {
    let _serial = serial();
    let service = service();
    let http_addr = service.http_addr().unwrap();
    let good = APP.token("h", 1, 600);
    let bearer = format!("Bearer {good}");
    let sdp = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/sdp"),
    ];
    let fds = open_fds();

    let cases: Vec<(&str, u16, &str, Response)> = vec![
        (
            "malformed SDP",
            400,
            "malformed_sdp",
            http(
                http_addr,
                "POST",
                "/v1/whip",
                &sdp,
                b"v=0\r\nthis is not sdp\r\n",
            ),
        ),
        ("no data channel", 400, "no_data_channel", {
            let mut rtc = Rtc::new(Instant::now());
            let mut api = rtc.sdp_api();
            api.add_media(
                str0m::media::MediaKind::Audio,
                str0m::media::Direction::SendRecv,
                None,
                None,
                None,
            );
            let (offer, _) = api.apply().unwrap();
            http(
                http_addr,
                "POST",
                "/v1/whip",
                &sdp,
                offer.to_sdp_string().as_bytes(),
            )
        }),
        (
            "huge body",
            413,
            "body_too_large",
            http(http_addr, "POST", "/v1/whip", &sdp, &vec![b'a'; 65 * 1024]),
        ),
        (
            "no token",
            401,
            "unauthorized",
            http(
                http_addr,
                "POST",
                "/v1/whip",
                &[("Content-Type", "application/sdp")],
                b"v=0",
            ),
        ),
        (
            "forged token",
            401,
            "unauthorized",
            offer_with(
                http_addr,
                &App {
                    secret: b"wrong",
                    ..APP
                }
                .token("h", 1, 600),
            ),
        ),
        (
            "expired token",
            401,
            "unauthorized",
            offer_with(http_addr, &APP.token("h", 1, -60)),
        ),
        (
            "unknown app",
            403,
            "app_not_allowed",
            offer_with(http_addr, &App { id: "other", ..APP }.token("h", 1, 600)),
        ),
        (
            "unknown session, PATCH",
            404,
            "unknown_session",
            http(
                http_addr,
                "PATCH",
                "/v1/whip/0123456789abcdef0123456789abcdef",
                &[("Content-Type", "application/trickle-ice-sdpfrag")],
                b"a=end-of-candidates\r\n",
            ),
        ),
        (
            "unknown session, DELETE",
            404,
            "unknown_session",
            http(http_addr, "DELETE", "/v1/whip/nonsense", &[], b""),
        ),
        (
            "wrong content type",
            415,
            "unsupported_media_type",
            http(
                http_addr,
                "POST",
                "/v1/whip",
                &[
                    ("Authorization", bearer.as_str()),
                    ("Content-Type", "text/plain"),
                ],
                b"v=0",
            ),
        ),
    ];
    for (what, status, code, (got, head, body)) in &cases {
        assert_eq!(got, status, "{what}: {head}\n{body}");
        assert_eq!(
            header(head, "content-type"),
            Some("application/json"),
            "{what}"
        );
        assert_eq!(
            header(head, "access-control-allow-origin"),
            Some("*"),
            "{what}"
        );
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
        assert_eq!(v["error"], *code, "{what}: {body}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }

    // A malformed candidate in a PATCH to a live session: 400, the session stays.
    let peer = WebPeer::post(http_addr, &good, false, false).expect("201");
    let (status, _, body) = http(
        http_addr,
        "PATCH",
        &peer.location,
        &[("Content-Type", "application/trickle-ice-sdpfrag")],
        b"a=candidate:garbage\r\n",
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(peer.delete(), 204);
    drop(peer);

    // CORS preflight.
    let (status, head, _) = http(
        http_addr,
        "OPTIONS",
        "/v1/whip",
        &[("Origin", "http://x")],
        b"",
    );
    assert_eq!(status, 204);
    assert_eq!(
        header(&head, "access-control-allow-methods"),
        Some("POST, PATCH, DELETE")
    );
    assert_eq!(
        header(&head, "access-control-allow-headers"),
        Some("Authorization, Content-Type")
    );

    // One byte at a time, slower than the connection deadline allows: cut off, not served.
    let t0 = Instant::now();
    let mut slow = TcpStream::connect(http_addr).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    let request = b"POST /v1/whip HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789";
    let mut cut = false;
    for b in request {
        if slow.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if t0.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    let (status, _, _) = read_response(&mut slow);
    drop(slow);
    println!(
        "slow client: cut after {:?} (write failed: {cut}, status {status})",
        t0.elapsed()
    );
    assert_eq!(
        status, 0,
        "no reply to a request that never completed in time"
    );
    assert!(t0.elapsed() < Duration::from_secs(30));

    let (stats, core) = service.web_stats().unwrap();
    assert_eq!((stats.sessions, core.members), (0, 0));
    let deadline = Instant::now() + WAIT;
    while open_fds() > fds && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let listing: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|e| format!("{:?}", std::fs::read_link(e.path())))
        .collect();
    assert!(open_fds() <= fds, "fds {} > {fds}: {listing:?}", open_fds());
}

fn offer_with_channel() -> String {
    let mut rtc = Rtc::new(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_channel("cloudproxy".into());
    let (offer, _) = api.apply().unwrap();
    offer.to_sdp_string()
}
