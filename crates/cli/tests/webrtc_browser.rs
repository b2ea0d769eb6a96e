//! The media service's WebRTC endpoint in a real browser: Debian's Chromium, headless, driven
//! over the DevTools protocol (`common::cdp`), against `cloudproxy up`. A minimal page (plain
//! `RTCPeerConnection`, no library) posts its offer to `up`'s WHIP endpoint and exchanges
//! data-channel messages with `cloudproxy join` in the same channel:
//!
//! 1. with its own candidates (loopback allowed), JOINED names the browser's own address;
//! 2. with `iceTransportPolicy: "relay"` through `up`'s TURN relay (UDP), JOINED names the
//!    relay candidate's address: the service reached the browser only through the relay.
//!
//! Then two pages with fake camera and microphone see each other's video through the SFU
//! (`inbound-rtp` `framesDecoded` >= 10 on both).
//!
//! Without Chromium the tests are skipped with a notice, unless `CI` is set: then they fail
//! (`.ci/run` installs `chromium`).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cdp::{Browser, Page};
use common::control::Credential;
use common::up::{start_up, Up};
use common::web::browser_or_skip;
use common::{cloudproxy_bin, join_summary, run_bounded, BoundedRun, TempDir};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);

/// The page's side: `start(config, whip, token, media)` connects; `send(seq, text)` sends
/// DATA; `window.t` holds what happened.
const PAGE: &str = r#"
window.t = { joined: null, error: null, got: [], states: [], offer: null };
window.start = (config, whip, token, media) => (async () => {
  const pc = new RTCPeerConnection(config);
  window.pc = pc;
  pc.oniceconnectionstatechange = () => t.states.push(pc.iceConnectionState);
  const dc = pc.createDataChannel('cloudproxy');
  dc.binaryType = 'arraybuffer';
  window.dc = dc;
  dc.onmessage = (e) => {
    const b = new Uint8Array(e.data);
    const v = new DataView(e.data);
    if (b[0] === 0x02) {
      const fam = b[7];
      let ip, port;
      if (fam === 4) { ip = b.slice(8, 12).join('.'); port = v.getUint16(12); }
      else { ip = 'v6'; port = v.getUint16(24); }
      t.joined = { uid: v.getUint32(1), members: v.getUint16(5), addr: ip + ':' + port };
    } else if (b[0] === 0x05) {
      t.got.push({ from: v.getUint32(1), seq: v.getUint32(5), len: b.length - 17,
                   all5a: b.slice(17).every((x) => x === 0x5a) });
    } else if (b[0] === 0x03) {
      t.error = 'ERROR ' + v.getUint16(1);
    }
  };
  if (media) {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendrecv' });
  }
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
    setTimeout(done, 10000);
  });
  t.offer = pc.localDescription.sdp;
  const res = await fetch(whip, {
    method: 'POST',
    headers: { 'Authorization': 'Bearer ' + token, 'Content-Type': 'application/sdp' },
    body: pc.localDescription.sdp,
  });
  const body = await res.text();
  if (res.status !== 201) { t.error = res.status + ' ' + body; return; }
  t.location = res.headers.get('Location');
  await pc.setRemoteDescription({ type: 'answer', sdp: body });
})().catch((e) => { t.error = String(e); });
window.send = (seq, n) => {
  const b = new Uint8Array(13 + n);
  const v = new DataView(b.buffer);
  b[0] = 0x04; v.setUint32(1, seq); v.setBigUint64(5, 0n); b.fill(0x5a, 13);
  dc.send(b);
};
window.framesDecoded = async () => {
  let n = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0;
  });
  return n;
};
"#;

fn whip_url(up: &Up) -> String {
    format!("{}/v1/whip", up.media_http)
}

