//! The README's two commands, as a newcomer would run them: the run command (`cloudproxy up`)
//! starts the control plane, a relay and a media service on embedded defaults and prints a
//! credential that works at once, and `.ci/run` calls exactly the README's test command.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use cloudproxy_proto::client::{Attr, ALLOCATE};
use cloudproxy_proto::token::Token;
use cloudproxy_testkit::turn::{Conn, TurnClient};
use common::{cloudproxy_bin, in_ci, ChildGuard};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const RUN: &str = "cargo run --release -p cloudproxy -- ";
const TEST: &str = "cargo test --workspace --locked && fuzz/smoke.sh";

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
fn readme_run_command_brings_everything_up_on_embedded_defaults() {
    let readme = readme();
    let line = readme
        .lines()
        .find(|l| l.starts_with(RUN))
        .expect("README has the run command");
    let args: Vec<&str> = line[RUN.len()..].split_whitespace().collect();
    assert_eq!(
        args,
        ["up"],
        "the run command takes no flags: embedded defaults"
    );

    // A fresh working directory, as on a fresh machine: `up` keeps its state there.
    let dir = common::TempDir::new("readme-up");
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(&args).current_dir(&dir.0).env("NO_COLOR", "1");
    let (mut guard, lines) = ChildGuard::spawn("cloudproxy up (README)", cmd).unwrap();
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l| l == "ready") {
        if let Some(status) = guard.try_wait() {
            let out = guard.output.text();
            if out.contains("Address already in use") && !in_ci() {
                eprintln!(
                    "\n*** SKIPPED readme_run_command_brings_everything_up_on_embedded_defaults: \
                     a default port (8480, 7000, 3478, 443, 9478) is taken here:\n{out}\n"
                );
                return;
            }
            panic!("cloudproxy up exited with {status}:\n{out}");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(l) => seen.push(l),
            Err(_) if Instant::now() < deadline => {}
            Err(_) => panic!("cloudproxy up is not ready:\n{}", guard.output.text()),
        }
    }
    let value = |key: &str| {
        seen.iter()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no '{key}' line in {seen:?}"))
            .to_owned()
    };
    assert_eq!(value("control"), "http://127.0.0.1:8480");
    assert_eq!(value("udp"), "127.0.0.1:3478");
    assert_eq!(value("media"), "127.0.0.1:7000");
    let tls: SocketAddr = value("tls").parse().unwrap();
    assert!(
        [443, 5349].contains(&tls.port()),
        "TLS on 443 or the fallback 5349"
    );
    let app = value("app");
    let token = Token::decode(&value("token")).expect("a token");
    assert_eq!(token.claims().unwrap().app_id, app);
    // The printed credential works at once, in both Force modes: TURN over TLS and over UDP.
    for conn in [
        Conn::tls(tls, None),
        Conn::udp(value("udp").parse().unwrap()),
    ] {
        let mut c = TurnClient {
            conn,
            auth: None,
            tid: 0x7000,
            username: token.username.clone(),
            password: token.password.clone(),
        };
        let r = c.transact(ALLOCATE, &[Attr::RequestedTransportUdp]);
        assert!(r.success, "{:?}\n{}", r.error, guard.output.text());
        assert_eq!(r.relayed[0].ip().to_string(), "127.0.0.1");
    }
    // And the state is where a newcomer looks for it.
    assert!(dir.0.join("cloudproxy-data/operator.key").exists());
}

/// README.ja.md is kept in step with README.md: it has the two commands verbatim, and every
/// command of the binary (as `--help` lists them) that README.md documents appears in both.
#[test]
fn japanese_readme_keeps_in_step_with_the_english_one() {
    let en = readme();
    let ja = std::fs::read_to_string(format!("{ROOT}/README.ja.md")).expect("README.ja.md");
    assert!(
        en.contains("(README.ja.md)"),
        "README.md links README.ja.md"
    );
    for two in [format!("{RUN}up"), TEST.to_owned()] {
        assert!(en.lines().any(|l| l.trim() == two), "README.md: `{two}`");
        assert!(
            ja.lines().any(|l| l.trim() == two),
            "README.ja.md lacks `{two}`"
        );
    }
    let help = Command::new(cloudproxy_bin())
        .arg("--help")
        .output()
        .expect("cloudproxy --help");
    let help = String::from_utf8_lossy(&help.stdout);
    // `Commands:` then one indented `name  description` per line, up to a blank line.
    let commands: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect();
    assert!(commands.len() >= 10, "{help}");
    let mentions = |text: &str, c: &str| {
        text.contains(&format!("cloudproxy {c}"))
            || [" ", "\n"]
                .iter()
                .any(|end| text.contains(&format!("cloudproxy -- {c}{end}")))
    };
    for c in &commands {
        assert!(
            mentions(&en, c),
            "README.md does not document `cloudproxy {c}`"
        );
        assert!(
            mentions(&ja, c),
            "README.ja.md does not mention `cloudproxy {c}`"
        );
    }
    // The operator's vocabulary of the product page, and the three modes.
    for word in [
        "クラウドプロキシ",
        "IP ホワイトリストテーブル",
        "自動",
        "Force UDPモード",
        "Force TCPモード",
    ] {
        assert!(ja.contains(word), "README.ja.md lacks {word}");
    }
}
