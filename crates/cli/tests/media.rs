//! `cloudproxy media` and `cloudproxy token` as processes: a token minted by the CLI joins the
//! media service directly and through `cloudproxy relay` (same credential at both), refusals
//! name the app, a newcomer gets a generated app, apps come from flags or the environment,
//! bad flags exit 2 naming the flag, and signals stop the service with status 0.
//!
//! Every child is killed on drop and every wait has a deadline.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use cloudproxy_media::blocking::{Client, ClientError, Reply};
use cloudproxy_media::wire::{self, ErrorCode, Packet};
use cloudproxy_proto::client::{self as turn, Attr, ALLOCATE, CHANNEL_BIND};
use cloudproxy_testkit::turn::{Conn, TurnClient};
use common::{
    cloudproxy_bin, run_bounded, start_cloudproxy, wait_for_listeners, ChildGuard, RelayOptions,
    TempDir,
};

const WAIT: Duration = Duration::from_secs(5);

/// `cloudproxy media` on an ephemeral port, and the address it printed.
fn start_media(args: &[&str], env: Option<&str>) -> (ChildGuard, SocketAddr) {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["media", "--listen", "127.0.0.1:0"]).args(args);
    cmd.env_remove("CLOUDPROXY_MEDIA_APPS");
    if let Some(apps) = env {
        cmd.env("CLOUDPROXY_MEDIA_APPS", apps);
    }
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    let (mut guard, lines) = ChildGuard::spawn("cloudproxy media", cmd).expect("spawn");
    match wait_for_listeners(&mut guard, &lines, &["media"]) {
        Ok(found) => (guard, found[0].1),
        Err(why) => panic!("media did not start: {why}\n{}", guard.output.tail(40)),
    }
}

