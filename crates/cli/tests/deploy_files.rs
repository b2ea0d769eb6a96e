//! The deployment files, checked where no container engine runs: every command line in
//! `compose.yaml` and the systemd units is parsed and validated by the binary itself
//! (`cloudproxy --check …`), every environment variable they set is one the command reads,
//! `systemd-analyze verify` accepts the units with their sandboxing, and the Dockerfile names
//! the real package, binary and paths.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{cloudproxy_bin, in_ci, run_bounded, which, TempDir};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs the binary with `args` and the given environment (and no other CLOUDPROXY_*
/// variable); returns (exit code, output).
fn cloudproxy(args: &[String], env: &BTreeMap<String, String>) -> (Option<i32>, String) {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("CLOUDPROXY_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env);
    let run = run_bounded("cloudproxy", cmd, Duration::from_secs(30));
    (run.status.and_then(|s| s.code()), run.output)
}

/// `--check` before the subcommand's own arguments: parse and validate, run nothing.
fn check(args: &[String], env: &BTreeMap<String, String>, what: &str) {
    let mut full = vec!["--check".to_owned()];
    full.extend(args.iter().cloned());
    let (code, out) = cloudproxy(&full, env);
    assert_eq!(
        code,
        Some(0),
        "{what}: cloudproxy {full:?} is refused:\n{out}"
    );
    assert!(out.lines().any(|l| l == "ok"), "{what}: {out}");
}

/// Every `CLOUDPROXY_*` variable a service sets must be one its command (or `admin`, for
/// operators who exec into the container) reads, as its `--help` shows.
fn check_env_read(sub: &str, env: &BTreeMap<String, String>, what: &str) {
    let help = |cmd: &str| cloudproxy(&[cmd.to_owned(), "--help".to_owned()], &BTreeMap::new()).1;
    let helps = format!("{}{}", help(sub), help("admin"));
    for key in env.keys().filter(|k| k.starts_with("CLOUDPROXY_")) {
        assert!(
            helps.contains(&format!("[env: {key}")),
            "{what}: sets {key}, which `cloudproxy {sub}` does not read"
        );
    }
}

// ------------------------------------------------------------------------------------------
// compose.yaml

#[derive(Debug, Default)]
struct Service {
    image: Option<String>,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    lines: Vec<String>,
}

/// The subset of YAML compose.yaml is written in: services at two spaces, their keys at four,
/// `command` as one JSON array, `environment` as a map at six.
fn services(yaml: &str) -> BTreeMap<String, Service> {
    let mut out: BTreeMap<String, Service> = BTreeMap::new();
    let (mut in_services, mut current, mut in_env) = (false, None::<String>, false);
    for line in yaml.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if indent == 0 {
            in_services = text == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            let name = text.strip_suffix(':').expect("a service name").to_owned();
            out.entry(name.clone()).or_default();
            current = Some(name);
            in_env = false;
            continue;
        }
        let s = out
            .get_mut(current.as_ref().expect("inside a service"))
            .unwrap();
        s.lines.push(text.to_owned());
        if indent == 4 {
            in_env = text == "environment:";
            if let Some(v) = text.strip_prefix("image: ") {
                s.image = Some(v.to_owned());
            }
            if let Some(v) = text.strip_prefix("command: ") {
                s.command = serde_json::from_str(v).expect("command is one JSON array");
            }
        } else if indent == 6 && in_env {
            let (k, v) = text.split_once(": ").expect("KEY: value");
            s.environment.insert(k.to_owned(), v.to_owned());
        }
    }
    out
}

