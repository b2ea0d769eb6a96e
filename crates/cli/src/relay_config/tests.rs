//! The relay command's configuration, end to end: file and flags to [`RelayConfig`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloudproxy_relay::tls::TlsIdentity;
use cloudproxy_relay::{FastPathConfig, FastPathMode, RelayConfig};

use super::values::{fast_path, parse_port_range};
use super::*;

use crate::parse_flags;
use cloudproxy_testkit::process::TempDir;

fn flags(args: &[&str]) -> RelayArgs {
    parse_flags(std::iter::once("relay").chain(args.iter().copied())).unwrap()
}

/// `contents` as `relay.toml` in a scratch directory (removed when the `TempDir` drops).
fn config_file(contents: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new("cli-test");
    let path = dir.0.join("relay.toml");
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

fn from_file(contents: &str, args: &[&str]) -> anyhow::Result<RelayConfig> {
    let (_dir, path) = config_file(contents);
    relay_config(Some(&path), &flags(args))
}

fn file_error(contents: &str) -> String {
    let (_dir, path) = config_file(contents);
    let e = relay_config(Some(&path), &flags(&["--static-secret", "s"])).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains(&path.display().to_string()),
        "{msg:?} should name the file"
    );
    msg
}

#[test]
fn defaults_without_file() {
    let c = relay_config(None, &flags(&["--static-secret", "s"])).unwrap();
    let d = RelayConfig::default();
    assert_eq!(c.udp, d.udp);
    assert_eq!(c.tcp, d.tcp);
    assert_eq!(c.tls, d.tls);
    assert_eq!(c.metrics, d.metrics);
    assert_eq!(c.shards, d.shards);
    assert_eq!(c.drain_timeout, d.drain_timeout);
    assert_eq!(c.stream_idle_timeout, d.stream_idle_timeout);
    assert_eq!(c.tls_fallback_port, d.tls_fallback_port);
    assert!(matches!(c.tls_identity, TlsIdentity::SelfSigned { .. }));
    assert_eq!(c.server.realm, d.server.realm);
    assert_eq!(c.server.relay_ipv4, d.server.relay_ipv4);
    assert_eq!(c.server.relay_ipv6, d.server.relay_ipv6);
    assert_eq!(c.server.relay_ports, d.server.relay_ports);
    assert_eq!(c.server.max_allocations, d.server.max_allocations);
    assert_eq!(c.server.peer_policy, d.server.peer_policy);
    assert_eq!(c.server.auth.static_secret.as_deref(), Some(&b"s"[..]));
    // An empty file is the same as no file.
    let e = from_file("", &["--static-secret", "s"]).unwrap();
    assert_eq!(e.udp, d.udp);
    assert_eq!(e.server.relay_ports, d.server.relay_ports);
}

#[test]
fn no_credentials_is_left_for_start_up_to_generate() {
    let c = relay_config(None, &RelayArgs::default()).unwrap();
    assert!(c.server.auth.static_secret.is_none());
    assert!(c.server.auth.app_keys.is_empty());
}

#[test]
fn unknown_keys_are_named() {
    for (file, named) in [
        ("udpp = [\"127.0.0.1:3478\"]\n", "udpp"),
        ("[relay]\nipv4 = \"127.0.0.1\"\nbogus = 1\n", "bogus"),
        (
            "[[auth.app_keys]]\napp_id = \"a\"\nkey_id = \"k\"\nsecret = \"s\"\nnot_afterr = 5\n",
            "not_afterr",
        ),
        ("shards = \"four\"\n", "shards"),
        ("udp = [\n", "TOML parse error"),
    ] {
        let msg = file_error(file);
        assert!(msg.contains(named), "{msg}");
    }
}

