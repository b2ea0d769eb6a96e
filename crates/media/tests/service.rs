//! The media service over real loopback sockets.

use std::net::SocketAddr;
use std::time::Duration;

use cloudproxy_media::blocking::{Client, ClientError, Reply};
use cloudproxy_media::wire::ErrorCode;
use cloudproxy_media::{Limits, MediaConfig, MediaError, MediaService};
use cloudproxy_proto::AuthConfig;
use cloudproxy_testkit::apps::App;

mod common;

use common::{APP, APP2};

const WAIT: Duration = Duration::from_secs(5);

fn service() -> MediaService {
    let mut listen: Vec<SocketAddr> = vec!["127.0.0.1:0".parse().unwrap()];
    // A second listener on IPv6 loopback, where the machine has one.
    if std::net::UdpSocket::bind("[::1]:0").is_ok() {
        listen.push("[::1]:0".parse().unwrap());
    }
    MediaService::start(MediaConfig {
        listen,
        auth: AuthConfig {
            static_secret: Some(b"static".to_vec()),
            app_keys: vec![APP.key(), APP2.key()],
        },
        ..MediaConfig::default()
    })
    .expect("start the media service")
}

fn forwarded(c: &mut Client) -> (u32, u32, Vec<u8>) {
    match c.recv(WAIT).expect("a forwarded datagram") {
        Reply::Forwarded {
            from_uid,
            seq,
            payload,
            ..
        } => (from_uid, seq, payload),
        other => panic!("expected FORWARDED, got {other:?}"),
    }
}

#[test]
fn two_clients_exchange_data_and_see_their_source_addresses() {
    let svc = service();
    let v4 = svc.local_addrs()[0];
    let mut a = Client::connect(v4).unwrap();
    let mut b = Client::connect(v4).unwrap();
    let (uid, members, seen) = a.join(&APP.token("room", 1, 60), false, WAIT).unwrap();
    assert_eq!((uid, members, seen), (1, 1, a.local_addr().unwrap()));
    let (uid, members, seen) = b.join(&APP.token("room", 2, 60), false, WAIT).unwrap();
    assert_eq!((uid, members, seen), (2, 2, b.local_addr().unwrap()));

    for i in 0..20u8 {
        let seq = a.send_data(&[i; 100]).unwrap();
        assert_eq!(forwarded(&mut b), (1, seq, vec![i; 100]));
        let seq = b.send_data(b"pong-ish").unwrap();
        assert_eq!(forwarded(&mut a), (2, seq, b"pong-ish".to_vec()));
    }
    assert!(a.ping(WAIT).unwrap() < WAIT);

    // A member on the IPv6 listener shares the channel with IPv4 members.
    let mut c = match svc.local_addrs().get(1) {
        Some(&v6) => Client::connect(v6).unwrap(),
        None => {
            eprintln!("no IPv6 loopback here: the third member joins over IPv4");
            Client::connect(v4).unwrap()
        }
    };
    let (_, members, seen) = c.join(&APP.token("room", 3, 60), false, WAIT).unwrap();
    assert_eq!((members, seen), (3, c.local_addr().unwrap()));
    let seq = c.send_data(b"from v6").unwrap();
    assert_eq!(forwarded(&mut a), (3, seq, b"from v6".to_vec()));
    assert_eq!(forwarded(&mut b), (3, seq, b"from v6".to_vec()));

    b.leave(WAIT).unwrap();
    a.send_data(b"after leave").unwrap();
    forwarded(&mut c);
    assert!(matches!(
        b.recv(Duration::from_millis(200)),
        Err(ClientError::Timeout(_))
    ));
    svc.stop();
}

#[test]
fn echo_flag_sends_my_data_back() {
    let svc = service();
    let mut a = Client::connect(svc.local_addrs()[0]).unwrap();
    a.join(&APP.token("solo", 9, 60), true, WAIT).unwrap();
    let seq = a.send_data(b"echo me").unwrap();
    assert_eq!(forwarded(&mut a), (9, seq, b"echo me".to_vec()));
}

