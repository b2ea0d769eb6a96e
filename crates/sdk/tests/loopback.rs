//! The SDK against a real relay and a real media service on loopback, in every mode.
//! (The firewall lab, which blocks paths for real, is in crates/lab/tests.)

use std::time::Duration;

use cloudproxy_media::driver::{MediaConfig, MediaService};
use cloudproxy_proto::policy::{PeerPolicy, PeerRule};
use cloudproxy_proto::ServerConfig;
use cloudproxy_relay::{Relay, RelayConfig};
use cloudproxy_sdk::{
    Client, CloudProxyType, ConnectionState, Event, PathFailure, PathKind, SdkError, StateReason,
};
use cloudproxy_testkit::apps::App;

mod common;

use common::{any, World, APP};

fn drain(events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

async fn echo_roundtrip(client: &mut Client, n: usize) {
    for i in 0..n {
        let payload = format!("packet {i}");
        client.send(payload.as_bytes()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(3), client.recv())
            .await
            .expect("echo within 3 s")
            .unwrap();
        assert_eq!(got.payload, payload.as_bytes());
    }
}

#[tokio::test]
async fn every_mode_joins_over_the_right_path_and_exchanges_media() {
    let w = World::start(24000..=24999);
    let relay = w.relay.local_addrs().clone();
    for (mode, path, server) in [
        (CloudProxyType::None, PathKind::Direct, w.media_addr()),
        (CloudProxyType::UdpProxy, PathKind::TurnUdp, relay.udp[0]),
        (CloudProxyType::TcpProxy, PathKind::TurnTls, relay.tls[0]),
    ] {
        let (mut client, mut events) = Client::new(w.config()).unwrap();
        client.set_cloud_proxy(mode).unwrap();
        let info = client
            .join("room", 7, &APP.token("room", 7, 600))
            .await
            .unwrap();
        assert_eq!((info.path, info.server), (path, server), "{mode}");
        if path.is_proxy() {
            // The media service saw the relay's relayed address, not the client's.
            assert_eq!(info.seen_as.ip().to_string(), "127.0.0.1");
            assert!((24000..=24999).contains(&info.seen_as.port()), "{info:?}");
        }
        echo_roundtrip(&mut client, 20).await;
        let ev = drain(&mut events);
        assert!(
            ev.contains(&Event::IsUsingCloudProxy {
                using: path.is_proxy()
            }),
            "{ev:?}"
        );
        let connecting = Event::ConnectionStateChanged {
            state: ConnectionState::Connecting,
            reason: if mode.is_forced() {
                StateReason::SettingProxyServer
            } else {
                StateReason::Joining
            },
        };
        assert_eq!(ev[0], connecting);
        assert_eq!(
            ev.iter().any(|e| matches!(e, Event::ProxyConnected { .. })),
            mode.is_forced()
        );
        let stats = client.leave().await.unwrap();
        assert_eq!(stats.sent, 20);
        assert_eq!(stats.received, 20);
        // Changing modes needs None first, and only outside a channel.
        if mode.is_forced() {
            let other = if mode == CloudProxyType::UdpProxy {
                CloudProxyType::TcpProxy
            } else {
                CloudProxyType::UdpProxy
            };
            assert_eq!(
                client.set_cloud_proxy(other),
                Err(SdkError::SetNoneFirst { current: mode })
            );
            client.stop_proxy().unwrap();
            client.set_cloud_proxy(other).unwrap();
        }
    }
}

#[tokio::test]
async fn failures_list_every_path_and_say_whether_to_retry_elsewhere() {
    let w = World::start(24000..=24999);
    // Nothing listens on these.
    let dead_udp = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let dead_tcp = {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let mut config = w.config();
    config.proxies.tls = vec![dead_tcp, w.relay.local_addrs().tls[0]];
    config.attempt_timeout = Duration::from_secs(2);
    let (mut client, _events) = Client::new(config.clone()).unwrap();
    client.set_cloud_proxy(CloudProxyType::TcpProxy).unwrap();
    // The first proxy refuses; the second works.
    let info = client
        .join("room", 9, &APP.token("room", 9, 600))
        .await
        .unwrap();
    assert_eq!(info.server, w.relay.local_addrs().tls[0]);
    client.leave().await.unwrap();

    // A token for another app: refused by the relay with 401 naming nothing secret.
    let forged = App {
        secret: b"wrong-secret",
        ..APP
    }
    .token_until("room", 9, u64::MAX / 2);
    let (mut client, _events) = Client::new(config.clone()).unwrap();
    client.set_cloud_proxy(CloudProxyType::TcpProxy).unwrap();
    let Err(SdkError::Join(e)) = client.join("room", 9, &forged).await else {
        panic!("must fail")
    };
    let last = e.attempts.last().unwrap();
    assert!(
        matches!(&last.failure, PathFailure::Unauthorized { reason } if reason.contains("app 'app1'")),
        "{e}"
    );
    assert!(matches!(e.attempts[0].failure, PathFailure::Refused), "{e}");

    // Force UDP to a dead port times out, bounded.
    config.proxies.udp = vec![dead_udp];
    config.join_timeout = Duration::from_secs(3);
    let (mut client, _events) = Client::new(config).unwrap();
    client.set_cloud_proxy(CloudProxyType::UdpProxy).unwrap();
    let started = std::time::Instant::now();
    let Err(SdkError::Join(e)) = client.join("room", 9, &APP.token("room", 9, 600)).await else {
        panic!("must fail")
    };
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            e.attempts[0].failure,
            PathFailure::Refused | PathFailure::Timeout
        ),
        "{e}"
    );
    assert!(e.retry_elsewhere());
}

