//! `cloudproxy admin …`: the operator's and app owners' command line for the control plane's
//! HTTP API (`cloudproxy control`): owners, apps and their secrets, Force-mode enablement
//! requests, regions, edges, the allow-list table and usage.
//!
//! Each command is one API call. Output is a compact table (or label/value block) for people,
//! or with `--json` the response body exactly as the API sent it. Enum flags take the API's
//! wire spellings (`force_tcp`, `north_america`, `2k_plus`) or the same with hyphens.

mod http;
mod table;

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::net::SocketAddr;

use anyhow::anyhow;
use clap::builder::{PossibleValue, TypedValueParser};
use clap::{Args, Subcommand};
use cloudproxy_control::model::{Mode, Pool, QualityTier, Region, Sdk, Transport, Wire};
use reqwest::Method;
use serde_json::{json, Value};

use self::http::{Api, Auth};
use self::table::{date, fields, items, text, Table};
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
        /// How long the current keys keep working, in seconds (server default: 86400).
        #[arg(long, value_name = "SECS")]
        grace: Option<i64>,
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
    /// Approve: reserves bandwidth, or rejects the request when the region lacks capacity.
    Approve {
        id: String,
    },
    Reject {
        id: String,
        /// Why, for the applicant.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// approved → active.
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
    /// Print the API's CSV export instead of a table.
    #[arg(long)]
    csv: bool,
}

pub(crate) fn run(args: AdminArgs) -> Result<(), Failure> {
    let api = Api::new(&args.control, args.key, args.insecure)?;
    let out = Out { json: args.json };
    match args.command {
        AdminCommand::Owners(c) => owners(&api, &out, c),
        AdminCommand::Apps(c) => apps(&api, &out, c),
        AdminCommand::Requests(c) => requests(&api, &out, c),
        AdminCommand::Regions(RegionsCommand::List) => {
            let body = api.call(Method::GET, "/v1/regions", &[], None, Auth::Key)?;
            out.emit(&body, regions_table)
        }
        AdminCommand::Edges(c) => edges(&api, &out, c),
        AdminCommand::Allowlist(a) => allowlist(&api, &out, a),
        AdminCommand::Usage(a) => usage(&api, &out, a),
    }
}

/// Where output goes: the response itself (`--json`) or its human rendering.
struct Out {
    json: bool,
}

impl Out {
    fn emit(&self, body: &str, human: impl FnOnce(&Value) -> String) -> Result<(), Failure> {
        if self.json {
            if !body.is_empty() {
                println!("{}", body.trim_end());
            }
            return Ok(());
        }
        let value: Value = serde_json::from_str(body).map_err(|e| {
            Failure::Runtime(anyhow!(
                "the control plane answered something that is not JSON: {e}"
            ))
        })?;
        print!("{}", human(&value));
        Ok(())
    }

    /// For answers without a body (204): a line for people, nothing for scripts.
    fn done(&self, message: String) -> Result<(), Failure> {
        if !self.json {
            println!("{message}");
        }
        Ok(())
    }
}

fn owners(api: &Api, out: &Out, c: OwnersCommand) -> Result<(), Failure> {
    match c {
        OwnersCommand::Create { name } => {
            let body = json!({ "name": name });
            let body = api.call(Method::POST, "/v1/owners", &[], Some(&body), Auth::Key)?;
            out.emit(&body, |v| {
                let owner = &v["owner"];
                let id = text(owner, "id");
                format!(
                    "{}\nThe API key is shown only once: store it now \
                     (`cloudproxy admin owners key {id}` issues another).\n",
                    fields(&[
                        ("Owner ID", id.clone()),
                        ("Name", text(owner, "name")),
                        ("API key", text(v, "api_key")),
                    ])
                )
            })
        }
        OwnersCommand::List => {
            let body = api.call(Method::GET, "/v1/owners", &[], None, Auth::Key)?;
            out.emit(&body, |v| {
                let mut t = Table::new(&["ID", "NAME", "CREATED"]);
                for o in items(v) {
                    t.row(vec![text(o, "id"), text(o, "name"), date(o, "created_at")]);
                }
                or_none(&t, "no owners")
            })
        }
        OwnersCommand::Key { owner_id } => {
            let path = format!("/v1/owners/{}/keys", seg(&owner_id));
            let body = api.call(Method::POST, &path, &[], None, Auth::Key)?;
            out.emit(&body, |v| {
                format!(
                    "{}\nThe API key is shown only once: store it now.\n",
                    fields(&[
                        ("Owner ID", text(v, "owner_id")),
                        ("API key", text(v, "api_key")),
                    ])
                )
            })
        }
    }
}

