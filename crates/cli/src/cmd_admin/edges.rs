//! Regions, relays (edges) and the allow-list table they publish.

use anyhow::anyhow;
use cloudproxy_api::{
    AllowList, Change, ChangeKind, Edge, EdgeCidrs, EdgeCidrsInput, EdgeInput, EdgeUpdate,
    Listener, RegionSummary, Row,
};
use reqwest::Method;

use super::http::{Api, Auth, NO_BODY};
use super::table::{date, fields, Column, Table};
use super::{or_none, seg, AllowlistArgs, EdgesCommand, Out};
use crate::failure::Failure;

/// `regions list`'s columns.
pub(super) const REGIONS: &[Column<RegionSummary>] = &[
    ("REGION", |r| r.region.to_string()),
    ("NAME", |r| r.name.clone()),
    ("STATIC", |r| r.static_edges.to_string()),
    ("DYNAMIC", |r| r.dynamic_edges.to_string()),
    ("CAPACITY_KBPS", |r| r.static_capacity_kbps.to_string()),
    ("RESERVED_KBPS", |r| r.reserved_kbps.to_string()),
    ("AVAILABLE_KBPS", |r| r.available_kbps.to_string()),
];

pub(super) fn edges(api: &Api, out: &Out, c: EdgesCommand) -> Result<(), Failure> {
    match c {
        EdgesCommand::Put(a) => {
            let body = EdgeInput {
                region: a.region,
                pool: a.pool,
                capacity_kbps: a.capacity_kbps,
                listeners: a
                    .listeners
                    .iter()
                    .map(|&(transport, addr)| Listener {
                        transport,
                        ip: addr.ip(),
                        port: addr.port(),
                    })
                    .collect(),
                effective_at: None,
            };
            let path = format!("/v1/edges/{}", seg(&a.id));
            let body = api.call(Method::PUT, &path, &[], Some(&body), Auth::Key)?;
            out.emit(&body, |v: &EdgeUpdate| {
                let mut s = match &v.edge {
                    Some(e) => format!(
                        "Edge {}: {} {}, {} kbps, {}\n",
                        e.id,
                        e.region,
                        e.pool,
                        e.capacity_kbps,
                        listeners_text(&e.listeners)
                    ),
                    None => String::new(),
                };
                s.push_str(&published(v));
                s
            })
        }
        EdgesCommand::List { region } => {
            let query: Vec<(&str, String)> = region
                .map(|r| ("region", r.as_str().to_owned()))
                .into_iter()
                .collect();
            let body = api.call(Method::GET, "/v1/edges", &query, NO_BODY, Auth::Key)?;
            let columns: &[Column<Edge>] = &[
                ("ID", |e| e.id.clone()),
                ("REGION", |e| e.region.to_string()),
                ("POOL", |e| e.pool.to_string()),
                ("CAPACITY_KBPS", |e| e.capacity_kbps.to_string()),
                ("LISTENERS", |e| listeners_text(&e.listeners)),
            ];
            out.list(&body, columns, "no edges")
        }
        EdgesCommand::Show { id } => {
            let path = format!("/v1/edges/{}", seg(&id));
            let body = api.call(Method::GET, &path, &[], NO_BODY, Auth::Key)?;
            out.emit(&body, |e: &Edge| {
                fields(&[
                    ("Edge ID", e.id.clone()),
                    ("Region", e.region.to_string()),
                    ("Pool", e.pool.to_string()),
                    ("Capacity kbps", e.capacity_kbps.to_string()),
                    ("Listeners", listeners_text(&e.listeners)),
                    ("Created", date(e.created_at)),
                    ("Updated", date(e.updated_at)),
                ])
            })
        }
        EdgesCommand::Delete { id } => {
            let path = format!("/v1/edges/{}", seg(&id));
            let body = api.call(Method::DELETE, &path, &[], NO_BODY, Auth::Key)?;
            out.emit(&body, |v: &EdgeUpdate| {
                format!("Edge {id} deleted.\n{}", published(v))
            })
        }
        EdgesCommand::Cidrs { id, cidrs, none } => {
            let path = format!("/v1/edges/{}/cidrs", seg(&id));
            let body = if cidrs.is_empty() && !none {
                api.call(Method::GET, &path, &[], NO_BODY, Auth::Key)?
            } else {
                // Parsed here for the message; the server checks them the same way.
                let cidrs = cidrs
                    .iter()
                    .map(|c| c.parse().map_err(|e| Failure::Usage(anyhow!("{e}"))))
                    .collect::<Result<_, _>>()?;
                let body = EdgeCidrsInput { cidrs };
                api.call(Method::PUT, &path, &[], Some(&body), Auth::Key)?
            };
            out.emit(&body, |v: &EdgeCidrs| {
                let list: Vec<String> = v.cidrs.iter().map(|c| c.with_prefix()).collect();
                let list = if list.is_empty() {
                    "none (the relay key may not register it)".to_owned()
                } else {
                    list.join(", ")
                };
                format!("Edge {id}: the relay key may publish inside {list}\n")
            })
        }
    }
}