#[test]
fn bad_tokens_are_refused_with_the_right_app_id() {
    let svc = service();
    let addr = svc.local_addrs()[0];
    let cases = [
        (
            App {
                secret: b"forged",
                ..APP2
            }
            .token("room", 1, 60),
            "app2",
            "wrong signature",
        ),
        (APP.token("room", 1, -10), "app1", "expired"),
        (
            App {
                key_id: "k7",
                ..APP2
            }
            .token("room", 1, 60),
            "app2",
            "key id",
        ),
        (
            App {
                id: "app9",
                key_id: "k1",
                secret: b"static",
            }
            .token("room", 1, 60),
            "app9",
            "does not know",
        ),
    ];
    for (tok, app, text) in cases {
        let mut c = Client::connect(addr).unwrap();
        match c.join(&tok, false, WAIT) {
            Err(ClientError::Refused {
                code,
                app_id,
                message,
            }) => {
                assert_eq!(code, ErrorCode::UNAUTHORIZED, "{message}");
                assert_eq!(app_id, app, "{message}");
                assert!(message.contains(&format!("'{app}'")), "{message}");
                assert!(message.contains(text), "{message}");
            }
            other => panic!("{tok}: expected a refusal, got {other:?}"),
        }
        // Not joined: data gets 404.
        c.send_data(b"x").unwrap();
        match c.recv(WAIT).unwrap() {
            Reply::Error { code, .. } => assert_eq!(code, ErrorCode::NOT_JOINED),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn garbage_does_not_disturb_members() {
    let svc = service();
    let addr = svc.local_addrs()[0];
    let mut a = Client::connect(addr).unwrap();
    let mut b = Client::connect(addr).unwrap();
    a.join(&APP.token("g", 1, 60), false, WAIT).unwrap();
    b.join(&APP.token("g", 2, 60), false, WAIT).unwrap();
    let noise = Client::connect(addr).unwrap();
    let mut x: u32 = 0x1234_5678;
    for n in 0..500usize {
        // xorshift: deterministic junk of every length up to 300 bytes.
        let junk: Vec<u8> = (0..n % 300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        noise.send_raw(&junk).unwrap();
        a.send_raw(&junk[..junk.len().min(3)]).unwrap();
    }
    let seq = a.send_data(b"still fine").unwrap();
    loop {
        let (from, s, payload) = forwarded(&mut b);
        if s == seq {
            assert_eq!((from, payload.as_slice()), (1, &b"still fine"[..]));
            break;
        }
    }
}

#[test]
fn bind_errors_name_the_address() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = taken.local_addr().unwrap();
    let err = MediaService::start(MediaConfig {
        listen: vec![addr],
        ..MediaConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, MediaError::Bind { addr: a, .. } if a == addr));
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let none = MediaService::start(MediaConfig {
        listen: vec![],
        ..MediaConfig::default()
    });
    assert!(matches!(none, Err(MediaError::NoListeners)));
}

#[test]
fn silent_members_time_out_and_pinging_ones_stay() {
    let svc = common::service(MediaConfig {
        limits: Limits {
            member_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        ..MediaConfig::default()
    });
    let addr = svc.local_addrs()[0];
    let mut quiet = Client::connect(addr).unwrap();
    let mut busy = Client::connect(addr).unwrap();
    quiet.join(&APP.token("t", 1, 60), false, WAIT).unwrap();
    busy.join(&APP.token("t", 2, 60), false, WAIT).unwrap();
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(100));
        busy.ping(WAIT).unwrap();
    }
    // More than twice the timeout has passed: the quiet one is out, the pinging one is in.
    busy.ping(WAIT).unwrap();
    quiet.send_data(b"x").unwrap();
    match quiet.recv(WAIT).unwrap() {
        Reply::Error { code, .. } => assert_eq!(code, ErrorCode::NOT_JOINED),
        other => panic!("{other:?}"),
    }
    // Re-joining works, and the timer wakes again for the new member.
    let (_, members, _) = quiet.join(&APP.token("t", 1, 60), false, WAIT).unwrap();
    assert_eq!(members, 2);
}
