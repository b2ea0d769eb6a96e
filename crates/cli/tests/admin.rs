//! `cloudproxy admin` against a real `cloudproxy control` on SQLite, as an operator and an app
//! owner would use them: owner, app, edges, an enablement request through its lifecycle, the
//! allow-list exports, suspension, and the errors people hit (no key, unknown id, bad region,
//! bad fields, nothing listening).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{cloudproxy_bin, reserve_ports, ChildGuard, TempDir};

struct Control {
    url: String,
    operator: String,
    _guard: ChildGuard,
    _dir: TempDir,
}

fn start_control() -> Control {
    let dir = TempDir::new("admin");
    let db = format!("sqlite:{}", dir.0.join("control.db").display());
    let addr = format!("127.0.0.1:{}", reserve_ports(1, true)[0]);
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["control", "--listen", &addr, "--database", &db])
        .env_remove("CLOUDPROXY_OPERATOR_KEY");
    let (guard, lines) = ChildGuard::spawn("cloudproxy control", cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let operator = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no operator key printed:\n{}", guard.output.text()));
        if let Some(k) = line.strip_prefix("operator key (generated for this run): ") {
            break k.to_owned();
        }
    };
    Control {
        url: format!("http://{addr}"),
        operator,
        _guard: guard,
        _dir: dir,
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    fn fails(self, code: i32) -> String {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self.stderr
    }
}

/// `cloudproxy admin --control URL [--key KEY] ARGS…`, with no CLOUDPROXY_* from the caller.
fn admin(control: &str, key: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = Command::new(cloudproxy_bin());
    cmd.args(["admin", "--control", control])
        .env_remove("CLOUDPROXY_KEY")
        .env_remove("CLOUDPROXY_CONTROL");
    if let Some(key) = key {
        cmd.args(["--key", key]);
    }
    let out = cmd.args(args).output().expect("run cloudproxy admin");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The value after `label` in a label/value block.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(label).filter(|r| r.starts_with("  ")))
        .unwrap_or_else(|| panic!("no '{label}' in:\n{text}"))
        .trim()
        .to_owned()
}