fn apps(api: &Api, out: &Out, c: AppsCommand) -> Result<(), Failure> {
    match c {
        AppsCommand::Create { name, owner } => {
            let mut body = json!({ "name": name });
            if let Some(owner) = owner {
                body["owner_id"] = owner.into();
            }
            let body = api.call(Method::POST, "/v1/apps", &[], Some(&body), Auth::Key)?;
            out.emit(&body, |v| {
                let (app, cred) = (&v["app"], &v["credentials"]);
                format!(
                    "{}\nThe secret is shown only once: store it now. Mint user tokens with \
                     `cloudproxy token`; `cloudproxy admin apps rotate {}` issues a new one.\n",
                    fields(&[
                        ("App ID", text(app, "id")),
                        ("Name", text(app, "name")),
                        ("Owner", text(app, "owner_id")),
                        ("Key ID", text(cred, "key_id")),
                        ("Secret", text(cred, "secret")),
                    ]),
                    text(app, "id")
                )
            })
        }
        AppsCommand::List => {
            let body = api.call(Method::GET, "/v1/apps", &[], None, Auth::Key)?;
            out.emit(&body, |v| {
                let mut t = Table::new(&["ID", "NAME", "OWNER", "STATUS", "KEYS", "CREATED"]);
                for a in items(v) {
                    t.row(vec![
                        text(a, "id"),
                        text(a, "name"),
                        text(a, "owner_id"),
                        text(a, "status"),
                        items(&a["keys"]).len().to_string(),
                        date(a, "created_at"),
                    ]);
                }
                or_none(&t, "no apps")
            })
        }
        AppsCommand::Show { id } => {
            let body = api.call(Method::GET, &app_path(&id, ""), &[], None, Auth::Key)?;
            out.emit(&body, app_block)
        }
        AppsCommand::Delete { id } => {
            api.call(Method::DELETE, &app_path(&id, ""), &[], None, Auth::Key)?;
            out.done(format!("App {id} deleted."))
        }
        AppsCommand::Suspend { id } => {
            let body = api.call(
                Method::POST,
                &app_path(&id, "/suspend"),
                &[],
                None,
                Auth::Key,
            )?;
            out.emit(&body, app_status)
        }
        AppsCommand::Resume { id } => {
            let body = api.call(
                Method::POST,
                &app_path(&id, "/resume"),
                &[],
                None,
                Auth::Key,
            )?;
            out.emit(&body, app_status)
        }
        AppsCommand::Rotate { id, grace } => {
            let body = match grace {
                Some(g) => json!({ "grace_seconds": g }),
                None => json!({}),
            };
            let path = app_path(&id, "/rotate");
            let body = api.call(Method::POST, &path, &[], Some(&body), Auth::Key)?;
            out.emit(&body, |v| {
                let cred = &v["credentials"];
                let mut s = fields(&[
                    ("App ID", text(cred, "app_id")),
                    ("Key ID", text(cred, "key_id")),
                    ("Secret", text(cred, "secret")),
                ]);
                for k in items(&v["retiring"]) {
                    s.push_str(&format!(
                        "Key {} keeps working until {}.\n",
                        text(k, "key_id"),
                        date(k, "not_after")
                    ));
                }
                s.push_str("\nThe secret is shown only once: store it now.\n");
                s
            })
        }
    }
}

fn app_path(id: &str, rest: &str) -> String {
    format!("/v1/apps/{}{rest}", seg(id))
}