/// A blank page served from `http://127.0.0.1:PORT/`: a secure context (getUserMedia needs
/// one; about:blank is not), on a thread that lives as long as the test process.
fn blank_page_url() -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let body = "<!doctype html><title>webrtc test</title>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// A new page on a blank secure-context document, with [`PAGE`] loaded.
fn new_page(browser: &mut Browser, url: &str) -> Page {
    let page = browser.page("en");
    browser.goto(&page, url);
    browser.eval(&page, PAGE);
    page
}

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Polls `expr` in `page` until it is truthy (or the page reports an error).
fn wait_for(browser: &mut Browser, page: &Page, expr: &str, what: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = browser.eval(page, expr);
        if v.as_bool() != Some(false) && !v.is_null() {
            return v;
        }
        let t = browser.eval(page, "JSON.stringify({error: t.error, states: t.states})");
        let state: Value = serde_json::from_str(t.as_str().unwrap_or("{}")).unwrap();
        assert!(state["error"].is_null(), "{what}: {state}");
        assert!(Instant::now() < deadline, "{what}: timed out ({state})");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn browser(extra: &[&str]) -> Option<Browser> {
    browser_or_skip("webrtc_browser").map(|binary| Browser::launch_with(&binary, extra))
}

/// `cloudproxy join` direct to `up`'s media service, sending 50 DATA and counting what the
/// other members send.
fn join(up: &Up, app: &Credential, channel: &str, uid: u32) -> BoundedRun {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args([
        "join",
        "--media",
        &up.media.to_string(),
        "--app-id",
        &app.app_id,
    ])
    .args(["--channel", channel, "--uid", &uid.to_string()])
    .args(["--token", &app.token(channel, uid), "--mode", "auto"])
    .args([
        "--send",
        "50",
        "--interval",
        "100ms",
        "--size",
        "64",
        "--no-echo",
    ])
    .args(["--join-timeout", "20s"]);
    run_bounded("cloudproxy join", cmd, PATIENCE)
}

/// What one page's run showed.
struct Exchanged {
    /// The address in JOINED: where the service's ICE agent reached the page.
    joined: String,
    /// The page's offer.
    offer: String,
}

/// The browser and `cloudproxy join` exchange 50 messages each way; then the page leaves
/// with DELETE.
fn exchange(
    browser: &mut Browser,
    url: &str,
    up: &Up,
    app: &Credential,
    channel: &str,
    config: &str,
) -> Exchanged {
    let page = new_page(browser, url);
    let whip = whip_url(up);
    let t0 = Instant::now();
    browser.eval(
        &page,
        &format!(
            "start({config}, {}, {}, false), true",
            js(&whip),
            js(&app.token(channel, 1))
        ),
    );
    let joined = wait_for(browser, &page, "t.joined", "JOINED");
    println!("{channel}: page JOINED in {:?}: {joined}", t0.elapsed());
    assert_eq!(joined["uid"], 1);

    // `cloudproxy join` in the same channel, in the background; once its first DATA reached
    // the page, the page sends its 50.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| tx.send(join(up, app, channel, 2)).unwrap());
        wait_for(
            browser,
            &page,
            "t.got.length > 0",
            "the first DATA of cloudproxy join",
        );
        // Sequence numbers from 0, as the SDK counts them (it reports gaps as lost).
        for seq in 0..50 {
            browser.eval(&page, &format!("send({seq}, 64), true"));
            std::thread::sleep(Duration::from_millis(20));
        }
        let run = rx.recv().unwrap();
        assert!(run.success(), "cloudproxy join:\n{}", run.output);
        let summary = join_summary(&run.output);
        println!("{channel}: cloudproxy join summary: {summary}");
        assert_eq!(summary["sent"], 50);
        assert_eq!(
            summary["from_others"], 50,
            "the page's 50 reached cloudproxy join"
        );
        assert_eq!(summary["lost"], 0, "none missing in the page's sequence");
    });
    let got = browser.eval(
        &page,
        "JSON.stringify([t.got.length, t.got.every(g => g.from === 2 && g.len === 64 && g.all5a), \
         t.got.map(g => g.seq)])",
    );
    let got: Value = serde_json::from_str(got.as_str().unwrap()).unwrap();
    assert_eq!(got[0], 50, "cloudproxy join's 50 reached the page: {got}");
    assert_eq!(got[1], true, "from uid 2, 64 bytes of 0x5a each: {got}");
    let seqs: Vec<u64> = got[2]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");

    // DELETE leaves (a second one finds nothing).
    browser.eval(
        &page,
        &format!(
            "(async () => {{ const u = new URL(t.location, {}).href; \
             t.deleted = [(await fetch(u, {{method: 'DELETE'}})).status, \
                          (await fetch(u, {{method: 'DELETE'}})).status]; }})(), true",
            js(&whip)
        ),
    );
    let deleted = wait_for(browser, &page, "t.deleted", "DELETE");
    assert_eq!(deleted, serde_json::json!([204, 404]));
    let offer = browser.eval(&page, "t.offer");
    Exchanged {
        joined: joined["addr"].as_str().unwrap().to_owned(),
        offer: offer.as_str().unwrap().to_owned(),
    }
}