/// The table row that mentions `needle`, split into cells by runs of 2+ spaces.
fn row(table: &str, needle: &str) -> Vec<String> {
    let line = table
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no row with '{needle}' in:\n{table}"));
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

const SUBMIT: &[&str] = &[
    "--region",
    "japan",
    "--sdk",
    "web",
    "--use-case",
    "1:1 video call",
    "--channels",
    "10",
    "--users",
    "2",
    "--proxy-users",
    "1",
    "--quality",
    "720p",
    "--mode",
    "force-tcp",
];

#[test]
fn operator_and_owner_take_an_app_to_force_tcp_in_japan() {
    let c = start_control();
    let op = Some(c.operator.as_str());
    let url = c.url.as_str();

    // An owner and its key, shown once.
    let out = admin(url, op, &["owners", "create", "Acme Video"]).ok();
    assert!(out.contains("shown only once"), "{out}");
    let owner_id = field(&out, "Owner ID");
    let owner_key = field(&out, "API key");
    assert!(owner_key.starts_with("cpk_"), "{out}");
    let out = admin(url, op, &["owners", "list"]).ok();
    assert_eq!(row(&out, &owner_id)[1], "Acme Video", "{out}");

    // The owner creates its app: App ID, key id and secret, once.
    let owner = Some(owner_key.as_str());
    let out = admin(url, owner, &["apps", "create", "Acme Meet"]).ok();
    assert!(out.contains("The secret is shown only once"), "{out}");
    let app_id = field(&out, "App ID");
    assert_eq!(app_id.len(), 32, "{out}");
    assert_eq!(field(&out, "Key ID"), "k1");
    let secret = field(&out, "Secret");
    assert!(
        secret.len() == 64 && secret.chars().all(|c| c.is_ascii_hexdigit()),
        "{out}"
    );
    assert_eq!(field(&out, "Owner"), owner_id);

    // Two static relays in Japan publish allow-list versions 1 and 2.
    for (id, ip, version) in [
        ("tokyo-1", "203.0.113.10", 1),
        ("tokyo-2", "203.0.113.11", 2),
    ] {
        let udp = format!("udp:{ip}:3478");
        let tls = format!("tls:{ip}:443");
        let out = admin(
            url,
            op,
            &[
                "edges",
                "put",
                id,
                "--region",
                "japan",
                "--pool",
                "static",
                "--capacity-kbps",
                "100000",
                "--listen",
                &udp,
                "--listen",
                &tls,
            ],
        )
        .ok();
        assert!(
            out.starts_with(&format!(
                "Edge {id}: japan static, 100000 kbps, udp {ip}:3478, tls {ip}:443\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "Published allow-list japan version {version}, effective "
            )),
            "{out}"
        );
    }
    let out = admin(url, op, &["edges", "list", "--region", "japan"]).ok();
    assert_eq!(
        row(&out, "tokyo-2"),
        [
            "tokyo-2",
            "japan",
            "static",
            "100000",
            "udp 203.0.113.11:3478, tls 203.0.113.11:443"
        ],
        "{out}"
    );

    // The owner files a Force TCP request; the operator approves, which activates it; the
    // owner's `activate` (the older second step) changes nothing.
    let mut submit = vec!["requests", "submit", app_id.as_str()];
    submit.extend_from_slice(SUBMIT);
    let out = admin(url, owner, &submit).ok();
    let request_id = field(&out, "Request ID");
    assert_eq!(field(&out, "State"), "submitted", "{out}");
    assert_eq!(field(&out, "Mode"), "force_tcp", "{out}");
    assert_eq!(field(&out, "Region"), "japan", "{out}");
    let kbps = field(&out, "Estimated kbps");
    let approved = format!("Request {request_id}: active ({kbps} kbps reserved)\n");
    assert_eq!(
        admin(url, op, &["requests", "approve", &request_id]).ok(),
        approved
    );
    assert_eq!(
        admin(url, owner, &["requests", "activate", &request_id]).ok(),
        format!("Request {request_id}: active ({kbps} kbps reserved)\n")
    );

    // Lists as each sees them.
    let out = admin(url, op, &["requests", "list"]).ok();
    let r = row(&out, &request_id);
    assert_eq!(
        r[1..],
        [
            app_id.as_str(),
            "japan",
            "web",
            "force_tcp",
            "720p",
            "10",
            "2",
            "1",
            kbps.as_str(),
            "active"
        ],
        "{out}"
    );
    let out = admin(url, owner, &["requests", "list", &app_id]).ok();
    assert!(out.contains(&request_id), "{out}");
    let out = admin(url, owner, &["apps", "list"]).ok();
    assert_eq!(
        row(&out, &app_id)[..5],
        [
            app_id.as_str(),
            "Acme Meet",
            owner_id.as_str(),
            "active",
            "1"
        ],
        "{out}"
    );
    let out = admin(url, op, &["regions", "list"]).ok();
    let japan = row(&out, "japan");
    assert_eq!(japan[..5], ["japan", "Japan", "2", "0", "200000"], "{out}");
    assert_eq!(japan[5], kbps, "{out}");

    // The allow-list a firewall team reads (no key needed).
    let csv = admin(url, None, &["allowlist", "japan", "--format", "csv"]).ok();
    assert_eq!(
        csv,
        "service,ips,protocol,ports\n\
         force_udp,203.0.113.10/31,udp,3478\n\
         force_tcp,203.0.113.10/31,tcp,443\n",
    );
    let nft = admin(url, None, &["allowlist", "japan", "--format", "nftables"]).ok();
    assert!(nft.contains("203.0.113.10/31"), "{nft}");
    assert!(
        nft.contains("443") && nft.contains("3478") && nft.contains("version 2"),
        "{nft}"
    );
    let out = admin(url, None, &["allowlist"]).ok();
    assert_eq!(row(&out, "force_tcp")[..2], ["japan", "2"], "{out}");
    assert!(
        out.contains("Nothing published for: mainland_china, europe"),
        "{out}"
    );
    let out = admin(url, None, &["allowlist", "japan", "--history"]).ok();
    assert_eq!(
        out.lines().filter(|l| l.contains("added")).count(),
        4,
        "{out}"
    );
    let json = admin(url, None, &["allowlist", "japan", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["version"], 2, "{json}");

    // Rotation keeps the old key for the grace period.
    let out = admin(url, owner, &["apps", "rotate", &app_id, "--grace", "60"]).ok();
    assert_eq!(field(&out, "Key ID"), "k2", "{out}");
    assert!(out.contains("Key k1 keeps working until "), "{out}");

    // Suspension is the operator's; the owner is told so.
    let err = admin(url, owner, &["apps", "suspend", &app_id]).fails(1);
    assert!(err.contains("403") && err.contains("operator"), "{err}");
    assert_eq!(
        admin(url, op, &["apps", "suspend", &app_id]).ok(),
        format!("App {app_id}: suspended\n")
    );
    let out = admin(url, owner, &["apps", "show", &app_id]).ok();
    assert_eq!(field(&out, "Status"), "suspended", "{out}");
    assert!(out.contains("k1 ") && out.contains("- (current)"), "{out}");
    let json = admin(url, op, &["apps", "show", &app_id, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["status"], "suspended", "{json}");

    // A second request, rejected with a reason.
    let mut submit = vec!["requests", "submit", app_id.as_str()];
    submit.extend_from_slice(SUBMIT);
    let second = field(&admin(url, owner, &submit).ok(), "Request ID");
    assert_eq!(
        admin(
            url,
            op,
            &["requests", "reject", &second, "--reason", "one is enough"]
        )
        .ok(),
        format!("Request {second}: rejected: one is enough\n")
    );

    // Removing a relay publishes version 3.
    let out = admin(url, op, &["edges", "delete", "tokyo-2"]).ok();
    assert!(out.starts_with("Edge tokyo-2 deleted.\n"), "{out}");
    assert!(out.contains("allow-list japan version 3"), "{out}");

    // Usage, as a relay reports it (the operator's key may act as a relay).
    let report = format!(
        r#"{{"report_id":"admin-test-1","relay_id":"tokyo-1","records":[{{"app_id":"{app_id}","day":"2026-11-28","mode":"force_tcp","quality":"720p","seconds":90,"bytes":4096,"peak_concurrency":2}}]}}"#
    );
    let addr = url.strip_prefix("http://").unwrap();
    let (code, body) = common::http(addr, "POST", "/v1/usage", op, &report);
    assert_eq!(code, 200, "{body}");
    let out = admin(
        url,
        owner,
        &[
            "usage",
            &app_id,
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
            "--csv",
        ],
    )
    .ok();
    assert_eq!(
        out,
        "day,mode,quality,minutes,bytes,peak_concurrency\n2026-11-28,force_tcp,720p,1.50,4096,2\n"
    );
    let out = admin(
        url,
        owner,
        &[
            "usage",
            &app_id,
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
        ],
    )
    .ok();
    assert!(
        out.contains("2026-11-28") && out.contains("1.5") && out.contains("4096"),
        "{out}"
    );
}

#[test]
fn errors_say_what_to_fix() {
    let c = start_control();
    let op = Some(c.operator.as_str());
    let url = c.url.as_str();

    // No key: named flag and variable, usage exit code, nothing sent.
    let err = admin(url, None, &["apps", "list"]).fails(2);
    assert!(
        err.contains("--key") && err.contains("CLOUDPROXY_KEY"),
        "{err}"
    );
    // The key from the environment works.
    let out = Command::new(cloudproxy_bin())
        .args(["admin", "apps", "list"])
        .env("CLOUDPROXY_CONTROL", url)
        .env("CLOUDPROXY_KEY", &c.operator)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no apps\n");
    // A wrong key.
    let err = admin(url, Some("not-a-key-at-all"), &["apps", "list"]).fails(2);
    assert!(err.contains("401") && err.contains("--key"), "{err}");

    // Unknown ids.
    let unknown = "0".repeat(32);
    let err = admin(url, op, &["apps", "show", &unknown]).fails(1);
    assert!(
        err.contains("404 Not Found") && err.contains(&format!("app '{unknown}' not found")),
        "{err}"
    );
    let err = admin(url, op, &["requests", "approve", "r-nope"]).fails(1);
    assert!(err.contains("404") && err.contains("not found"), "{err}");

    // A bad region is refused before anything is sent, naming the flag and the choices.
    let app = admin(url, op, &["apps", "create", "x"]).ok();
    let app_id = field(&app, "App ID");
    let mut submit = vec!["requests", "submit", app_id.as_str()];
    submit.extend_from_slice(SUBMIT);
    submit[4] = "mars";
    let err = admin(url, op, &submit).fails(2);
    assert!(
        err.contains("'mars'") && err.contains("--region") && err.contains("japan"),
        "{err}"
    );

    // Fields the server refuses are each named.
    submit[4] = "japan";
    let users = submit.iter().position(|a| *a == "--users").unwrap();
    submit[users + 1] = "0";
    let err = admin(url, op, &submit).fails(2);
    assert!(
        err.contains("400 Bad Request: invalid request: 2 fields are invalid"),
        "{err}"
    );
    assert!(
        err.contains("\n  max_users_per_channel: must be between 1 and ")
            && err.contains("\n  max_proxy_users_per_channel: must not exceed"),
        "{err}"
    );
    let err = admin(
        url,
        op,
        &[
            "edges",
            "put",
            "e1",
            "--region",
            "japan",
            "--pool",
            "static",
            "--capacity-kbps",
            "1",
            "--listen",
            "udp:203.0.113.1:3478",
            "--listen",
            "tls:0.0.0.0:443",
        ],
    )
    .fails(2);
    assert!(err.contains("listeners[1].ip: must be a unicast"), "{err}");

    // A lifecycle step the state does not allow.
    let mut ok = vec!["requests", "submit", app_id.as_str()];
    ok.extend_from_slice(SUBMIT);
    let id = field(&admin(url, op, &ok).ok(), "Request ID");
    let err = admin(url, op, &["requests", "resume", &id]).fails(1);
    assert!(err.contains("409 Conflict"), "{err}");

    // Exports need a region.
    let err = admin(url, None, &["allowlist", "--format", "csv"]).fails(2);
    assert!(err.contains("need a REGION"), "{err}");

    // Nothing listening: the URL is named.
    let dead = format!("http://127.0.0.1:{}", reserve_ports(1, true)[0]);
    let err = admin(&dead, op, &["apps", "list"]).fails(1);
    assert!(
        err.contains(&format!("cannot reach the control plane at {dead}")),
        "{err}"
    );
}