fn app_block(a: &Value) -> String {
    let mut s = fields(&[
        ("App ID", text(a, "id")),
        ("Name", text(a, "name")),
        ("Owner", text(a, "owner_id")),
        ("Status", text(a, "status")),
        ("Created", date(a, "created_at")),
        ("Updated", date(a, "updated_at")),
    ]);
    let mut t = Table::new(&["KEY ID", "CREATED", "NOT AFTER"]);
    for k in items(&a["keys"]) {
        let not_after = match k["not_after"].as_i64() {
            Some(_) => date(k, "not_after"),
            None => "- (current)".into(),
        };
        t.row(vec![text(k, "key_id"), date(k, "created_at"), not_after]);
    }
    if !t.is_empty() {
        s.push('\n');
        s.push_str(&t.render());
    }
    s
}

fn app_status(a: &Value) -> String {
    format!("App {}: {}\n", text(a, "id"), text(a, "status"))
}

fn requests(api: &Api, out: &Out, c: RequestsCommand) -> Result<(), Failure> {
    let step = |id: &str, step: &str| -> Result<(), Failure> {
        let path = format!("/v1/requests/{}/{step}", seg(id));
        let body = api.call(Method::POST, &path, &[], None, Auth::Key)?;
        out.emit(&body, request_outcome)
    };
    match c {
        RequestsCommand::Submit(a) => {
            let body = json!({
                "region": a.region,
                "sdk": a.sdk,
                "use_case": a.use_case,
                "max_concurrent_channels": a.channels,
                "max_users_per_channel": a.users,
                "max_proxy_users_per_channel": a.proxy_users,
                "quality": a.quality,
                "mode": a.mode,
            });
            let path = app_path(&a.app_id, "/requests");
            let body = api.call(Method::POST, &path, &[], Some(&body), Auth::Key)?;
            out.emit(&body, request_block)
        }
        RequestsCommand::List { app_id } => {
            let path = match &app_id {
                Some(id) => app_path(id, "/requests"),
                None => "/v1/requests".into(),
            };
            let body = api.call(Method::GET, &path, &[], None, Auth::Key)?;
            out.emit(&body, |v| {
                let mut t = Table::new(&[
                    "ID", "APP", "REGION", "SDK", "MODE", "QUALITY", "CHANNELS", "USERS", "PROXY",
                    "KBPS", "STATE",
                ]);
                for r in items(v) {
                    t.row(vec![
                        text(r, "id"),
                        text(r, "app_id"),
                        text(r, "region"),
                        text(r, "sdk"),
                        text(r, "mode"),
                        text(r, "quality"),
                        text(r, "max_concurrent_channels"),
                        text(r, "max_users_per_channel"),
                        text(r, "max_proxy_users_per_channel"),
                        text(r, "estimated_kbps"),
                        text(r, "state"),
                    ]);
                }
                or_none(&t, "no requests")
            })
        }
        RequestsCommand::Show { id } => {
            let path = format!("/v1/requests/{}", seg(&id));
            let body = api.call(Method::GET, &path, &[], None, Auth::Key)?;
            out.emit(&body, request_block)
        }
        RequestsCommand::Reject { id, reason } => {
            let path = format!("/v1/requests/{}/reject", seg(&id));
            let body = json!({ "reason": reason });
            let body = api.call(Method::POST, &path, &[], Some(&body), Auth::Key)?;
            out.emit(&body, request_outcome)
        }
        RequestsCommand::Approve { id } => step(&id, "approve"),
        RequestsCommand::Activate { id } => step(&id, "activate"),
        RequestsCommand::Suspend { id } => step(&id, "suspend"),
        RequestsCommand::Resume { id } => step(&id, "resume"),
        RequestsCommand::Revoke { id } => step(&id, "revoke"),
    }
}

fn request_block(r: &Value) -> String {
    fields(&[
        ("Request ID", text(r, "id")),
        ("App ID", text(r, "app_id")),
        ("State", text(r, "state")),
        ("Reason", text(r, "reason")),
        ("Region", text(r, "region")),
        ("SDK", text(r, "sdk")),
        ("Mode", text(r, "mode")),
        ("Quality", text(r, "quality")),
        ("Use case", text(r, "use_case")),
        ("Channels", text(r, "max_concurrent_channels")),
        ("Users/channel", text(r, "max_users_per_channel")),
        (
            "Proxy users/channel",
            text(r, "max_proxy_users_per_channel"),
        ),
        ("Estimated kbps", text(r, "estimated_kbps")),
        ("Reserved kbps", text(r, "reserved_kbps")),
        ("Created", date(r, "created_at")),
        ("Updated", date(r, "updated_at")),
    ])
}

