//! The README's two commands, as a newcomer would run them: the run command starts a relay on
//! embedded defaults that a client can use with the secret it prints, and `.ci/run` calls
//! exactly the README's test command.

mod common;

use std::process::Command;
use std::time::Duration;

use cloudproxy_proto::client::{Attr, ALLOCATE};
use cloudproxy_sdk::blocking::{Conn, TurnClient};
use common::{cloudproxy_bin, in_ci, wait_for_listeners, ChildGuard};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const RUN: &str = "cargo run --release -p cloudproxy -- ";
const TEST: &str = "cargo test --workspace --locked";

fn readme() -> String {
    std::fs::read_to_string(format!("{ROOT}/README.md")).expect("README.md")
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let readme = readme();
    assert!(
        readme.lines().any(|l| l.trim() == TEST),
        "README names `{TEST}`"
    );
    let ci = std::fs::read_to_string(format!("{ROOT}/.ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == TEST),
        ".ci/run runs `{TEST}`"
    );
}

#[test]
fn readme_run_command_serves_turn_on_embedded_defaults() {
    let readme = readme();
    let line = readme
        .lines()
        .find(|l| l.starts_with(RUN))
        .expect("README has the run command");
    let args: Vec<&str> = line[RUN.len()..].split_whitespace().collect();
    assert_eq!(
        args,
        ["relay"],
        "the run command takes no flags: embedded defaults"
    );

    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(&args).env("NO_COLOR", "1");
    let (mut guard, lines) = ChildGuard::spawn("cloudproxy relay (README)", cmd).unwrap();
    let found = match wait_for_listeners(&mut guard, &lines, &["udp", "tcp", "tls", "metrics"]) {
        Ok(found) => found,
        Err(why) => {
            let out = guard.output.text();
            if out.contains("Address already in use") && !in_ci() {
                eprintln!(
                    "\n*** SKIPPED readme_run_command_serves_turn_on_embedded_defaults: the default \
                     ports (3478, 443, 9478) are taken on this machine:\n{out}\n"
                );
                return;
            }
            panic!("the README's relay did not start: {why}\n{out}");
        }
    };
    let get = |k: &str| found.iter().find(|(n, _)| n == k).map(|(_, a)| *a).unwrap();
    assert_eq!(get("udp"), "127.0.0.1:3478".parse().unwrap());
    assert_eq!(get("tcp"), "127.0.0.1:3478".parse().unwrap());
    assert!(
        [443, 5349].contains(&get("tls").port()),
        "TLS on 443 or the fallback 5349"
    );
    assert_eq!(get("metrics"), "127.0.0.1:9478".parse().unwrap());

    // The secret it generated is printed on stderr.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let secret = loop {
        let out = guard.output.text();
        if let Some(s) = out
            .lines()
            .find_map(|l| l.split("generated a static secret for this run: ").nth(1))
        {
            break s.trim().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no generated secret:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for conn in [
        Conn::udp(get("udp")),
        Conn::tcp(get("tcp")),
        Conn::tls(get("tls"), None),
    ] {
        let mut c = TurnClient::with_secret(conn, &secret);
        let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
        assert!(r.success, "{:?}", r.error);
        assert_eq!(r.relayed[0].ip().to_string(), "127.0.0.1");
    }
    let mut wrong = TurnClient::with_secret(Conn::udp(get("udp")), "not-the-secret");
    let r = wrong.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
    assert_eq!(r.error.unwrap().0, 401);
}