/// `cloudproxy token ... --json`, parsed.
fn token_json(app: &str, key: &str, secret: &str, channel: &str, uid: u32) -> serde_json::Value {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args([
        "token", "--app-id", app, "--key-id", key, "--secret", secret,
    ])
    .args([
        "--channel",
        channel,
        "--uid",
        &uid.to_string(),
        "--ttl",
        "600",
        "--json",
    ]);
    let run = run_bounded("cloudproxy token", cmd, Duration::from_secs(10));
    assert!(run.success(), "token failed: {run:?}");
    let stdout: String = run
        .output
        .lines()
        .filter(|l| !l.starts_with("[stderr] "))
        .collect();
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn token(app: &str, key: &str, secret: &str, channel: &str, uid: u32) -> String {
    let v = token_json(app, key, secret, channel, uid);
    v["token"].as_str().expect("token").to_owned()
}

fn forwarded(c: &mut Client) -> (u32, Vec<u8>) {
    match c.recv(WAIT) {
        Ok(Reply::Forwarded {
            from_uid, payload, ..
        }) => (from_uid, payload),
        other => panic!("expected FORWARDED, got {other:?}"),
    }
}

fn refused(r: Result<(u32, u16, SocketAddr), ClientError>) -> (ErrorCode, String, String) {
    match r {
        Err(ClientError::Refused {
            code,
            app_id,
            message,
        }) => (code, app_id, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The media service's datagram inside a ChannelData message from the relay.
fn channel_payload(frame: &[u8]) -> &[u8] {
    assert!(
        frame.len() >= 4 && (0x40..0x50).contains(&frame[0]),
        "{frame:?}"
    );
    let len = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
    &frame[4..4 + len]
}

#[test]
fn a_cli_token_joins_directly_and_through_the_relay() {
    let (_media, media) = start_media(&["--app", "app1:k1:s3cret", "--app", "app2:k1:x"], None);
    let json = token_json("app1", "k1", "s3cret", "room", 1);
    assert_eq!(json["app_id"], "app1");
    assert_eq!(json["channel"], "room");
    assert_eq!(json["uid"], 1);
    assert_eq!(
        json["token"].as_str().unwrap(),
        format!(
            "{}#{}",
            json["username"].as_str().unwrap(),
            json["password"].as_str().unwrap()
        )
    );
    let mut direct = Client::connect(media).unwrap();
    let (uid, members, seen) = direct
        .join(json["token"].as_str().unwrap(), false, WAIT)
        .unwrap();
    assert_eq!((uid, members, seen), (1, 1, direct.local_addr().unwrap()));

    // The relay knows the same app key; its TURN credential is the token's username/password.
    let dir = TempDir::new("media-relay");
    let config = dir.0.join("relay.toml");
    std::fs::write(
        &config,
        "[[auth.app_keys]]\napp_id = \"app1\"\nkey_id = \"k1\"\nsecret = \"s3cret\"\n",
    )
    .unwrap();
    let relay = start_cloudproxy(&RelayOptions {
        extra_args: vec!["--config".into(), config.display().to_string()],
        relay_port_count: 10,
        ..RelayOptions::default()
    });
    let via = token_json("app1", "k1", "s3cret", "room", 2);
    let mut turn_client = TurnClient::with_secret(Conn::udp(relay.udp), "unused");
    turn_client.username = via["username"].as_str().unwrap().into();
    turn_client.password = via["password"].as_str().unwrap().into();
    let r = turn_client.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert!(
        r.success,
        "allocate with the token: {:?}\n{}",
        r.error,
        relay.logs()
    );
    let relayed = r.relayed[0];
    let r = turn_client.transact(
        CHANNEL_BIND,
        &[Attr::ChannelNumber(0x4000), Attr::PeerAddress(media)],
    );
    assert!(r.success, "channel bind: {:?}", r.error);

    // JOIN, answered with a CHALLENGE sent to the relayed address; the client reaches that
    // address through its allocation, so it can echo the cookie (return routability through
    // the relay).
    let via_token = via["token"].as_str().unwrap();
    let mut join = Vec::new();
    Packet::Join {
        echo: false,
        token: via_token,
        cookie: None,
    }
    .encode_vec(&mut join)
    .unwrap();
    turn_client
        .conn
        .send(&turn::channel_data(0x4000, &join, false));
    let frame = turn_client.conn.recv();
    let cookie = match wire::decode(channel_payload(&frame)) {
        Ok(Packet::Challenge(cookie)) => cookie,
        other => panic!("expected a CHALLENGE through the relay, got {other:?}"),
    };
    Packet::Join {
        echo: false,
        token: via_token,
        cookie: Some(cookie),
    }
    .encode_vec(&mut join)
    .unwrap();
    turn_client
        .conn
        .send(&turn::channel_data(0x4000, &join, false));
    let frame = turn_client.conn.recv();
    match wire::decode(channel_payload(&frame)) {
        Ok(Packet::Joined {
            uid: 2,
            members: 2,
            addr,
        }) => assert_eq!(addr, relayed),
        other => panic!("expected JOINED through the relay, got {other:?}"),
    }
    // Media flows both ways between the direct member and the one behind the relay.
    direct.send_data(b"to the proxied member").unwrap();
    let frame = turn_client.conn.recv();
    match wire::decode(channel_payload(&frame)) {
        Ok(Packet::Forwarded {
            from_uid: 1,
            payload,
            ..
        }) => assert_eq!(payload, b"to the proxied member"),
        other => panic!("expected FORWARDED through the relay, got {other:?}"),
    }
    let mut data = Vec::new();
    Packet::Data {
        seq: 1,
        sent_micros: 0,
        payload: b"from behind the relay",
    }
    .encode_vec(&mut data)
    .unwrap();
    turn_client
        .conn
        .send(&turn::channel_data(0x4000, &data, false));
    assert_eq!(
        forwarded(&mut direct),
        (2, b"from behind the relay".to_vec())
    );

    // A token signed with a wrong secret is refused at both, and the media service names the
    // app.
    let forged = token_json("app1", "k1", "guessed", "room", 3);
    let mut c = TurnClient::with_secret(Conn::udp(relay.udp), "unused");
    c.username = forged["username"].as_str().unwrap().into();
    c.password = forged["password"].as_str().unwrap().into();
    let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(r.error.as_ref().map(|e| e.0), Some(401));
    let mut c = Client::connect(media).unwrap();
    let (code, app, message) = refused(c.join(forged["token"].as_str().unwrap(), false, WAIT));
    assert_eq!(
        (code, app.as_str()),
        (ErrorCode::UNAUTHORIZED, "app1"),
        "{message}"
    );
    assert!(message.contains("token for app 'app1'"), "{message}");
    let other = token("app2", "k9", "x", "room", 3);
    let (_, app, message) = refused(c.join(&other, false, WAIT));
    assert_eq!(app, "app2", "{message}");
}

#[test]
fn without_apps_a_demo_app_is_generated_and_printed() {
    let (media_proc, media) = start_media(&[], None);
    let start = Instant::now();
    let secret = loop {
        let text = media_proc.output.text();
        if let Some(rest) = text.split("--secret ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            start.elapsed() < WAIT,
            "no generated secret printed:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(secret.len(), 36, "{secret}");
    let mut c = Client::connect(media).unwrap();
    c.join(&token("demo", "k1", &secret, "test", 1), false, WAIT)
        .unwrap();
}

#[test]
fn apps_from_the_environment() {
    let (_m, media) = start_media(&[], Some("a1:k1:one,a2:k2:two"));
    let mut c = Client::connect(media).unwrap();
    c.join(&token("a1", "k1", "one", "c", 1), true, WAIT)
        .unwrap();
    c.join(&token("a2", "k2", "two", "c", 1), true, WAIT)
        .unwrap();
    let (_, app, _) = refused(c.join(&token("demo", "k1", "x", "c", 1), false, WAIT));
    assert_eq!(app, "demo");
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, needle) in [
        (&["media", "--listen", "nowhere"][..], "--listen"),
        (&["media", "--app", "nocolons"], "--app"),
        (&["media", "--app", "a:k:"], "--app"),
        (&["media", "--member-timeout", "0"], "--member-timeout"),
        (&["media", "--max-channels", "x"], "--max-channels"),
        (
            &[
                "token",
                "--app-id",
                "a b",
                "--secret",
                "s",
                "--channel",
                "c",
                "--uid",
                "1",
                "--ttl",
                "5",
            ],
            "--app-id",
        ),
        (
            &[
                "token",
                "--app-id",
                "a",
                "--secret",
                "s",
                "--channel",
                "c",
                "--uid",
                "x",
                "--ttl",
                "5",
            ],
            "--uid",
        ),
        (
            &[
                "token",
                "--app-id",
                "a",
                "--secret",
                "s",
                "--channel",
                "c",
                "--uid",
                "1",
                "--ttl",
                "0",
            ],
            "--ttl",
        ),
    ] {
        let mut cmd = Command::new(cloudproxy_bin());
        cmd.args(args)
            .env_remove("CLOUDPROXY_MEDIA_APPS")
            .env_remove("CLOUDPROXY_APP_SECRET")
            .env_remove("CLOUDPROXY_SECRET");
        let run = run_bounded("cloudproxy", cmd, Duration::from_secs(10));
        assert_eq!(
            run.status.and_then(|s| s.code()),
            Some(2),
            "{args:?}: {run:?}"
        );
        assert!(
            run.output.contains(needle),
            "{args:?} should name {needle}: {}",
            run.output
        );
        assert!(!run.output.contains("panicked"), "{}", run.output);
    }
    // A port in use: a runtime error naming the address.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["media", "--app", "a:k:s", "--listen", &addr]);
    let run = run_bounded("cloudproxy media", cmd, Duration::from_secs(10));
    assert_eq!(run.status.and_then(|s| s.code()), Some(1), "{run:?}");
    assert!(run.output.contains(&addr), "{}", run.output);
}

#[test]
fn sigterm_and_sigint_stop_with_status_0() {
    for signal in ["TERM", "INT"] {
        let (mut media_proc, _) = start_media(&["--app", "a:k:s"], None);
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(media_proc.pid().to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success());
        let start = Instant::now();
        let exit = loop {
            if let Some(s) = media_proc.try_wait() {
                break s;
            }
            assert!(start.elapsed() < WAIT, "still running after SIG{signal}");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            exit.success(),
            "SIG{signal}: {exit}\n{}",
            media_proc.output.tail(20)
        );
    }
}
