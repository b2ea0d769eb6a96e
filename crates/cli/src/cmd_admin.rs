//! `cloudproxy admin …`: the operator's and app owners' command line for the control plane's
//! HTTP API (`cloudproxy control`): owners, apps and their secrets, Force-mode enablement
//! requests, regions, edges, the allow-list table and usage.
//!
//! Each command is one API call. Output is a compact table (or label/value block) for people,
//! or with `--json` the response body exactly as the API sent it. Enum flags take the API's
//! wire spellings (`force_tcp`, `north_america`, `2k_plus`) or the same with hyphens.
//!
//! Here: the flags and `run`. `http` sends the requests and turns the API's error shape into
//! messages; `apps`, `requests` and `edges` call and render each resource; `table` aligns
//! columns; `parse` reads flag values.

mod apps;
mod edges;
mod http;
mod parse;
mod requests;
mod table;

use std::net::SocketAddr;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use cloudproxy_api::{Mode, Pool, QualityTier, Region, Sdk, Transport};
use reqwest::Method;
use serde::de::DeserializeOwned;

use self::http::{Api, Auth, NO_BODY};
pub(crate) use self::parse::WireParser;
use self::parse::{parse_day, parse_listener};
use self::table::{Column, Table};
use crate::failure::Failure;

const GLOBAL: &str = "Control plane";

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// The control plane's base URL (`http://HOST:PORT` or `https://…`).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_name = "URL",
        env = "CLOUDPROXY_CONTROL",
        default_value = "http://127.0.0.1:8480"
    )]
    control: String,
    /// Bearer key: the operator key `cloudproxy control` prints, or an app owner's key.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_name = "KEY",
        env = "CLOUDPROXY_KEY",
        hide_env_values = true
    )]
    key: Option<String>,
    /// Print the API's JSON response instead of a table.
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
    /// Accept any TLS certificate (the control plane's self-signed default). Gives up the
    /// server's identity.
    #[arg(long, global = true, help_heading = GLOBAL)]
    insecure: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// App owners and their API keys (operator).
    #[command(subcommand)]
    Owners(OwnersCommand),
    /// Applications and their secrets.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Force-mode enablement requests and their lifecycle.
    #[command(subcommand)]
    Requests(RequestsCommand),
    /// Regions' static-pool capacity and reservations (operator).
    #[command(subcommand)]
    Regions(RegionsCommand),
    /// Relay registration (operator).
    #[command(subcommand)]
    Edges(EdgesCommand),
    /// The public allow-list table: every region, or one region in a firewall's format.
    Allowlist(AllowlistArgs),
    /// An app's relayed usage per day, mode and quality.
    Usage(UsageArgs),
}