/// `KEY=VALUE` lines of the example environment file.
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Compose's interpolation: `${VAR}`, `${VAR:-default}`, `${VAR:?message}`. A variable
/// without a default must be in the example file.
fn interpolate(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        let inner = &rest[start + 2..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner.split(":?").next().unwrap(), None),
        };
        let value = vars.get(name).cloned().or(default.map(str::to_owned));
        out.push_str(&value.unwrap_or_else(|| {
            panic!("${{{name}}} is used but deploy/compose.env.example does not set it")
        }));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn compose_runs_postgres_control_and_a_static_and_a_dynamic_relay_the_binary_accepts() {
    let services = services(&read("compose.yaml"));
    let vars = env_file(&read("deploy/compose.env.example"));
    assert!(services.contains_key("postgres"), "{services:?}");
    let mut pools = Vec::new();
    let mut checked = 0;
    for (name, s) in &services {
        if s.image.as_deref() != Some("cloudproxy:latest") {
            continue;
        }
        let args: Vec<String> = s.command.iter().map(|a| interpolate(a, &vars)).collect();
        let env: BTreeMap<String, String> = s
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), interpolate(v, &vars)))
            .collect();
        let what = format!("compose service {name}");
        check(&args, &env, &what);
        check_env_read(&args[0], &env, &what);
        // Privileges: every capability dropped but the one port 443 needs.
        assert!(s.lines.iter().any(|l| l == "cap_drop: [ALL]"), "{what}");
        assert!(
            s.lines.iter().any(|l| l == "cap_add: [NET_BIND_SERVICE]"),
            "{what}"
        );
        if args[0] == "relay" {
            let pool = args.iter().skip_while(|a| *a != "--pool").nth(1).cloned();
            pools.push(pool.expect("--pool"));
            // A relay relays on a real address, not the unspecified one.
            let udp = args.iter().skip_while(|a| *a != "--udp").nth(1);
            assert!(
                udp.is_some_and(|a| !a.starts_with("0.0.0.0")),
                "{what}: --udp {udp:?}"
            );
        }
        checked += 1;
    }
    pools.sort();
    assert_eq!(pools, ["dynamic", "static"], "one relay per pool");
    assert_eq!(checked, 3, "control and two relays");
    // The control plane uses the PostgreSQL service.
    let control = &services["control"];
    assert!(
        control
            .command
            .iter()
            .any(|a| a.contains("@postgres:5432/")),
        "{control:?}"
    );
    assert!(
        control.lines.iter().any(|l| l == "build: ."),
        "built from the Dockerfile"
    );
}

#[test]
fn compose_check_would_catch_a_misspelled_flag() {
    // The check above is only worth something if a wrong flag fails it.
    let (code, out) = cloudproxy(
        &["--check", "relay", "--pol", "static"].map(String::from),
        &BTreeMap::new(),
    );
    assert_eq!(code, Some(2), "{out}");
    let (code, out) = cloudproxy(
        &[
            "--check",
            "relay",
            "--control",
            "http://127.0.0.1:8480",
            "--pool",
            "static",
        ]
        .map(String::from),
        &BTreeMap::new(),
    );
    assert_eq!(
        code,
        Some(2),
        "a relay under a control plane needs a key: {out}"
    );
}

// ------------------------------------------------------------------------------------------
// systemd

