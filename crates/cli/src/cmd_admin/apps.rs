//! Owners, apps and usage: creation prints keys and secrets once.

use reqwest::Method;
use serde_json::{json, Value};

use super::http::{Api, Auth};
use super::table::{date, fields, items, text, Table};
use super::{app_path, or_none, seg, AppsCommand, Out, OwnersCommand, UsageArgs};
use crate::failure::Failure;

pub(super) fn owners(api: &Api, out: &Out, c: OwnersCommand) -> Result<(), Failure> {
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

pub(super) fn apps(api: &Api, out: &Out, c: AppsCommand) -> Result<(), Failure> {
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
                Some(g) => json!({ "grace_seconds": g.as_secs() }),
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

pub(super) fn usage(api: &Api, out: &Out, a: UsageArgs) -> Result<(), Failure> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(from) = a.from {
        query.push(("from", from));
    }
    if let Some(to) = a.to {
        query.push(("to", to));
    }
    let path = app_path(&a.app_id, "/usage");
    if a.csv || a.format.as_deref() == Some("csv") {
        query.push(("format", "csv".into()));
        let body = api.call(Method::GET, &path, &query, None, Auth::Key)?;
        print!("{}", super::table::terminal_safe(&body, true));
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
