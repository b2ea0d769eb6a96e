//! `cloudproxy relay`: the TURN relay, until a signal.
//!
//! - **SIGTERM** drains: new Allocates get 508, existing allocations keep flowing, and the
//!   process exits as soon as the last one ends, or when the drain timeout passes, whichever
//!   comes first (at once when there is none). A second SIGTERM or a SIGINT stops at once.
//! - **SIGINT** stops at once.
//! - **SIGHUP** reloads: the config file (and the same flags) are read again, and the TLS
//!   certificate and key, the credentials, the peer policy and the quotas take effect without
//!   dropping a session. A config that does not parse, or a certificate that does not load,
//!   is refused with an error line; the previous configuration stays in force. Settings that
//!   only a restart can change are named in a warning. Each reload is logged and counted in
//!   `cloudproxy_config_reloads_total{outcome}`.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use cloudproxy_relay::tls::{self, TlsIdentity};
use cloudproxy_relay::{BoundAddrs, Relay, RelayConfig};

use crate::failure::Failure;
use crate::relay_config::{self, RelayArgs};

/// How often a draining relay looks whether its last allocation has ended.
const DRAIN_POLL: Duration = Duration::from_millis(50);

pub(crate) fn run(args: &RelayArgs) -> Result<(), Failure> {
    let mut config = load(args).map_err(Failure::Usage)?;
    let mut generated = None;
    if has_no_credentials(&config) {
        // Embedded defaults: a relay that refuses everyone is of no use to a newcomer, and a
        // well-known default secret would be an open door. A random one per run is neither.
        let secret = generated_secret();
        eprintln!(
            "no credentials configured: generated a static secret for this run: {secret}\n\
             mint a credential with: cloudproxy creds --secret {secret} --id demo --ttl 3600\n\
             (set --static-secret, CLOUDPROXY_SECRET or [auth] in a config file to keep one)"
        );
        tracing::warn!("no credentials configured: using a generated static secret");
        config.server.auth.static_secret = Some(secret.clone().into_bytes());
        generated = Some(secret);
    }
    run_relay(config, args, generated).map_err(Failure::Runtime)
}

/// `relay --check`: loads and checks the configuration as a start would, binding nothing.
pub(crate) fn check(args: &RelayArgs) -> anyhow::Result<()> {
    load(args).map(drop)
}

/// No static secret, no app key and no control plane: nobody could authenticate.
fn has_no_credentials(config: &RelayConfig) -> bool {
    config.server.auth.static_secret.is_none()
        && config.server.auth.app_keys.is_empty()
        && config.control.is_none()
}

/// The configuration from the file and flags, checked, with its warnings logged.
fn load(args: &RelayArgs) -> anyhow::Result<RelayConfig> {
    let config = relay_config::relay_config(args.config.as_deref(), args)?;
    // Unreadable or mismatched PEM files are configuration errors: catch them before binding.
    if !config.tls.is_empty() {
        if let TlsIdentity::Pem { .. } = &config.tls_identity {
            tls::certified_key(&config.tls_identity)?;
        }
    }
    for w in relay_config::warnings(&config) {
        tracing::warn!("{w}");
    }
    Ok(config)
}

/// Starts the relay, announces its listeners and serves until SIGINT or the end of a drain.
fn run_relay(
    config: RelayConfig,
    args: &RelayArgs,
    generated: Option<String>,
) -> anyhow::Result<()> {
    let drain_timeout = config.drain_timeout;
    let (rt, mut term, mut int) = crate::signals::install()?;
    let mut hup = crate::signals::hangup(&rt)?;

    let relay = Relay::start(config).context("starting the relay")?;
    announce(relay.local_addrs());

    rt.block_on(async {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping");
                    return;
                }
                _ = hup.recv() => reload(&relay, args, generated.as_deref()),
            }
        }
        relay.drain();
        tracing::info!(
            allocations = relay.allocations(),
            "SIGTERM: draining (new allocations get 508) until the last allocation ends, at \
             most {} s",
            drain_timeout.as_secs()
        );
        let deadline = tokio::time::Instant::now() + drain_timeout;
        let mut poll = tokio::time::interval(DRAIN_POLL);
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    if relay.allocations() <= 0 {
                        tracing::info!("drained: no allocation left");
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::info!(
                        allocations = relay.allocations(),
                        "drain timeout over"
                    );
                    break;
                }
                _ = term.recv() => {
                    tracing::info!("second SIGTERM: stopping now");
                    break;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping now");
                    break;
                }
                _ = hup.recv() => reload(&relay, args, generated.as_deref()),
            }
        }
    });
    relay.stop();
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: reads the configuration again and applies what can change while running.
fn reload(relay: &Relay, args: &RelayArgs, generated: Option<&str>) {
    let source = args
        .config
        .as_deref()
        .map_or_else(|| "the flags".to_owned(), |p| p.display().to_string());
    let mut config = match load(args) {
        Ok(c) => c,
        Err(e) => {
            relay.metrics().config_reloaded(false);
            tracing::error!(
                "SIGHUP: reload refused, the previous configuration stays in force: {}",
                crate::render_error(&e)
            );
            return;
        }
    };
    if let Some(secret) = generated.filter(|_| has_no_credentials(&config)) {
        // Still no credentials configured: keep this run's generated secret.
        config.server.auth.static_secret = Some(secret.as_bytes().to_vec());
    }
    match relay.reload(config) {
        Ok(done) => {
            if !done.needs_restart.is_empty() {
                tracing::warn!(
                    "SIGHUP: these settings changed but take effect only after a restart: {}",
                    done.needs_restart.join(", ")
                );
            }
            tracing::info!(
                certificate_reloaded = done.certificate,
                allocations = relay.allocations(),
                "SIGHUP: configuration reloaded from {source}"
            );
        }
        Err(e) => tracing::error!(
            "SIGHUP: reload refused, the previous configuration stays in force: {e}"
        ),
    }
}

/// One line per listener on stdout (`udp 127.0.0.1:3478`), for scripts and tests, and in the
/// log.
fn announce(addrs: &BoundAddrs) {
    let mut lines = String::new();
    let listeners = [
        ("udp", &addrs.udp),
        ("tcp", &addrs.tcp),
        ("tls", &addrs.tls),
    ];
    for (kind, list) in listeners {
        for a in list {
            lines.push_str(&format!("{kind} {a}\n"));
            tracing::info!("listening: {kind} {a}");
        }
    }
    if let Some(a) = addrs.metrics {
        lines.push_str(&format!("metrics {a}\n"));
        tracing::info!("metrics at http://{a}/metrics");
    }
    let mut out = std::io::stdout().lock();
    // A closed stdout must not take the relay down.
    if let Err(e) = out.write_all(lines.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!("cannot print the listener addresses to stdout: {e}");
    }
}

/// 18 random bytes (144 bits) as 36 hex digits.
fn generated_secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