#[tokio::test]
async fn a_token_for_another_channel_is_refused_before_any_packet() {
    let w = World::start(24000..=24999);
    let (mut client, _events) = Client::new(w.config()).unwrap();
    let r = client
        .join("room", 1, &APP.token("other-room", 1, 600))
        .await;
    assert!(matches!(r, Err(SdkError::BadToken(_))), "{r:?}");
}

#[tokio::test]
async fn a_dropped_path_reconnects_through_the_next_proxy() {
    let w = World::start(24000..=24999);
    let spare = Relay::start(RelayConfig {
        server: ServerConfig {
            auth: APP.auth(),
            peer_policy: PeerPolicy::new(["127.0.0.0/8".parse::<PeerRule>().unwrap()]),
            relay_ports: 25000..=25999,
            ..ServerConfig::default()
        },
        udp: vec![any()],
        tcp: vec![],
        tls: vec![],
        metrics: None,
        shards: 1,
        ..RelayConfig::default()
    })
    .unwrap();
    let mut config = w.config();
    config.proxies.udp = vec![w.relay.local_addrs().udp[0], spare.local_addrs().udp[0]];
    config.keepalive = Duration::from_millis(200);
    config.path_timeout = Duration::from_millis(800);
    let (mut client, mut events) = Client::new(config).unwrap();
    client.set_cloud_proxy(CloudProxyType::UdpProxy).unwrap();
    let info = client
        .join("room", 11, &APP.token("room", 11, 600))
        .await
        .unwrap();
    assert_eq!(info.server, w.relay.local_addrs().udp[0]);
    echo_roundtrip(&mut client, 3).await;
    drain(&mut events);
    // The first relay goes away; the session notices and moves to the spare.
    let World { relay, media } = w;
    relay.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let seen = events_until(
        &mut events,
        ConnectionState::Connected,
        StateReason::JoinSuccess,
        deadline,
        "reconnected within 10 s",
    )
    .await;
    assert!(
        seen.contains(&Event::ConnectionStateChanged {
            state: ConnectionState::Reconnecting,
            reason: StateReason::Interrupted,
        }),
        "{seen:?}"
    );
    echo_roundtrip(&mut client, 3).await;
    let stats = client.leave().await.unwrap();
    assert_eq!(stats.reconnects, 1);
    drop(media);
}

/// The events until the session reports `state` for `reason` (that one last), waiting until
/// `deadline` at most; `what` names the wait when it times out.
async fn events_until(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    state: ConnectionState,
    reason: StateReason,
    deadline: tokio::time::Instant,
    what: &str,
) -> Vec<Event> {
    let target = Event::ConnectionStateChanged { state, reason };
    let mut seen = Vec::new();
    while seen.last() != Some(&target) {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect(what)
            .unwrap();
        seen.push(e);
    }
    seen
}

/// The relay's live allocations, as `cloudproxy_allocations` reports them.
fn allocations(relay: &Relay) -> i64 {
    relay.metrics().allocations.get()
}