/// `ip:port` of every candidate of `kind` (`host`, `relay`...) in `sdp`.
fn candidates(sdp: &str, kind: &str) -> Vec<String> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(7) == Some(&kind)).then(|| format!("{}:{}", f[4], f[5]))
        })
        .collect()
}

#[test]
fn a_page_and_cloudproxy_join_exchange_messages_directly_and_through_the_relay() {
    let Some(mut browser) = browser(&["--allow-loopback-in-peer-connection"]) else {
        return;
    };
    let dir = TempDir::new("webrtc-browser");
    let up = start_up(&dir.0.join("data"), PATIENCE);
    let app = Credential::demo(&up.data);

    let url = blank_page_url();
    let direct = exchange(&mut browser, &url, &up, &app, "web-direct", "{}");
    assert!(
        candidates(&direct.offer, "relay").is_empty(),
        "no relay without iceServers"
    );

    // Relay only, through up's TURN relay over UDP: the TURN credential is the token split at
    // '#', as the SDK does.
    let token = app.token("web-relay", 1);
    let (user, pass) = cloudproxy_proto::token::split(&token).unwrap();
    let config = format!(
        "{{iceTransportPolicy: 'relay', iceServers: [{{urls: {}, username: {}, credential: {}}}]}}",
        js(&format!("turn:{}?transport=udp", up.udp)),
        js(user),
        js(pass)
    );
    let relayed = exchange(&mut browser, &url, &up, &app, "web-relay", &config);
    let relays = candidates(&relayed.offer, "relay");
    println!("relay candidates {relays:?}, JOINED {}", relayed.joined);
    assert!(
        candidates(&relayed.offer, "host").is_empty() && !relays.is_empty(),
        "relay-only offer:\n{}",
        relayed.offer
    );
    assert!(
        relays.contains(&relayed.joined),
        "JOINED {} is the relay's relayed address {relays:?}",
        relayed.joined
    );
}

#[test]
fn two_pages_with_fake_cameras_see_each_others_video_through_the_sfu() {
    let Some(mut browser) = browser(&[
        "--allow-loopback-in-peer-connection",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
    ]) else {
        return;
    };
    let dir = TempDir::new("webrtc-media");
    let up = start_up(&dir.0.join("data"), PATIENCE);
    let app = Credential::demo(&up.data);
    let whip = whip_url(&up);
    let url = blank_page_url();
    let pages: Vec<Page> = (1..=2u32)
        .map(|uid| {
            let page = new_page(&mut browser, &url);
            browser.eval(
                &page,
                &format!(
                    "start({{}}, {}, {}, true), true",
                    js(&whip),
                    js(&app.token("web-media", uid))
                ),
            );
            page
        })
        .collect();
    for page in &pages {
        wait_for(&mut browser, page, "t.joined", "JOINED");
    }
    let t0 = Instant::now();
    let mut frames = [0u64; 2];
    // More than a first keyframe: video keeps flowing both ways.
    while frames.iter().any(|&n| n < 10) {
        for (i, page) in pages.iter().enumerate() {
            browser.eval(page, "framesDecoded().then((n) => { t.frames = n; }), true");
            frames[i] = browser.eval(page, "t.frames || 0").as_u64().unwrap_or(0);
        }
        assert!(
            t0.elapsed() < PATIENCE,
            "video frames decoded after {:?}: {frames:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "both pages decoded video {:?} after both joined: frames {frames:?}",
        t0.elapsed()
    );
}