/// `udp 203.0.113.10:3478, tls 203.0.113.10:443`
fn listeners_text(listeners: &[Listener]) -> String {
    listeners
        .iter()
        .map(|l| {
            let addr = std::net::SocketAddr::new(l.ip, l.port);
            format!("{} {addr}", l.transport)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The allow-list versions an edge change published, one line each.
fn published(update: &EdgeUpdate) -> String {
    if update.published.is_empty() {
        return "Allow-list unchanged.\n".into();
    }
    update
        .published
        .iter()
        .map(|p| {
            format!(
                "Published allow-list {} version {}, effective {}.\n",
                p.region,
                p.version,
                date(p.effective_at)
            )
        })
        .collect()
}

pub(super) fn allowlist(api: &Api, out: &Out, a: AllowlistArgs) -> Result<(), Failure> {
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
        let body = api.call(Method::GET, "/v1/allowlist", &[], NO_BODY, Auth::Public)?;
        return out.emit(&body, |v: &Vec<AllowList>| allowlist_table(v));
    };
    if a.history {
        if export {
            return Err(Failure::Usage(anyhow!(
                "--history is JSON or a table; --format {format} exports the current version"
            )));
        }
        let path = format!("/v1/allowlist/{}/history", region.as_str());
        let body = api.call(Method::GET, &path, &[], NO_BODY, Auth::Public)?;
        return out.emit(&body, |v: &Vec<AllowList>| history_table(v));
    }
    let path = format!("/v1/allowlist/{}", region.as_str());
    if export {
        // The server names the format field when it does not know it.
        let query = [("format", format.to_owned())];
        let body = api.call(Method::GET, &path, &query, NO_BODY, Auth::Public)?;
        print!("{}", super::table::terminal_safe(&body, true));
        return Ok(());
    }
    let body = api.call(Method::GET, &path, &[], NO_BODY, Auth::Public)?;
    out.emit(&body, |v: &AllowList| {
        allowlist_table(std::slice::from_ref(v))
    })
}

/// One allow-list row as a table shows it: the version it stands in and, in a history, how
/// that version changed it (`None` in the current table, which has no CHANGE column).
struct Line<'a> {
    list: &'a AllowList,
    kind: Option<ChangeKind>,
    row: &'a Row,
}

impl<'a> Line<'a> {
    /// The rows in force in `list`.
    fn current(list: &'a AllowList) -> impl Iterator<Item = Line<'a>> {
        let line = move |row| Line {
            list,
            kind: None,
            row,
        };
        list.rows.iter().map(line)
    }

    /// The rows `list` added or removed.
    fn changes(list: &'a AllowList) -> impl Iterator<Item = Line<'a>> {
        let line = move |c: &'a Change| Line {
            list,
            kind: Some(c.kind),
            row: &c.row,
        };
        list.changes.iter().map(line)
    }
}

/// A column of the allow-list tables, for a [`Line`] of any lifetime.
type LineColumn = (&'static str, for<'a> fn(&Line<'a>) -> String);

// The allow-list tables' columns; each table picks its own.
const REGION: LineColumn = ("REGION", |l| l.list.region.to_string());
const VERSION: LineColumn = ("VERSION", |l| l.list.version.to_string());
const EFFECTIVE: LineColumn = ("EFFECTIVE", |l| l.list.effective_date.clone());
const CHANGE: LineColumn = ("CHANGE", |l| {
    l.kind.map_or("", ChangeKind::as_str).to_owned()
});
const SERVICE: LineColumn = ("SERVICE", |l| l.row.service.as_str().to_owned());
const PROTOCOL: LineColumn = ("PROTOCOL", |l| l.row.protocol.as_str().to_owned());
const PORTS: LineColumn = ("PORTS", |l| {
    let ports: Vec<String> = l.row.ports.iter().map(u16::to_string).collect();
    ports.join(" ")
});
const ADDRESSES: LineColumn = ("ADDRESSES", |l| l.row.ips.join(" "));

/// One table for several regions' current versions; regions with nothing published are
/// listed after it.
fn allowlist_table(lists: &[AllowList]) -> String {
    let lines: Vec<Line> = lists.iter().flat_map(Line::current).collect();
    let t = Table::of(
        &lines,
        &[
            REGION, VERSION, EFFECTIVE, SERVICE, PROTOCOL, PORTS, ADDRESSES,
        ],
    );
    let mut s = if t.is_empty() {
        String::new()
    } else {
        t.render()
    };
    let empty: Vec<&str> = lists
        .iter()
        .filter(|list| list.rows.is_empty())
        .map(|list| list.region.as_str())
        .collect();
    if !empty.is_empty() {
        s.push_str(&format!("Nothing published for: {}\n", empty.join(", ")));
    }
    s
}

/// Each version's changes against the one before it, newest first.
fn history_table(v: &[AllowList]) -> String {
    let lines: Vec<Line> = v.iter().flat_map(Line::changes).collect();
    let t = Table::of(
        &lines,
        &[
            VERSION, EFFECTIVE, CHANGE, SERVICE, PROTOCOL, PORTS, ADDRESSES,
        ],
    );
    or_none(&t, "no versions published")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_table_lists_empty_regions() {
        let lists: Vec<AllowList> = serde_json::from_value(serde_json::json!([
            {"region": "japan", "version": 2, "created_at": 1, "effective_at": 1767225600,
             "effective_date": "2026-01-01T00:00:00Z", "changes": [],
             "rows": [{"service": "force_tcp", "ips": ["203.0.113.10/31"], "protocol": "tcp", "ports": [443]}]},
            {"region": "europe", "version": 0, "created_at": 0, "effective_at": 0,
             "effective_date": "1970-01-01T00:00:00Z", "changes": [], "rows": []}
        ]))
        .unwrap();
        assert_eq!(
            allowlist_table(&lists),
            "REGION  VERSION  EFFECTIVE             SERVICE    PROTOCOL  PORTS  ADDRESSES\n\
             japan   2        2026-01-01T00:00:00Z  force_tcp  tcp       443    203.0.113.10/31\n\
             Nothing published for: europe\n"
        );
    }
}