/// One line after a lifecycle step: the state, with the reservation or the reason.
fn request_outcome(r: &Value) -> String {
    let state = text(r, "state");
    let detail = match state.as_str() {
        "rejected" => format!(": {}", text(r, "reason")),
        "revoked" => String::new(),
        _ => format!(" ({} kbps reserved)", text(r, "reserved_kbps")),
    };
    format!("Request {}: {state}{detail}\n", text(r, "id"))
}

fn regions_table(v: &Value) -> String {
    let mut t = Table::new(&[
        "REGION",
        "NAME",
        "STATIC",
        "DYNAMIC",
        "CAPACITY_KBPS",
        "RESERVED_KBPS",
        "AVAILABLE_KBPS",
    ]);
    for r in items(v) {
        t.row(vec![
            text(r, "region"),
            text(r, "name"),
            text(r, "static_edges"),
            text(r, "dynamic_edges"),
            text(r, "static_capacity_kbps"),
            text(r, "reserved_kbps"),
            text(r, "available_kbps"),
        ]);
    }
    t.render()
}

fn edges(api: &Api, out: &Out, c: EdgesCommand) -> Result<(), Failure> {
    match c {
        EdgesCommand::Put(a) => {
            let listeners: Vec<Value> = a
                .listeners
                .iter()
                .map(|(t, addr)| json!({ "transport": t, "ip": addr.ip(), "port": addr.port() }))
                .collect();
            let body = json!({
                "region": a.region,
                "pool": a.pool,
                "capacity_kbps": a.capacity_kbps,
                "listeners": listeners,
            });
            let path = format!("/v1/edges/{}", seg(&a.id));
            let body = api.call(Method::PUT, &path, &[], Some(&body), Auth::Key)?;
            out.emit(&body, |v| {
                let e = &v["edge"];
                let mut s = format!(
                    "Edge {}: {} {}, {} kbps, {}\n",
                    text(e, "id"),
                    text(e, "region"),
                    text(e, "pool"),
                    text(e, "capacity_kbps"),
                    listeners_text(e)
                );
                s.push_str(&published(v));
                s
            })
        }
        EdgesCommand::List { region } => {
            let query: Vec<(&str, String)> = region
                .map(|r| ("region", r.as_str().to_owned()))
                .into_iter()
                .collect();
            let body = api.call(Method::GET, "/v1/edges", &query, None, Auth::Key)?;
            out.emit(&body, |v| {
                let mut t = Table::new(&["ID", "REGION", "POOL", "CAPACITY_KBPS", "LISTENERS"]);
                for e in items(v) {
                    t.row(vec![
                        text(e, "id"),
                        text(e, "region"),
                        text(e, "pool"),
                        text(e, "capacity_kbps"),
                        listeners_text(e),
                    ]);
                }
                or_none(&t, "no edges")
            })
        }
        EdgesCommand::Show { id } => {
            let path = format!("/v1/edges/{}", seg(&id));
            let body = api.call(Method::GET, &path, &[], None, Auth::Key)?;
            out.emit(&body, |e| {
                fields(&[
                    ("Edge ID", text(e, "id")),
                    ("Region", text(e, "region")),
                    ("Pool", text(e, "pool")),
                    ("Capacity kbps", text(e, "capacity_kbps")),
                    ("Listeners", listeners_text(e)),
                    ("Created", date(e, "created_at")),
                    ("Updated", date(e, "updated_at")),
                ])
            })
        }
        EdgesCommand::Delete { id } => {
            let path = format!("/v1/edges/{}", seg(&id));
            let body = api.call(Method::DELETE, &path, &[], None, Auth::Key)?;
            out.emit(&body, |v| format!("Edge {id} deleted.\n{}", published(v)))
        }
    }
}

