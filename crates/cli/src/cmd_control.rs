//! `cloudproxy control`: the control-plane HTTP API (applications, Force-mode enablement,
//! regions and edges, the allow-list table) on SQLite by default or PostgreSQL.

use std::io::Write as _;
use std::net::SocketAddr;

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
    /// Seconds an admission lease lives without renewal: a crashed relay's allocations stop
    /// counting against quotas within this time.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_ttl: u64,
    /// Seconds without a heartbeat after which a relay leaves the Auto-mode proxy list.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    heartbeat_timeout: u64,
}

pub(crate) fn run(args: ControlArgs) -> Result<(), Failure> {
    let (rt, mut term, mut int) = crate::signals::install().map_err(Failure::Runtime)?;
    let control = Control::start(ControlConfig {
        listen: args.listen,
        database: args.database.clone(),
        operator_key: args.operator_key,
        relay_key: args.relay_key,
        lease_ttl: std::time::Duration::from_secs(args.lease_ttl),
        heartbeat_timeout: std::time::Duration::from_secs(args.heartbeat_timeout),
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
