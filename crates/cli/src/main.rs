//! The `cloudproxy` command.
//!
//! * `cloudproxy relay [--config FILE] [flags]`: runs the TURN relay until SIGINT (stop now) or
//!   SIGTERM (drain, then stop).
//! * `cloudproxy creds --secret S --id ID --ttl SECS`: prints TURN REST credentials and a
//!   WebRTC `iceServers` entry.
//!
//! Exit status: 0 on success (including a signal-initiated stop), 2 for usage and
//! configuration errors, 1 for everything else.

mod cmd_admin;
mod cmd_bench;
mod cmd_control;
mod cmd_demo;
mod cmd_diagnose;
mod cmd_join;
mod cmd_media;
mod cmd_token;
mod cmd_up;
mod config;
mod creds;
mod failure;
mod logging;
mod signals;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cloudproxy_relay::tls::{self, TlsIdentity};
use cloudproxy_relay::{BoundAddrs, Relay, RelayConfig};

use crate::config::RelayArgs;
use crate::creds::CredsArgs;
use crate::failure::Failure;
use crate::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "cloudproxy",
    version,
    about = "Self-hostable TURN relay (RFC 8656)"
)]
struct Cli {
    /// Log line format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. info, debug or cloudproxy_relay=debug,warn. RUST_LOG overrides it.
    #[arg(long, global = true, value_name = "FILTER", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane, a relay and a media service together, with a ready-to-use app.
    Up(cmd_up::UpArgs),
    /// Run the TURN relay.
    Relay(RelayArgs),
    /// Print TURN REST credentials and a WebRTC iceServers entry.
    Creds(CredsArgs),
    /// Run the reference media service (a UDP channel forwarder).
    Media(cmd_media::MediaArgs),
    /// Mint a user token for an app: TURN credential and media-service credential in one.
    Token(cmd_token::TokenArgs),
    /// Join a channel through the client SDK in a cloud-proxy mode, print events as JSON lines.
    Join(cmd_join::JoinArgs),
    /// Check every path from this network (direct UDP, relay UDP/TCP/TLS) and recommend a mode.
    Diagnose(cmd_diagnose::DiagnoseArgs),
    /// Start a media service and a relay locally and have two clients talk, one through the proxy.
    Demo(cmd_demo::DemoArgs),
    /// Load-test any TURN server (standard TURN only) and report throughput, loss and latency.
    Bench(cmd_bench::BenchArgs),
    /// A plain batched UDP forwarder (no TURN): the throughput ceiling for `bench --raw`.
    #[command(hide = true)]
    BenchForward(cmd_bench::ForwardArgs),
    /// Run the control plane: apps, Force-mode enablement, regions, edges, the allow-list.
    Control(cmd_control::ControlArgs),
    /// Manage the control plane over its API: owners, apps, requests, regions, edges, allow-list.
    Admin(cmd_admin::AdminArgs),
}

fn main() -> ExitCode {
    // Prints help/version (exit 0) or a usage error (exit 2) itself.
    let cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::from(1)
        }
    }
}

/// Like anyhow's `{:#}` (each cause after a colon), but skips a cause whose text its parent
/// already printed: several error types include their source in their own message.
fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(cli: Cli) -> Result<(), Failure> {
    logging::init(cli.log_format, &cli.log_level).map_err(Failure::Usage)?;
    match cli.command {
        Command::Relay(args) => relay(&args),
        Command::Creds(args) => creds(&args),
        Command::Media(args) => cmd_media::run(args),
        Command::Token(args) => cmd_token::run(args),
        Command::Join(args) => cmd_join::run(args),
        Command::Diagnose(args) => cmd_diagnose::run(args),
        Command::Demo(args) => cmd_demo::run(args),
        Command::Up(args) => cmd_up::run(args),
        Command::Bench(args) => cmd_bench::run(args),
        Command::BenchForward(args) => cmd_bench::forward(args),
        Command::Control(args) => cmd_control::run(args),
        Command::Admin(args) => cmd_admin::run(args),
    }
}

fn creds(args: &CredsArgs) -> Result<(), Failure> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")
        .map_err(Failure::Runtime)?
        .as_secs();
    let creds = creds::mint(args, now).map_err(Failure::Usage)?;
    std::io::stdout()
        .lock()
        .write_all(creds.render(args.json).as_bytes())
        .context("writing to stdout")
        .map_err(Failure::Runtime)
}

fn relay(args: &RelayArgs) -> Result<(), Failure> {
    let config = config::relay_config(args.config.as_deref(), args).map_err(Failure::Usage)?;
    // Unreadable or mismatched PEM files are configuration errors: catch them before binding.
    if !config.tls.is_empty() {
        if let TlsIdentity::Pem { .. } = &config.tls_identity {
            tls::server_config(&config.tls_identity).map_err(|e| Failure::Usage(e.into()))?;
        }
    }
    for w in config::warnings(&config) {
        tracing::warn!("{w}");
    }
    let mut config = config;
    if config.server.auth.static_secret.is_none()
        && config.server.auth.app_keys.is_empty()
        && config.control.is_none()
    {
        // Embedded defaults: a relay that refuses everyone is of no use to a newcomer, and a
        // well-known default secret would be an open door. A random one per run is neither.
        let secret = generated_secret();
        eprintln!(
            "no credentials configured: generated a static secret for this run: {secret}\n\
             mint a credential with: cloudproxy creds --secret {secret} --id demo --ttl 3600\n\
             (set --static-secret, CLOUDPROXY_STATIC_SECRET or [auth] in a config file to keep one)"
        );
        tracing::warn!("no credentials configured: using a generated static secret");
        config.server.auth.static_secret = Some(secret.into_bytes());
    }
    run_relay(config).map_err(Failure::Runtime)
}

/// Starts the relay, announces its listeners and waits for a signal.
///
/// SIGINT stops at once. SIGTERM drains (no new allocations; existing ones keep flowing) for
/// the drain timeout, cut short by a second SIGTERM or a SIGINT, then stops.
fn run_relay(config: RelayConfig) -> anyhow::Result<()> {
    let drain_timeout = config.drain_timeout;
    let (rt, mut term, mut int) = crate::signals::install()?;

    let relay = Relay::start(config).context("starting the relay")?;
    announce(relay.local_addrs());

    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => {
                relay.drain();
                tracing::info!("SIGTERM: draining for {} s", drain_timeout.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(drain_timeout) => {
                        tracing::info!("drain timeout over");
                    }
                    _ = term.recv() => tracing::info!("second SIGTERM: stopping now"),
                    _ = int.recv() => tracing::info!("SIGINT: stopping now"),
                }
            }
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    });
    relay.stop();
    tracing::info!("stopped");
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "cloudproxy",
            "--log-format",
            "json",
            "relay",
            "--udp",
            "127.0.0.1:0",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(cli.log_level, "debug");
        assert!(matches!(cli.command, Command::Relay(_)));
    }

    #[test]
    fn error_rendering_skips_repeated_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "in use");
        let e = anyhow::Error::new(io)
            .context("cannot bind UDP listener on 127.0.0.1:1: in use")
            .context("starting the relay");
        assert_eq!(
            render_error(&e),
            "starting the relay: cannot bind UDP listener on 127.0.0.1:1: in use"
        );
    }
}
