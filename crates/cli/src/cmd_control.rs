//! `cloudproxy control`: the control-plane HTTP API (applications, Force-mode enablement,
//! regions and edges, the allow-list table) on SQLite by default or PostgreSQL.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use cloudproxy_control::{Control, ControlConfig};

use crate::failure::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct ControlArgs {
    /// HTTP API listener, IP:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8480")]
    listen: SocketAddr,
    /// `sqlite:PATH` (created when missing) or `postgres://USER:PASS@HOST/DB`.
    #[arg(
        long,
        value_name = "URL",
        default_value = "sqlite:cloudproxy-control.db"
    )]
    database: String,
    /// The operator's bearer key (16–256 printable characters). Default: generated and printed.
    #[arg(long, env = "CLOUDPROXY_OPERATOR_KEY", hide_env_values = true)]
    operator_key: Option<String>,
    /// The relays' key (sync, leases, usage, heartbeats, registration only). Default: relays
    /// use the operator's key.
    #[arg(long, env = "CLOUDPROXY_RELAY_KEY", hide_env_values = true)]
    relay_key: Option<String>,
    /// How long an admission lease lives without renewal (1s to 1h): a crashed relay's
    /// allocations stop counting against quotas within this time.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = up_to_an_hour)]
    lease_ttl: Duration,
    /// Time without a heartbeat (1s to 1h) after which a relay leaves the Auto-mode proxy list.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = up_to_an_hour)]
    heartbeat_timeout: Duration,
}

/// A duration from one second to one hour.
fn up_to_an_hour(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(s)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err(format!("{s:?}: must be from 1s to 1h"));
    }
    Ok(d)
}

pub(crate) fn run(args: ControlArgs) -> Result<(), Failure> {
    let (rt, mut term, mut int) = crate::signals::install().map_err(Failure::Runtime)?;
    let control = Control::start(ControlConfig {
        listen: args.listen,
        database: args.database.clone(),
        operator_key: args.operator_key,
        relay_key: args.relay_key,
        lease_ttl: args.lease_ttl,
        heartbeat_timeout: args.heartbeat_timeout,
        ..ControlConfig::default()
    })
    .with_context(|| {
        format!(
            "starting the control plane on {} with {}",
            args.listen, args.database
        )
    })
    .map_err(Failure::Runtime)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "control http://{}", control.local_addr());
    if control.operator_key_generated() {
        let _ = writeln!(
            out,
            "operator key (generated for this run): {}",
            control.operator_key()
        );
    }
    let _ = out.flush();
    drop(out);
    tracing::info!(
        "control plane at http://{}/v1 (OpenAPI at /openapi.json, allow-list at /allowlist)",
        control.local_addr()
    );
    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    });
    control.stop();
    Ok(())
}