#[derive(Debug, Subcommand)]
enum OwnersCommand {
    /// Create an owner; prints its first API key once.
    Create {
        name: String,
    },
    List,
    /// Issue another API key for an owner (shown once).
    Key {
        #[arg(value_name = "OWNER_ID")]
        owner_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum AppsCommand {
    /// Create an app; prints the App ID, key id and secret once.
    Create {
        name: String,
        /// Operator only: the owner the app belongs to (default: the caller).
        #[arg(long, value_name = "OWNER_ID")]
        owner: Option<String>,
    },
    List,
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
    /// Stop accepting the app's credentials (operator).
    Suspend {
        id: String,
    },
    /// Accept the app's credentials again (operator).
    Resume {
        id: String,
    },
    /// Issue a new secret; current keys keep working for the grace period.
    Rotate {
        id: String,
        /// How long the current keys keep working (`1d`, `12h`; server default: 1 day).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
        grace: Option<std::time::Duration>,
    },
}

#[derive(Debug, Subcommand)]
enum RequestsCommand {
    /// File an enablement request for an app.
    Submit(SubmitArgs),
    /// All requests the key may see, or one app's.
    List {
        #[arg(value_name = "APP_ID")]
        app_id: Option<String>,
    },
    Show {
        id: String,
    },
    /// Approve: reserves bandwidth and activates the request (at once, or at
    /// --effective-at), or rejects it when the region lacks capacity.
    Approve {
        id: String,
        /// When the enablement takes effect: YYYY-MM-DD (00:00 UTC) or Unix seconds.
        /// Default: at once.
        #[arg(long, value_name = "WHEN", value_parser = parse::parse_when)]
        effective_at: Option<i64>,
    },
    Reject {
        id: String,
        /// Why, for the applicant.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// approved → active, before the approval's effective date (approval activates on its
    /// own; an active request stays active).
    Activate {
        id: String,
    },
    /// active → suspended (keeps the reservation).
    Suspend {
        id: String,
    },
    /// suspended → active.
    Resume {
        id: String,
    },
    /// Ends the request and releases its reservation.
    Revoke {
        id: String,
    },
}

#[derive(Debug, Args)]
struct SubmitArgs {
    #[arg(value_name = "APP_ID")]
    app_id: String,
    /// Where the app's Force-mode users are.
    #[arg(long, value_parser = WireParser::<Region>::new())]
    region: Region,
    /// The client SDK the app uses.
    #[arg(long, value_parser = WireParser::<Sdk>::new())]
    sdk: Sdk,
    /// e.g. "1:1 video call".
    #[arg(long, value_name = "TEXT")]
    use_case: String,
    /// Concurrent channels at most.
    #[arg(long, value_name = "N")]
    channels: u32,
    /// Users per channel at most, proxy users included.
    #[arg(long, value_name = "N")]
    users: u32,
    /// Users per channel that go through the proxy, at most.
    #[arg(long, value_name = "N")]
    proxy_users: u32,
    /// Video quality tier; sets the bandwidth budgeted per proxy user.
    #[arg(long, value_parser = WireParser::<QualityTier>::new())]
    quality: QualityTier,
    /// The Force mode to enable.
    #[arg(long, value_parser = WireParser::<Mode>::new())]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum RegionsCommand {
    List,
}

#[derive(Debug, Subcommand)]
enum EdgesCommand {
    /// Register or replace a relay. Changes to static relays publish a new allow-list.
    Put(EdgePutArgs),
    List {
        /// Only this region's relays.
        #[arg(long, value_parser = WireParser::<Region>::new())]
        region: Option<Region>,
    },
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
    /// Show, or with CIDRs set, the address blocks the relay key may publish this edge's
    /// listeners in (`203.0.113.0/28`, `2001:db8::/48`). `--none` takes them all away.
    Cidrs {
        id: String,
        #[arg(value_name = "CIDR")]
        cidrs: Vec<String>,
        /// Set an empty list: the relay key may not register this edge.
        #[arg(long, conflicts_with = "cidrs")]
        none: bool,
    },
}

#[derive(Debug, Args)]
struct EdgePutArgs {
    /// What the relay calls itself: 1 to 64 of A-Z a-z 0-9 _ . -
    id: String,
    #[arg(long, value_parser = WireParser::<Region>::new())]
    region: Region,
    /// static relays serve the Force modes and are published in the allow-list; dynamic
    /// relays serve Auto and never are.
    #[arg(long, value_parser = WireParser::<Pool>::new())]
    pool: Pool,
    /// Relayed bandwidth this relay can carry, kbit/s.
    #[arg(long, value_name = "N")]
    capacity_kbps: u64,
    /// A public listener, TRANSPORT:IP:PORT with TRANSPORT udp, tcp or tls
    /// (`udp:203.0.113.10:3478`, `tls:[2001:db8::1]:443`); repeatable.
    #[arg(long = "listen", value_name = "LISTENER", required = true, value_parser = parse_listener)]
    listeners: Vec<(Transport, SocketAddr)>,
}

#[derive(Debug, Args)]
struct AllowlistArgs {
    /// One region (default: every region, as a table).
    #[arg(value_parser = WireParser::<Region>::new())]
    region: Option<Region>,
    /// json, csv, nftables or iptables; the latter three print the export as the API renders
    /// it and need a REGION.
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
    /// Every version of the region's table with its changes and effective dates.
    #[arg(long)]
    history: bool,
}

#[derive(Debug, Args)]
struct UsageArgs {
    #[arg(value_name = "APP_ID")]
    app_id: String,
    /// First day, YYYY-MM-DD (UTC).
    #[arg(long, value_name = "DAY", value_parser = parse_day)]
    from: Option<String>,
    /// Last day, YYYY-MM-DD (UTC).
    #[arg(long, value_name = "DAY", value_parser = parse_day)]
    to: Option<String>,
    /// `table` (default) or `csv`: the API's CSV export (`--json` prints the JSON answer).
    #[arg(long, value_name = "FORMAT", value_parser = ["table", "csv"])]
    format: Option<String>,
    /// Earlier spelling of `--format csv`.
    #[arg(long, hide = true, conflicts_with = "format")]
    csv: bool,
}

pub(crate) fn run(args: AdminArgs) -> Result<(), Failure> {
    let api = Api::new(&args.control, args.key, args.insecure)?;
    let out = Out { json: args.json };
    match args.command {
        AdminCommand::Owners(c) => apps::owners(&api, &out, c),
        AdminCommand::Apps(c) => apps::apps(&api, &out, c),
        AdminCommand::Requests(c) => requests::requests(&api, &out, c),
        AdminCommand::Regions(RegionsCommand::List) => {
            let body = api.call(Method::GET, "/v1/regions", &[], NO_BODY, Auth::Key)?;
            out.list(&body, edges::REGIONS, "no regions")
        }
        AdminCommand::Edges(c) => edges::edges(&api, &out, c),
        AdminCommand::Allowlist(a) => edges::allowlist(&api, &out, a),
        AdminCommand::Usage(a) => apps::usage(&api, &out, a),
    }
}

/// Where output goes: the response itself (`--json`) or its human rendering.
struct Out {
    json: bool,
}

impl Out {
    /// Prints a list endpoint's answer: `body` (`--json`), or its rows as a table of
    /// `columns` (`empty` when there are none).
    fn list<T: DeserializeOwned>(
        &self,
        body: &str,
        columns: &[Column<T>],
        empty: &str,
    ) -> Result<(), Failure> {
        self.emit(body, |rows: &Vec<T>| {
            or_none(&Table::of(rows, columns), empty)
        })
    }

    /// Prints `body` (`--json`) or `human` of it read as the API's type `T`.
    fn emit<T: DeserializeOwned>(
        &self,
        body: &str,
        human: impl FnOnce(&T) -> String,
    ) -> Result<(), Failure> {
        if self.json {
            if !body.is_empty() {
                println!("{}", body.trim_end());
            }
            return Ok(());
        }
        let value: T = serde_json::from_str(body).map_err(|e| {
            Failure::Runtime(anyhow!(
                "the control plane's answer does not read as the API's JSON: {e}"
            ))
        })?;
        // Cells are already escaped; this catches text rendered outside a table.
        print!("{}", table::terminal_safe(&human(&value), true));
        Ok(())
    }

    /// For answers without a body (204): a line for people, nothing for scripts.
    fn done(&self, message: String) -> Result<(), Failure> {
        if !self.json {
            println!("{}", table::terminal_safe(&message, true));
        }
        Ok(())
    }
}

fn app_path(id: &str, rest: &str) -> String {
    format!("/v1/apps/{}{rest}", seg(id))
}

fn or_none(t: &Table, none: &str) -> String {
    if t.is_empty() {
        format!("{none}\n")
    } else {
        t.render()
    }
}

/// An id as one path segment: ids are hex or `A-Z a-z 0-9 _ . -`, but a mistyped `/` or
/// `?` must not reach another path.
fn seg(id: &str) -> String {
    let mut s = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_segment() {
        assert_eq!(seg("ab12"), "ab12");
        assert_eq!(seg("a/../b?x"), "a%2F..%2Fb%3Fx");
        assert_eq!(app_path("a b", "/rotate"), "/v1/apps/a%20b/rotate");
    }
}