/// `udp 203.0.113.10:3478, tls 203.0.113.10:443`
fn listeners_text(edge: &Value) -> String {
    items(&edge["listeners"])
        .iter()
        .map(|l| {
            let ip = text(l, "ip");
            let ip = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip
            };
            format!("{} {ip}:{}", text(l, "transport"), text(l, "port"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The allow-list versions an edge change published, one line each.
fn published(update: &Value) -> String {
    let versions = items(&update["published"]);
    if versions.is_empty() {
        return "Allow-list unchanged.\n".into();
    }
    versions
        .iter()
        .map(|p| {
            format!(
                "Published allow-list {} version {}, effective {}.\n",
                text(p, "region"),
                text(p, "version"),
                date(p, "effective_at")
            )
        })
        .collect()
}

fn allowlist(api: &Api, out: &Out, a: AllowlistArgs) -> Result<(), Failure> {
    let format = a.format.as_deref().unwrap_or("json");
    let export = format != "json";
    let out = Out {
        json: out.json || (a.format.is_some() && !export),
    };
    let Some(region) = a.region else {
        if export || a.history {
            return Err(Failure::Usage(anyhow!(
                "--format {format} and --history need a REGION, e.g. `cloudproxy admin allowlist japan --format {format}`"
            )));
        }
        let body = api.call(Method::GET, "/v1/allowlist", &[], None, Auth::Public)?;
        return out.emit(&body, |v| allowlist_table(items(v)));
    };
    if a.history {
        if export {
            return Err(Failure::Usage(anyhow!(
                "--history is JSON or a table; --format {format} exports the current version"
            )));
        }
        let path = format!("/v1/allowlist/{}/history", region.as_str());
        let body = api.call(Method::GET, &path, &[], None, Auth::Public)?;
        return out.emit(&body, history_table);
    }
    let path = format!("/v1/allowlist/{}", region.as_str());
    if export {
        // The server names the format field when it does not know it.
        let query = [("format", format.to_owned())];
        let body = api.call(Method::GET, &path, &query, None, Auth::Public)?;
        print!("{body}");
        return Ok(());
    }
    let body = api.call(Method::GET, &path, &[], None, Auth::Public)?;
    out.emit(&body, |v| allowlist_table(std::slice::from_ref(v)))
}

/// One table for several regions' current versions; regions with nothing published are
/// listed after it.
fn allowlist_table(lists: &[Value]) -> String {
    let mut t = Table::new(&[
        "REGION",
        "VERSION",
        "EFFECTIVE",
        "SERVICE",
        "PROTOCOL",
        "PORTS",
        "ADDRESSES",
    ]);
    let mut empty = Vec::new();
    for list in lists {
        let rows = items(&list["rows"]);
        if rows.is_empty() {
            empty.push(text(list, "region"));
        }
        for row in rows {
            t.row(vec![
                text(list, "region"),
                text(list, "version"),
                text(list, "effective_date"),
                text(row, "service"),
                text(row, "protocol"),
                text(row, "ports"),
                text(row, "ips"),
            ]);
        }
    }
    let mut s = if t.is_empty() {
        String::new()
    } else {
        t.render()
    };
    if !empty.is_empty() {
        s.push_str(&format!("Nothing published for: {}\n", empty.join(", ")));
    }
    s
}

/// Each version's changes against the one before it, newest first.
fn history_table(v: &Value) -> String {
    let mut t = Table::new(&[
        "VERSION",
        "EFFECTIVE",
        "CHANGE",
        "SERVICE",
        "PROTOCOL",
        "PORTS",
        "ADDRESSES",
    ]);
    for list in items(v) {
        for c in items(&list["changes"]) {
            let row = &c["row"];
            t.row(vec![
                text(list, "version"),
                text(list, "effective_date"),
                text(c, "kind"),
                text(row, "service"),
                text(row, "protocol"),
                text(row, "ports"),
                text(row, "ips"),
            ]);
        }
    }
    or_none(&t, "no versions published")
}

fn usage(api: &Api, out: &Out, a: UsageArgs) -> Result<(), Failure> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(from) = a.from {
        query.push(("from", from));
    }
    if let Some(to) = a.to {
        query.push(("to", to));
    }
    let path = app_path(&a.app_id, "/usage");
    if a.csv {
        query.push(("format", "csv".into()));
        let body = api.call(Method::GET, &path, &query, None, Auth::Key)?;
        print!("{body}");
        return Ok(());
    }
    let body = api.call(Method::GET, &path, &query, None, Auth::Key)?;
    out.emit(&body, |v| {
        let mut t = Table::new(&["DAY", "MODE", "QUALITY", "MINUTES", "BYTES", "PEAK"]);
        let (mut minutes, mut bytes) = (0.0, 0u64);
        for d in items(&v["days"]) {
            let m = d["minutes"].as_f64().unwrap_or(0.0);
            minutes += m;
            bytes += d["bytes"].as_u64().unwrap_or(0);
            t.row(vec![
                text(d, "day"),
                text(d, "mode"),
                text(d, "quality"),
                format!("{m:.1}"),
                text(d, "bytes"),
                text(d, "peak_concurrency"),
            ]);
        }
        if t.is_empty() {
            return format!("No usage recorded for app {}.\n", text(v, "app_id"));
        }
        format!("{}Total: {minutes:.1} minutes, {bytes} bytes\n", t.render())
    })
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

/// `udp:203.0.113.10:3478`, `tls:[2001:db8::1]:443`
fn parse_listener(s: &str) -> Result<(Transport, SocketAddr), String> {
    let (transport, addr) = s
        .split_once(':')
        .ok_or("expected TRANSPORT:IP:PORT, e.g. udp:203.0.113.10:3478")?;
    let transport = Transport::parse(transport).ok_or_else(|| {
        format!(
            "unknown transport '{transport}'; use {}",
            spellings::<Transport>()
        )
    })?;
    let addr = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not IP:PORT (IPv6 as [ADDR]:PORT)"))?;
    Ok((transport, addr))
}

fn parse_day(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let ok = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if ok {
        Ok(s.to_owned())
    } else {
        Err("expected YYYY-MM-DD".into())
    }
}

fn spellings<T: Wire>() -> String {
    T::ALL
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a control-plane enum by its wire spelling, or the same with hyphens
/// (`force-tcp`), and lists the spellings in `--help`.
#[derive(Clone)]
struct WireParser<T>(PhantomData<T>);

impl<T> WireParser<T> {
    fn new() -> Self {
        WireParser(PhantomData)
    }
}

impl<T: Wire + Send + Sync> TypedValueParser for WireParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let s = value.to_string_lossy();
        T::parse(&s.replace('-', "_")).ok_or_else(|| {
            let arg = arg.map_or_else(|| "value".to_owned(), |a| a.to_string());
            cmd.clone().error(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "invalid value '{s}' for '{arg}': use one of {}",
                    spellings::<T>()
                ),
            )
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            T::ALL.iter().map(|v| PossibleValue::new(v.as_str())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse() {
        assert_eq!(
            parse_listener("udp:203.0.113.10:3478").unwrap(),
            (Transport::Udp, "203.0.113.10:3478".parse().unwrap())
        );
        assert_eq!(
            parse_listener("tls:[2001:db8::1]:443").unwrap(),
            (Transport::Tls, "[2001:db8::1]:443".parse().unwrap())
        );
        assert!(parse_listener("quic:1.2.3.4:1")
            .unwrap_err()
            .contains("udp, tcp, tls"));
        assert!(parse_listener("udp:1.2.3.4").is_err());
        assert!(parse_listener("1.2.3.4:5").is_err());
    }

    #[test]
    fn days_and_segments() {
        assert!(parse_day("2026-11-29").is_ok());
        assert!(parse_day("2026-1-29").is_err());
        assert!(parse_day("29/11/2026").is_err());
        assert_eq!(seg("ab12"), "ab12");
        assert_eq!(seg("a/../b?x"), "a%2F..%2Fb%3Fx");
    }

    #[test]
    fn allowlist_table_lists_empty_regions() {
        let lists = json!([
            {"region": "japan", "version": 2, "effective_date": "2026-01-01T00:00:00Z",
             "rows": [{"service": "force_tcp", "ips": ["203.0.113.10/31"], "protocol": "tcp", "ports": [443]}]},
            {"region": "europe", "version": 0, "effective_date": "1970-01-01T00:00:00Z", "rows": []}
        ]);
        assert_eq!(
            allowlist_table(items(&lists)),
            "REGION  VERSION  EFFECTIVE             SERVICE    PROTOCOL  PORTS  ADDRESSES\n\
             japan   2        2026-01-01T00:00:00Z  force_tcp  tcp       443    203.0.113.10/31\n\
             Nothing published for: europe\n"
        );
    }
}