#[test]
fn bad_values_name_the_key() {
    for (file, named) in [
        (
            "[peers]\nallow = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
            r#"peers.allow[1]: "10.0.0.0/33": not a CIDR network"#,
        ),
        (
            "[peers]\nallow = [\"10.0.0.0/8:9-1\"]\n",
            r#"peers.allow[0]: "10.0.0.0/8:9-1": bad port range"#,
        ),
        (
            "tcp = [\"127.0.0.1:1\", \"localhost:3478\"]\n",
            r#"tcp[1]: "localhost:3478": not a socket address"#,
        ),
        (
            "[relay]\nports = \"6000-5000\"\n",
            r#"relay.ports: "6000-5000""#,
        ),
        (
            "[relay]\nipv4 = \"::1\"\n",
            r#"relay.ipv4: "::1": not an IPv4 address"#,
        ),
        ("[relay]\nipv4 = \"0.0.0.0\"\n", "relay.ipv4"),
        ("metrics = \"nope\"\n", r#"metrics: "nope""#),
        (
            "[tls_cert]\ncert = \"c.pem\"\n",
            "tls_cert: cert is set but key is missing",
        ),
        (
            "[[auth.app_keys]]\napp_id = \"a:b\"\nkey_id = \"k\"\nsecret = \"s\"\n",
            "auth.app_keys[0].app_id",
        ),
        (
            "[lifetimes]\npermission_secs = 0\n",
            "lifetimes.permission_secs",
        ),
        (
            "[lifetimes]\nallocation_default_secs = 7200\n",
            "allocation_default_secs",
        ),
    ] {
        let msg = file_error(file);
        assert!(msg.contains(named), "{msg}");
    }
}

#[test]
fn file_values_are_mapped() {
    let c = from_file(
        r#"
        udp = ["127.0.0.1:0", "[::1]:0"]
        tcp = []
        tls = ["127.0.0.1:5349"]
        tls_fallback_port = 0
        metrics = "off"
        shards = 2
        drain_timeout_secs = 5
        stream_idle_timeout_secs = 3
        [tls_cert]
        cert = "certs/cert.pem"
        key = "/abs/key.pem"
        [auth]
        realm = "example.org"
        [[auth.app_keys]]
        app_id = "app1"
        key_id = "k1"
        secret = "sekrit"
        not_after = 1700000000
        [relay]
        ipv6 = "::1"
        ports = "50000-50009"
        user_quota = 3
        software = ""
        [peers]
        allow = ["127.0.0.0/8:3480", "[2001:db8::]/32:5000-6000"]
        [lifetimes]
        permission_secs = 60
        "#,
        &[],
    )
    .unwrap();
    assert_eq!(c.udp.len(), 2);
    assert!(c.tcp.is_empty());
    assert_eq!(c.tls, vec!["127.0.0.1:5349".parse().unwrap()]);
    assert_eq!(c.tls_fallback_port, None);
    assert_eq!(c.metrics, None);
    assert_eq!(c.shards, 2);
    assert_eq!(c.drain_timeout, Duration::from_secs(5));
    assert_eq!(c.stream_idle_timeout, Duration::from_secs(3));
    match &c.tls_identity {
        TlsIdentity::Pem { cert, key } => {
            assert!(cert.ends_with("certs/cert.pem") && cert.is_absolute());
            assert_eq!(key, Path::new("/abs/key.pem"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.server.realm, "example.org");
    assert_eq!(c.server.auth.static_secret, None);
    assert_eq!(c.server.auth.app_keys.len(), 1);
    assert_eq!(c.server.auth.app_keys[0].secret, b"sekrit");
    assert_eq!(c.server.auth.app_keys[0].not_after, Some(1700000000));
    assert_eq!(c.server.relay_ipv4, None, "naming only ipv6 disables ipv4");
    assert_eq!(c.server.relay_ipv6, Some(Ipv6Addr::LOCALHOST));
    assert_eq!(c.server.relay_ports, 50000..=50009);
    assert_eq!(c.server.max_allocations_per_user, 3);
    assert_eq!(c.server.software, None);
    assert!(permits(&c, "127.0.0.1", 3480));
    assert!(!permits(&c, "127.0.0.1", 3481));
    assert!(permits(&c, "2001:db8::7", 5500));
    assert_eq!(c.server.lifetimes.permission, Duration::from_secs(60));
    assert_eq!(
        c.server.lifetimes.allocation_default,
        Duration::from_secs(600)
    );
}

#[test]
fn flags_override_the_file() {
    let file = r#"
        udp = ["127.0.0.1:3478"]
        metrics = "127.0.0.1:9000"
        shards = 4
        [auth]
        static_secret = "from-file"
        realm = "file.example"
        [relay]
        ipv4 = "127.0.0.1"
        ports = "40000-40100"
        max_allocations = 10
        [peers]
        allow = ["10.0.0.0/8"]
    "#;
    let c = from_file(
        file,
        &[
            "--udp",
            "127.0.0.1:0",
            "--udp",
            "[::1]:0",
            "--static-secret",
            "from-flag",
            "--realm",
            "flag.example",
            "--allow-peer",
            "127.0.0.1:3480",
            "--no-metrics",
            "--relay-ip",
            "::1",
            "--relay-ports",
            "50000-50010",
            "--shards",
            "1",
            "--drain-timeout",
            "7",
            "--max-allocations",
            "99",
            "--user-quota",
            "2",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
        ],
    )
    .unwrap();
    assert_eq!(
        c.udp,
        vec![
            "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
            "[::1]:0".parse().unwrap()
        ]
    );
    assert_eq!(c.metrics, None);
    assert_eq!(c.shards, 1);
    assert_eq!(c.drain_timeout, Duration::from_secs(7));
    assert_eq!(
        c.server.auth.static_secret.as_deref(),
        Some(&b"from-flag"[..])
    );
    assert_eq!(c.server.realm, "flag.example");
    assert!(permits(&c, "127.0.0.1", 3480));
    assert!(!permits(&c, "10.0.0.1", 3480));
    assert_eq!(c.server.relay_ipv4, None);
    assert_eq!(c.server.relay_ipv6, Some(Ipv6Addr::LOCALHOST));
    assert_eq!(c.server.relay_ports, 50000..=50010);
    assert_eq!(c.server.max_allocations, 99);
    assert_eq!(c.server.max_allocations_per_user, 2);
    assert!(matches!(c.tls_identity, TlsIdentity::Pem { .. }));

    // Unset flags leave the file's values alone.
    let c = from_file(file, &[]).unwrap();
    assert_eq!(c.metrics, Some("127.0.0.1:9000".parse().unwrap()));
    assert_eq!(c.shards, 4);
    assert_eq!(
        c.server.auth.static_secret.as_deref(),
        Some(&b"from-file"[..])
    );
    assert_eq!(c.server.relay_ports, 40000..=40100);
}

#[test]
fn flag_errors_are_clear() {
    let e = relay_config(None, &flags(&["--static-secret", "s", "--cert", "c.pem"])).unwrap_err();
    assert!(e.to_string().contains("--cert needs --key"), "{e}");
    let e = relay_config(
        None,
        &flags(&[
            "--static-secret",
            "s",
            "--relay-ip",
            "127.0.0.1",
            "--relay-ip",
            "127.0.0.2",
        ]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("--relay-ip"), "{e}");
    let e = relay_config(None, &flags(&["--static-secret", ""])).unwrap_err();
    assert!(e.to_string().contains("--static-secret"), "{e}");
    let e = relay_config(
        None,
        &flags(&["--static-secret", "s", "--tcp", "127.0.0.1:9478"]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("127.0.0.1:9478"), "{e}");
    // Parse errors are clap's, naming the flag.
    for bad in [
        &["--allow-peer", "10.0.0.0/33"][..],
        &["--relay-ports", "9-1"],
        &["--udp", "localhost:1"],
        &["--metrics", "127.0.0.1:1", "--no-metrics"],
    ] {
        let e = match parse_flags::<RelayArgs>(std::iter::once("relay").chain(bad.iter().copied()))
        {
            Ok(_) => panic!("{bad:?} should not parse"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(bad[0]), "{e}");
    }
}

/// The configuration of a relay whose UDP, TCP (3478) and TLS (443) listeners are all on
/// `host` (an IPv4 address, or an IPv6 one in brackets), with `extra` flags after them.
fn listening_on(host: &str, extra: &[&str]) -> RelayConfig {
    let (udp, tls) = (format!("{host}:3478"), format!("{host}:443"));
    let mut args = vec![
        "--static-secret",
        "s",
        "--udp",
        &udp,
        "--tcp",
        &udp,
        "--tls",
        &tls,
    ];
    args.extend_from_slice(extra);
    relay_config(None, &flags(&args)).unwrap()
}

#[test]
fn the_relay_address_follows_one_specific_listener_address() {
    let c = listening_on("10.0.0.5", &[]);
    assert_eq!(c.server.relay_ipv4, Some(Ipv4Addr::new(10, 0, 0, 5)));
    assert!(config_warnings_are_quiet(&c));
    // An IPv6 listener: relay on IPv6 only.
    let c = listening_on("[2001:db8::5]", &[]);
    assert_eq!(c.server.relay_ipv4, None);
    assert_eq!(c.server.relay_ipv6, Some("2001:db8::5".parse().unwrap()));
    // Several addresses, or the wildcard: the default stays (and warns).
    let c = listening_on("0.0.0.0", &[]);
    assert_eq!(c.server.relay_ipv4, Some(Ipv4Addr::LOCALHOST));
    assert!(!config_warnings_are_quiet(&c));
    // A given relay address wins.
    let c = listening_on("10.0.0.5", &["--relay-ip", "203.0.113.9"]);
    assert_eq!(c.server.relay_ipv4, Some(Ipv4Addr::new(203, 0, 113, 9)));
}

/// Whether the relay configured by `c` lets allocations reach `peer` on `port`.
fn permits(c: &RelayConfig, peer: &str, port: u16) -> bool {
    c.server.peer_policy.permits(peer.parse().unwrap(), port)
}

fn config_warnings_are_quiet(c: &RelayConfig) -> bool {
    !warnings(c)
        .iter()
        .any(|w| w.contains("relaying on a loopback"))
}

/// The relay configured by `--fast-path xdp` and `args`, without a file.
fn xdp_config(args: &[&str]) -> anyhow::Result<RelayConfig> {
    let xdp = ["--static-secret", "s", "--fast-path", "xdp"];
    relay_config(None, &flags(&[&xdp[..], args].concat()))
}

#[test]
fn fast_path_settings() {
    let c = xdp_config(&["--xdp-interface", "eth1"]).unwrap();
    assert_eq!(
        c.fast_path,
        Some(FastPathConfig {
            interface: "eth1".into(),
            mode: FastPathMode::Native
        })
    );
    let c = xdp_config(&["--xdp-interface", "v0", "--xdp-mode", "generic"]).unwrap();
    assert_eq!(c.fast_path.unwrap().mode, FastPathMode::Generic);
    let e = xdp_config(&[]).unwrap_err();
    assert!(format!("{e:#}").contains("--xdp-interface"), "{e:#}");
    assert_eq!(
        fast_path(Some("off"), Some("eth0".into()), None).unwrap(),
        None
    );
    assert!(fast_path(Some("dpdk"), None, None).is_err());
    assert!(fast_path(Some("xdp"), Some("eth0".into()), Some("hw")).is_err());
    assert_eq!(
        relay_config(None, &flags(&["--static-secret", "s"]))
            .unwrap()
            .fast_path,
        None
    );
}

#[test]
fn port_ranges() {
    assert_eq!(parse_port_range("49152-65535"), Ok(49152..=65535));
    assert_eq!(parse_port_range("5000"), Ok(5000..=5000));
    assert!(parse_port_range("0-10").is_err());
    assert!(parse_port_range("10-9").is_err());
    assert!(parse_port_range("1-70000").is_err());
    assert!(parse_port_range("a-b").is_err());
}

#[test]
fn example_file_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("relay.example.toml");
    // The example keeps its secret commented out, so it needs one from a flag.
    let c = relay_config(Some(&path), &flags(&["--static-secret", "s"]))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The example documents the defaults; spot-check that it says what the code does.
    let d = RelayConfig::default();
    assert_eq!(c.udp, d.udp);
    assert_eq!(c.server.relay_ports, d.server.relay_ports);
    assert_eq!(c.server.lifetimes.channel, d.server.lifetimes.channel);
    assert_eq!(c.drain_timeout, d.drain_timeout);
    assert_eq!(c.stream_frame_timeout, d.stream_frame_timeout);
    assert_eq!(
        c.max_stream_connections_per_ip,
        d.max_stream_connections_per_ip
    );
    assert!(c.server.auth.static_secret.is_some());

    // Every key is documented (set or commented out).
    let text = std::fs::read_to_string(&path).unwrap();
    for key in [
        "udp",
        "tcp",
        "tls",
        "tls_fallback_port",
        "metrics",
        "shards",
        "drain_timeout_secs",
        "stream_idle_timeout_secs",
        "stream_frame_timeout_secs",
        "max_stream_connections",
        "max_stream_connections_per_ip",
        "socket_buffer",
        "fast_path",
        "xdp_interface",
        "xdp_mode",
        "[tls_cert]",
        "cert",
        "key",
        "self_signed_names",
        "[auth]",
        "realm",
        "static_secret",
        "[[auth.app_keys]]",
        "app_id",
        "key_id",
        "secret",
        "not_after",
        "[relay]",
        "ipv4",
        "ipv6",
        "ports",
        "max_allocations",
        "user_quota",
        "software",
        "[peers]",
        "allow",
        "[lifetimes]",
        "allocation_default_secs",
        "allocation_max_secs",
        "permission_secs",
        "channel_secs",
        "nonce_secs",
        "channel_cooldown_secs",
    ] {
        let documented = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l == key || l.starts_with(&format!("{key} = "))
        });
        assert!(documented, "relay.example.toml does not document {key}");
    }
}

#[test]
fn warns_about_likely_mistakes() {
    let c = relay_config(
        None,
        &flags(&["--static-secret", "s", "--udp", "0.0.0.0:3478"]),
    )
    .unwrap();
    let w = warnings(&c);
    assert_eq!(w.len(), 2, "{w:?}");
    let c = relay_config(
        None,
        &flags(&["--static-secret", "s", "--allow-peer", "127.0.0.1"]),
    )
    .unwrap();
    assert!(warnings(&c).is_empty());
}

/// The `[control]` section and the control flags are one set of settings: the file's values
/// arrive in the link, a flag replaces the file's value, and bad values name the key.
#[test]
fn control_settings_from_file_and_flags() {
    use cloudproxy_api::{Pool, Region, Transport};
    let file = "udp = [\"127.0.0.1:3478\"]\n[control]\nurl = \"http://127.0.0.1:8480\"\n\
                key = \"k\"\nedge_id = \"jp-1\"\nregion = \"japan\"\npool = \"dynamic\"\n\
                capacity_kbps = 5000\npublic = [\"tls:203.0.113.7:443\"]\n\
                sync_interval_secs = 7\n";
    let c = from_file(file, &[]).unwrap();
    let link = c.control.expect("a control link");
    assert_eq!(
        (link.region, link.pool, link.capacity_kbps),
        (Region::Japan, Pool::Dynamic, 5000)
    );
    assert_eq!(link.edge_id, "jp-1");
    assert_eq!(
        link.public,
        [(Transport::Tls, "203.0.113.7:443".parse().unwrap())]
    );
    assert_eq!(link.sync_interval, Duration::from_secs(7));

    let c = from_file(file, &["--region", "europe", "--edge-id", "eu-1"]).unwrap();
    let link = c.control.unwrap();
    assert_eq!(
        (link.region, link.edge_id.as_str()),
        (Region::Europe, "eu-1")
    );
    assert_eq!(link.pool, Pool::Dynamic, "the file's pool stays");

    let e = file_error("udp = [\"127.0.0.1:3478\"]\n[control]\nkey = \"k\"\nregion = \"mars\"\n");
    assert!(e.contains("region") && e.contains("japan"), "{e}");
    let e =
        file_error("udp = [\"127.0.0.1:3478\"]\n[control]\nkey = \"k\"\nsync_interval_secs = 0\n");
    assert!(e.contains("control.sync_interval_secs"), "{e}");
    // Without any control setting there is no link.
    assert!(from_file(
        "udp = [\"127.0.0.1:3478\"]\n[auth]\nstatic_secret = \"s\"\n",
        &[]
    )
    .unwrap()
    .control
    .is_none());
}