/// Waits up to `bound` for the relay to hold `want` allocations; how long it took.
async fn settles_at(relay: &Relay, want: i64, bound: Duration, what: &str) -> Duration {
    let started = std::time::Instant::now();
    while allocations(relay) != want {
        assert!(
            started.elapsed() < bound,
            "{what}: {} allocation(s) after {bound:?}, want {want}",
            allocations(relay)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn leave_tells_the_media_service_and_releases_the_allocation() {
    let w = World::start(24000..=24999);
    for (n, mode) in [CloudProxyType::UdpProxy, CloudProxyType::TcpProxy]
        .into_iter()
        .enumerate()
    {
        let channel = format!("leave-{n}");
        let (mut client, _events) = Client::new(w.config()).unwrap();
        client.set_cloud_proxy(mode).unwrap();
        client
            .join(&channel, 1, &APP.token(&channel, 1, 600))
            .await
            .unwrap();
        echo_roundtrip(&mut client, 3).await;
        assert_eq!(allocations(&w.relay), 1, "{mode}");
        client.leave().await.unwrap();
        // Over UDP leave() waited for the Refresh's answer; over TLS the relay sees the close.
        let took = settles_at(&w.relay, 0, Duration::from_secs(1), &format!("{mode}")).await;
        eprintln!("{mode}: allocation gone {took:?} after leave() returned");
        // The media service forgot the member: the next one is alone in the channel.
        let (mut next, _events) = Client::new(w.config()).unwrap();
        next.set_cloud_proxy(mode).unwrap();
        let info = next
            .join(&channel, 2, &APP.token(&channel, 2, 600))
            .await
            .unwrap();
        assert_eq!(
            info.members, 1,
            "{mode}: the first member is still in the channel"
        );
        next.leave().await.unwrap();
        settles_at(&w.relay, 0, Duration::from_secs(1), &format!("{mode}")).await;
    }
}

#[tokio::test]
async fn a_dropped_client_releases_its_allocation() {
    let w = World::start(24000..=24999);
    for mode in [CloudProxyType::UdpProxy, CloudProxyType::TcpProxy] {
        let (mut client, _events) = Client::new(w.config()).unwrap();
        client.set_cloud_proxy(mode).unwrap();
        client
            .join("dropped", 3, &APP.token("dropped", 3, 600))
            .await
            .unwrap();
        assert_eq!(allocations(&w.relay), 1, "{mode}");
        drop(client);
        settles_at(
            &w.relay,
            0,
            Duration::from_secs(2),
            &format!("{mode} dropped"),
        )
        .await;
    }
}

/// Two candidates raced with no stagger: the loser has usually allocated by the time the
/// winner joins, and must delete its allocation (UDP) or close its connection (TLS).
#[tokio::test]
async fn losing_race_candidates_release_their_allocations() {
    let w = World::start(24000..=24999);
    for mode in [CloudProxyType::UdpProxy, CloudProxyType::TcpProxy] {
        let mut config = w.config();
        let a = w.relay.local_addrs();
        // The same relay twice: two candidates, two allocations from two sockets.
        config.proxies.udp = vec![a.udp[0], a.udp[0]];
        config.proxies.tls = vec![a.tls[0], a.tls[0]];
        config.stagger = Duration::ZERO;
        let mut losers_that_allocated = 0;
        for i in 0..10 {
            let created = w.relay.metrics().allocations_created.get();
            let (mut client, _events) = Client::new(config.clone()).unwrap();
            client.set_cloud_proxy(mode).unwrap();
            client
                .join("race", 4, &APP.token("race", 4, 600))
                .await
                .unwrap();
            // Only the winner's allocation stays while the session goes on.
            settles_at(
                &w.relay,
                1,
                Duration::from_secs(2),
                &format!("{mode} race {i}"),
            )
            .await;
            echo_roundtrip(&mut client, 2).await;
            assert_eq!(allocations(&w.relay), 1, "{mode} race {i}");
            if w.relay.metrics().allocations_created.get() - created == 2 {
                losers_that_allocated += 1;
            }
            client.leave().await.unwrap();
            settles_at(
                &w.relay,
                0,
                Duration::from_secs(1),
                &format!("{mode} race {i}"),
            )
            .await;
        }
        eprintln!("{mode}: the loser had allocated in {losers_that_allocated} of 10 races");
        assert!(
            losers_that_allocated > 0,
            "{mode}: no loser ever allocated; the test proves nothing"
        );
    }
}

/// The media service restarts under a Force UDP session: the path falls silent, the session
/// reconnects, and the allocation it replaced is deleted rather than left to expire.
#[tokio::test]
async fn a_reconnect_releases_the_allocation_it_replaces() {
    let w = World::start(24000..=24999);
    let media_addr = w.media_addr();
    let mut config = w.config();
    config.keepalive = Duration::from_millis(200);
    config.path_timeout = Duration::from_millis(800);
    let (mut client, mut events) = Client::new(config).unwrap();
    client.set_cloud_proxy(CloudProxyType::UdpProxy).unwrap();
    client
        .join("again", 5, &APP.token("again", 5, 600))
        .await
        .unwrap();
    echo_roundtrip(&mut client, 2).await;
    assert_eq!(allocations(&w.relay), 1);
    let World { relay, media } = w;
    media.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    events_until(
        &mut events,
        ConnectionState::Reconnecting,
        StateReason::Interrupted,
        deadline,
        "reconnecting within 10 s",
    )
    .await;
    // The service is back on its address; the session joins it through a new allocation.
    let _media = MediaService::start(MediaConfig {
        listen: vec![media_addr],
        auth: APP.auth(),
        ..MediaConfig::default()
    })
    .unwrap();
    events_until(
        &mut events,
        ConnectionState::Connected,
        StateReason::JoinSuccess,
        deadline,
        "reconnected within 10 s",
    )
    .await;
    echo_roundtrip(&mut client, 2).await;
    assert!(relay.metrics().allocations_created.get() >= 2);
    // The old allocation (600 s lifetime) is gone; only the new one is held.
    settles_at(&relay, 1, Duration::from_secs(3), "after the reconnect").await;
    assert_eq!(client.leave().await.unwrap().reconnects, 1);
    settles_at(&relay, 0, Duration::from_secs(1), "after leave").await;
}

/// The runtime goes away under a Force UDP session (a program returning from `main` without
/// leaving): the session task is cancelled, and its pipe's `Drop` still sends the Refresh with
/// LIFETIME 0 synchronously, so the relay lets go at once instead of after 600 s.
#[test]
fn a_runtime_shutting_down_under_a_session_still_releases_its_allocation() {
    let w = World::start(24000..=24999);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let (mut client, _events) = Client::new(w.config()).unwrap();
        client.set_cloud_proxy(CloudProxyType::UdpProxy).unwrap();
        client
            .join("shutdown", 6, &APP.token("shutdown", 6, 600))
            .await
            .unwrap();
        client
    });
    assert_eq!(allocations(&w.relay), 1);
    drop(rt);
    let started = std::time::Instant::now();
    while allocations(&w.relay) != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the allocation outlived the runtime"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(client);
}

/// The same token joins from another port and takes the session's seat (one member per
/// channel and uid). The session's next DATA gets 404; it joins again over the same path,
/// answering the media service's CHALLENGE, and its media flows again: no reconnect.
#[tokio::test]
async fn a_session_whose_seat_is_taken_joins_again_through_the_challenge() {
    use cloudproxy_media::blocking::{Client as MediaClient, Reply};
    use cloudproxy_media::wire::ErrorCode;
    let w = World::start(24000..=24999);
    for (mode, uid) in [(CloudProxyType::None, 6), (CloudProxyType::UdpProxy, 7)] {
        let (mut client, _events) = Client::new(w.config()).unwrap();
        client.set_cloud_proxy(mode).unwrap();
        let tok = APP.token("seat", uid, 600);
        client.join("seat", uid, &tok).await.unwrap();
        echo_roundtrip(&mut client, 2).await;

        let mut thief = MediaClient::connect(w.media_addr()).unwrap();
        thief.join(&tok, false, Duration::from_secs(5)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut sent = 0;
        loop {
            client
                .send(format!("after {sent}").as_bytes())
                .await
                .unwrap();
            sent += 1;
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), client.recv()).await
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{mode}: no echo within 5 s after the seat was taken"
            );
        }
        eprintln!("{mode}: media echoed again after {sent} packet(s) once the seat was taken");
        // The seat is the session's again: the thief's DATA gets 404.
        thief.send_data(b"x").unwrap();
        loop {
            match thief.recv(Duration::from_secs(5)).unwrap() {
                Reply::Forwarded { .. } => continue,
                Reply::Error { code, .. } => {
                    assert_eq!(code, ErrorCode::NOT_JOINED, "{mode}");
                    break;
                }
                other => panic!("{mode}: {other:?}"),
            }
        }
        assert_eq!(client.stats().reconnects, 0, "{mode}");
        client.leave().await.unwrap();
    }
}