#[test]
fn systemd_units_verify_and_their_command_lines_check() {
    let Some(analyze) = which("systemd-analyze") else {
        assert!(
            !in_ci(),
            "systemd-analyze is missing under CI (.ci/run installs systemd)"
        );
        eprintln!("\n*** SKIPPED systemd_units_verify_and_their_command_lines_check: no systemd-analyze (apt-get install systemd) ***\n");
        return;
    };
    let dir = TempDir::new("units");
    let bin = cloudproxy_bin().to_str().unwrap();
    for (unit, sub) in [
        ("cloudproxy-relay.service", "relay"),
        ("cloudproxy-control.service", "control"),
    ] {
        let text = read(&format!("deploy/systemd/{unit}"));
        for directive in [
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            "DynamicUser=yes",
            "ProtectHome=yes",
            "PrivateTmp=yes",
        ] {
            assert!(
                text.lines().any(|l| l == directive),
                "{unit}: no {directive}"
            );
        }
        // systemd-analyze checks that ExecStart's binary exists: point it at the one under test.
        let copy: PathBuf = dir.0.join(unit);
        std::fs::write(&copy, text.replace("/usr/local/bin/cloudproxy", bin)).unwrap();
        let mut cmd = Command::new(&analyze);
        cmd.arg("verify").arg(&copy);
        let run = run_bounded("systemd-analyze verify", cmd, Duration::from_secs(60));
        assert!(run.success(), "{unit}: {}", run.output);
        // Unknown keys are only warnings: any line on stderr is a failure here.
        assert!(!run.output.contains("[stderr]"), "{unit}:\n{}", run.output);

        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        let mut args: Vec<String> = exec.split_whitespace().map(String::from).collect();
        assert_eq!(args.remove(0), "/usr/local/bin/cloudproxy");
        assert_eq!(args[0], sub, "{unit} runs `cloudproxy {sub}`");
        // The relay's configuration file is the example the README tells to install there.
        for a in &mut args {
            if a == "/etc/cloudproxy/relay.toml" {
                *a = format!("{ROOT}/crates/cli/relay.example.toml");
            }
        }
        check(&args, &BTreeMap::new(), unit);
        // State lives where the unit lets it write.
        let state = text
            .lines()
            .find_map(|l| l.strip_prefix("StateDirectory="))
            .expect("StateDirectory");
        for a in args.iter().filter(|a| a.contains("/var/lib/")) {
            assert!(
                a.contains(&format!("/var/lib/{state}/")),
                "{unit}: {a} outside {state}"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_builds_the_real_binary_and_runs_it_unprivileged() {
    let text = read("Dockerfile");
    // Continuation lines joined: one instruction per entry.
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let of = |kw: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter_map(|l| l.strip_prefix(kw)?.strip_prefix(' '))
            .collect()
    };
    assert!(of("FROM").len() >= 2, "multi-stage");
    // The package and binary it builds are the workspace's.
    let manifest = read("crates/cli/Cargo.toml");
    assert!(manifest.contains("name = \"cloudproxy\"\npath = \"src/main.rs\""));
    let build = of("RUN")
        .into_iter()
        .find(|r| r.contains("cargo build"))
        .expect("cargo build");
    assert!(
        build.contains("--release --locked -p cloudproxy"),
        "{build}"
    );
    assert!(
        build.contains("target/release/cloudproxy /out/cloudproxy"),
        "{build}"
    );
    // What it copies from the context exists.
    for copy in of("COPY") {
        if copy.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = copy.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(
                Path::new(ROOT).join(src).exists(),
                "COPY {src}: not in the repository"
            );
        }
    }
    let staged = of("COPY")
        .into_iter()
        .find(|c| c.starts_with("--from=build"))
        .expect("COPY --from=build");
    assert_eq!(
        staged,
        "--from=build /out/cloudproxy /usr/local/bin/cloudproxy"
    );
    assert_eq!(of("ENTRYPOINT"), ["[\"/usr/local/bin/cloudproxy\"]"]);
    // Not root, and port 443 through the one file capability.
    let user = of("USER");
    assert_eq!(user.len(), 1);
    assert!(
        !["root", "0"].contains(&user[0].split(':').next().unwrap()),
        "{user:?}"
    );
    assert!(
        of("RUN")
            .iter()
            .any(|r| r.contains("setcap cap_net_bind_service=+ep /usr/local/bin/cloudproxy")),
        "setcap"
    );
    // The ports it exposes are the defaults `cloudproxy relay` and `control` listen on.
    let expose = of("EXPOSE").join(" ");
    for port in ["3478/udp", "3478/tcp", "443/tcp", "9478/tcp", "8480/tcp"] {
        assert!(
            expose.split_whitespace().any(|p| p == port),
            "EXPOSE {port}"
        );
    }
    let relay_help = cloudproxy(&["relay".into(), "--help".into()], &BTreeMap::new()).1;
    let example = read("crates/cli/relay.example.toml");
    for default in ["127.0.0.1:3478", "127.0.0.1:443", "127.0.0.1:9478"] {
        assert!(
            example.contains(default) || relay_help.contains(default),
            "{default}"
        );
    }
    // The build context leaves out the build output.
    assert!(read(".dockerignore").lines().any(|l| l == "target"));
}
