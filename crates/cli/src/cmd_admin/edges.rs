//! Regions, relays (edges) and the allow-list table they publish.

use anyhow::anyhow;
use reqwest::Method;
use serde_json::{json, Value};

use super::http::{Api, Auth};
use super::table::{date, fields, items, text, Table};
use super::{or_none, seg, AllowlistArgs, EdgesCommand, Out};
use crate::failure::Failure;

pub(super) fn regions_table(v: &Value) -> String {
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

pub(super) fn edges(api: &Api, out: &Out, c: EdgesCommand) -> Result<(), Failure> {
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
        EdgesCommand::Cidrs { id, cidrs, none } => {
            let path = format!("/v1/edges/{}/cidrs", seg(&id));
            let body = if cidrs.is_empty() && !none {
                api.call(Method::GET, &path, &[], None, Auth::Key)?
            } else {
                let body = json!({ "cidrs": cidrs });
                api.call(Method::PUT, &path, &[], Some(&body), Auth::Key)?
            };
            out.emit(&body, |v| {
                let list: Vec<String> = items(&v["cidrs"])
                    .iter()
                    .map(|c| c.as_str().unwrap_or_default().to_owned())
                    .collect();
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
        print!("{}", super::table::terminal_safe(&body, true));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
