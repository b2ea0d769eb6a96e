//! The SDK's data path allocates nothing and takes no lock per packet (issue 11: "the SDK's
//! data path without a lock or a copy per packet").
//!
//! A real in-process relay and media service (echo on) serve one client. The client, its
//! session task and the application loop run on one thread of their own (`sdk-data-path`, a
//! current-thread runtime); after a warm-up, 20,000 packets go application → session →
//! relay → media service → relay → session → application ([`Client::send`] and
//! [`Client::recv_into`] in lockstep), with the allocations of that thread counted.
//!
//! - Force UDP: the count must be 0.
//! - Force TCP (TURN over TLS): rustls's buffered API (tokio-rustls) allocates one buffer per
//!   TLS record it encrypts and one per record it decrypts; the SDK itself adds none. So the
//!   count must be at most 2 per packet, which one more allocation per packet anywhere on
//!   the path would exceed.
//!
//! The relay's and the media service's threads are not counted (the relay has its own test,
//! `no_alloc_driver`). Never asserts time; every wait is bounded.

use std::time::Duration;

use cloudproxy_sdk::{Client, CloudProxyType, SessionStats};
mod common;

use cloudproxy_testkit::alloc::{count_on_threads_named, serial, CountingAllocator, Window};
use common::{World, APP};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The thread the client runs on, and the only one counted.
const THREAD: &str = "sdk-data-path";
const WARM_UP: u32 = 2_000;
const PACKETS: u32 = 20_000;
/// Payload bytes (the throughput benchmarks use 200); a few sizes so buffers are
/// reused across lengths.
const SIZES: [usize; 4] = [200, 160, 1_200, 57];
/// How long one echo may take before the run gives up (loopback; generous for a loaded box).
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// `n` echoed packets in lockstep; the payloads that came back intact.
async fn echo(client: &mut Client, payload: &mut Vec<u8>, received: &mut Vec<u8>, n: u32) -> u32 {
    let mut intact = 0;
    for i in 0..n {
        let len = SIZES[i as usize % SIZES.len()];
        payload.clear();
        payload.resize(len, (i % 251) as u8);
        client.send(payload).await.expect("send");
        let from = tokio::time::timeout(ECHO_TIMEOUT, client.recv_into(received))
            .await
            .expect("an echo within the timeout")
            .expect("recv");
        if from.from_uid == 7 && received == payload {
            intact += 1;
        }
    }
    intact
}

/// Joins in `mode`, warms up, then counts the allocations of [`PACKETS`] echoes.
fn measure(mode: CloudProxyType) -> (u64, u32, SessionStats) {
    let w = World::start(25000..=25999);
    let mut config = w.config();
    if mode == CloudProxyType::TcpProxy {
        // No keepalive inside the window: each PING and PONG would be two more TLS records
        // (over UDP they cost nothing, and run as configured).
        config.keepalive = Duration::from_secs(3600);
        config.probe_after = Duration::from_secs(3600);
    }
    let run = std::thread::Builder::new()
        .name(THREAD.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (mut client, _events) = Client::new(config).unwrap();
                client.set_cloud_proxy(mode).unwrap();
                client
                    .join("room", 7, &APP.token("room", 7, 600))
                    .await
                    .unwrap();
                let mut payload = Vec::with_capacity(2048);
                let mut received = Vec::with_capacity(2048);
                let warm = echo(&mut client, &mut payload, &mut received, WARM_UP).await;
                assert_eq!(warm, WARM_UP, "every warm-up echo came back intact");
                let window = Window::threads_named(THREAD);
                let intact = echo(&mut client, &mut payload, &mut received, PACKETS).await;
                let allocations = window.finish();
                let stats = client.leave().await.unwrap();
                (allocations, intact, stats)
            })
        })
        .unwrap();
    let out = run.join().expect("the client thread");
    drop(w);
    out
}

/// Allocations per packet the TLS library makes on the client's thread: one record out, one in.
const TLS_RECORD_BUFFERS_PER_PACKET: u64 = 2;

fn check(mode: CloudProxyType, allowed_per_packet: u64) {
    let (allocations, intact, stats) = measure(mode);
    println!(
        "{mode}: {PACKETS} echoed packets, {intact} intact, {allocations} allocations on the \
         client's thread; stats {stats:?}"
    );
    assert_eq!(intact, PACKETS, "{mode}: every echo came back intact");
    assert!(
        stats.sent >= u64::from(WARM_UP + PACKETS)
            && stats.received >= u64::from(WARM_UP + PACKETS),
        "{mode}: the counters saw every packet: {stats:?}"
    );
    assert!(
        allocations <= allowed_per_packet * u64::from(PACKETS),
        "{mode}: {allocations} allocations for {PACKETS} packets, more than \
         {allowed_per_packet} per packet; rerun with NO_ALLOC_BACKTRACE=1 to see where"
    );
}

#[test]
fn force_udp_sends_and_receives_without_allocating() {
    let _serial = serial();
    check(CloudProxyType::UdpProxy, 0);
}

#[test]
fn force_tcp_allocates_only_the_tls_record_buffers() {
    let _serial = serial();
    check(CloudProxyType::TcpProxy, TLS_RECORD_BUFFERS_PER_PACKET);
}

/// The counter sees an allocation on the named thread, and none elsewhere.
#[test]
fn the_counter_counts_the_named_thread_only() {
    let _serial = serial();
    let (n, ()) = count_on_threads_named("alloc-probe", || {
        std::hint::black_box(Vec::<u8>::with_capacity(1)); // this thread: not counted
        std::thread::Builder::new()
            .name("alloc-probe".into())
            .spawn(|| {
                for _ in 0..3 {
                    std::hint::black_box(Vec::<u8>::with_capacity(1));
                }
            })
            .unwrap()
            .join()
            .unwrap();
    });
    // Three Vecs, plus what the thread's start and exit allocate on it.
    assert!((3..100).contains(&n), "got {n}");
}
