//! The `cloudproxy` command.
//!
//! Each command is a `cmd_*` module with its flags and `run`, e.g.:
//!
//! * `cloudproxy relay [--config FILE] [flags]`: runs the TURN relay until SIGINT (stop now) or
//!   SIGTERM (drain, then stop); SIGHUP reloads (`cmd_relay`; its configuration is
//!   `relay_config`).
//! * `cloudproxy creds --secret S --id ID --ttl SECS`: prints TURN REST credentials and a
//!   WebRTC `iceServers` entry (`cmd_creds`).
//!
//! Exit status: 0 on success (including a signal-initiated stop), 2 for usage and
//! configuration errors, 1 for everything else.

mod cmd_admin;
mod cmd_bench;
mod cmd_control;
mod cmd_creds;
mod cmd_demo;
mod cmd_diagnose;
mod cmd_join;
mod cmd_media;
mod cmd_relay;
mod cmd_token;
mod cmd_up;
mod duration;
mod failure;
mod logging;
mod media_follow;
mod relay_config;
mod signals;

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::failure::Failure;
use crate::logging::LogFormat;
use crate::relay_config::RelayArgs;

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
    /// Check the command line (for `relay`, the whole configuration: file, flags and
    /// certificate files) and exit 0 without running: for deployment files and CI.
    #[arg(long, global = true)]
    check: bool,
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
    Creds(cmd_creds::CredsArgs),
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
    /// The bench's UDP echo peer on its own (for `bench --remote-peer`).
    #[command(hide = true)]
    BenchEcho(cmd_bench::EchoArgs),
    /// Run the control plane: apps, Force-mode enablement, regions, edges, the allow-list.
    Control(cmd_control::ControlArgs),
    /// Manage the control plane over its API: owners, apps, requests, regions, edges, allow-list.
    Admin(cmd_admin::AdminArgs),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    ///
    /// bash: `cloudproxy completions bash > /etc/bash_completion.d/cloudproxy`;
    /// zsh: into a directory on $fpath as `_cloudproxy`;
    /// fish: `cloudproxy completions fish > ~/.config/fish/completions/cloudproxy.fish`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The one environment variable for a shared secret (`relay --static-secret`, `creds`,
/// `token` and `bench` `--secret`).
pub(crate) const SECRET_ENV: &str = "CLOUDPROXY_SECRET";

/// Test support: `argv` (the command's name first) parsed as the flags `A` of one command.
#[cfg(test)]
pub(crate) fn parse_flags<A: clap::Args>(
    argv: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<A, clap::Error> {
    #[derive(Parser)]
    struct Command<A: clap::Args> {
        #[command(flatten)]
        flags: A,
    }
    Command::<A>::try_parse_from(argv).map(|c| c.flags)
}

/// Earlier names of `SECRET_ENV`, still read (with a warning) so that existing scripts work.
const DEPRECATED_SECRET_ENVS: [&str; 3] = [
    "CLOUDPROXY_STATIC_SECRET",
    "CLOUDPROXY_APP_SECRET",
    "CLOUDPROXY_BENCH_SECRET",
];

/// Copies the first deprecated secret variable that is set into `SECRET_ENV` when that is
/// unset, and says so on stderr. Runs before anything else, while the process has one thread.
fn adopt_deprecated_env() {
    for old in DEPRECATED_SECRET_ENVS {
        let Some(value) = std::env::var_os(old) else {
            continue;
        };
        if std::env::var_os(SECRET_ENV).is_some() {
            eprintln!("warning: {old} is deprecated and ignored: {SECRET_ENV} is set");
        } else {
            eprintln!("warning: {old} is deprecated: use {SECRET_ENV}");
            std::env::set_var(SECRET_ENV, value);
        }
    }
}

fn main() -> ExitCode {
    adopt_deprecated_env();
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
    if cli.check {
        if let Command::Relay(args) = &cli.command {
            cmd_relay::check(args).map_err(Failure::Usage)?;
        }
        println!("ok");
        return Ok(());
    }
    match cli.command {
        Command::Relay(args) => cmd_relay::run(&args),
        Command::Creds(args) => cmd_creds::run(&args),
        Command::Media(args) => cmd_media::run(args),
        Command::Token(args) => cmd_token::run(args),
        Command::Join(args) => cmd_join::run(args),
        Command::Diagnose(args) => cmd_diagnose::run(args),
        Command::Demo(args) => cmd_demo::run(args),
        Command::Up(args) => cmd_up::run(args),
        Command::Bench(args) => cmd_bench::run(args),
        Command::BenchForward(args) => cmd_bench::forward(args),
        Command::BenchEcho(args) => cmd_bench::echo(args),
        Command::Control(args) => cmd_control::run(args),
        Command::Admin(args) => cmd_admin::run(args),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command();
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut cmd, "cloudproxy", &mut out);
            out.flush()
                .context("writing to stdout")
                .map_err(Failure::Runtime)
        }
    }
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

    /// Earlier spellings of renamed flags still parse (hidden from help), next to the new ones.
    #[test]
    fn earlier_flag_spellings_still_parse() {
        let parses = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("cloudproxy").chain(args.iter().copied()))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        // `cloudproxy diagnose` with its required flags, then `timeout`.
        let diagnose = |timeout: &[&'static str]| {
            let required = ["diagnose", "--media", "127.0.0.1:1", "--channel", "c"];
            let required = required.into_iter().chain(["--uid", "1", "--token", "t"]);
            required.chain(timeout.iter().copied()).collect::<Vec<_>>()
        };
        for args in [
            &["up", "--turn", "127.0.0.1:3478"][..],
            &["up", "--udp", "127.0.0.1:3478", "--tcp", "127.0.0.1:3479"],
            &diagnose(&["--timeout", "4"]),
            &diagnose(&["--attempt-timeout", "1500ms"]),
            &["admin", "usage", "app1", "--csv"],
            &["admin", "usage", "app1", "--format", "csv"],
            &["admin", "apps", "rotate", "app1", "--grace", "86400"],
            &["admin", "apps", "rotate", "app1", "--grace", "12h"],
            &["relay", "--drain-timeout", "30"],
            &["relay", "--drain-timeout", "500ms"],
            &["control", "--lease-ttl", "30", "--heartbeat-timeout", "1m"],
            &["creds", "--secret", "s", "--id", "alice"],
        ] {
            assert_eq!(parses(args), Ok(()), "{args:?}");
        }
        for (args, why) in [
            (&["admin", "usage", "a", "--format", "xml"][..], "xml"),
            (
                &["admin", "usage", "a", "--csv", "--format", "csv"],
                "--csv",
            ),
            (&["control", "--lease-ttl", "2h"], "1s to 1h"),
        ] {
            let e = parses(args).unwrap_err();
            assert!(e.contains(why), "{args:?}: {e}");
        }
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
