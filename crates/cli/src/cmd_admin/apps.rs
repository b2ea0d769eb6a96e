//! Owners, apps and usage: creation prints keys and secrets once.

use cloudproxy_api::{
    App, AppInput, CreatedApp, CreatedOwner, Owner, OwnerInput, OwnerKey, RotateInput, Rotated,
    Usage,
};
use reqwest::Method;

use super::http::{Api, Auth, NO_BODY};
use super::table::{date, fields, opt, Column, Table};
use super::{app_path, seg, AppsCommand, Out, OwnersCommand, UsageArgs};
use crate::failure::Failure;

pub(super) fn owners(api: &Api, out: &Out, c: OwnersCommand) -> Result<(), Failure> {
    match c {
        OwnersCommand::Create { name } => {
            let body = OwnerInput { name };
            let body = api.call(Method::POST, "/v1/owners", &[], Some(&body), Auth::Key)?;
            out.emit(&body, |v: &CreatedOwner| {
                let id = &v.owner.id;
                format!(
                    "{}\nThe API key is shown only once: store it now \
                     (`cloudproxy admin owners key {id}` issues another).\n",
                    fields(&[
                        ("Owner ID", id.clone()),
                        ("Name", v.owner.name.clone()),
                        ("API key", v.api_key.clone()),
                    ])
                )
            })
        }
        OwnersCommand::List => {
            let body = api.call(Method::GET, "/v1/owners", &[], NO_BODY, Auth::Key)?;
            let columns: &[Column<Owner>] = &[
                ("ID", |o| o.id.clone()),
                ("NAME", |o| o.name.clone()),
                ("CREATED", |o| date(o.created_at)),
            ];
            out.list(&body, columns, "no owners")
        }
        OwnersCommand::Key { owner_id } => {
            let path = format!("/v1/owners/{}/keys", seg(&owner_id));
            let body = api.call(Method::POST, &path, &[], NO_BODY, Auth::Key)?;
            out.emit(&body, |v: &OwnerKey| {
                format!(
                    "{}\nThe API key is shown only once: store it now.\n",
                    fields(&[
                        ("Owner ID", v.owner_id.clone()),
                        ("API key", v.api_key.clone()),
                    ])
                )
            })
        }
    }
}

pub(super) fn apps(api: &Api, out: &Out, c: AppsCommand) -> Result<(), Failure> {
    match c {
        AppsCommand::Create { name, owner } => {
            let body = AppInput {
                name,
                owner_id: owner,
            };
            let body = api.call(Method::POST, "/v1/apps", &[], Some(&body), Auth::Key)?;
            out.emit(&body, |v: &CreatedApp| {
                let (app, cred) = (&v.app, &v.credentials);
                format!(
                    "{}\nThe secret is shown only once: store it now. Mint user tokens with \
                     `cloudproxy token`; `cloudproxy admin apps rotate {}` issues a new one.\n",
                    fields(&[
                        ("App ID", app.id.clone()),
                        ("Name", app.name.clone()),
                        ("Owner", opt(&app.owner_id)),
                        ("Key ID", cred.key_id.clone()),
                        ("Secret", cred.secret.clone()),
                    ]),
                    app.id
                )
            })
        }
        AppsCommand::List => {
            let body = api.call(Method::GET, "/v1/apps", &[], NO_BODY, Auth::Key)?;
            let columns: &[Column<App>] = &[
                ("ID", |a| a.id.clone()),
                ("NAME", |a| a.name.clone()),
                ("OWNER", |a| opt(&a.owner_id)),
                ("STATUS", |a| a.status.to_string()),
                ("KEYS", |a| a.keys.len().to_string()),
                ("CREATED", |a| date(a.created_at)),
            ];
            out.list(&body, columns, "no apps")
        }
        AppsCommand::Show { id } => {
            let body = api.call(Method::GET, &app_path(&id, ""), &[], NO_BODY, Auth::Key)?;
            out.emit(&body, app_block)
        }
        AppsCommand::Delete { id } => {
            api.call(Method::DELETE, &app_path(&id, ""), &[], NO_BODY, Auth::Key)?;
            out.done(format!("App {id} deleted."))
        }
        AppsCommand::Suspend { id } => {
            let path = app_path(&id, "/suspend");
            let body = api.call(Method::POST, &path, &[], NO_BODY, Auth::Key)?;
            out.emit(&body, app_status)
        }
        AppsCommand::Resume { id } => {
            let path = app_path(&id, "/resume");
            let body = api.call(Method::POST, &path, &[], NO_BODY, Auth::Key)?;
            out.emit(&body, app_status)
        }
        AppsCommand::Rotate { id, grace } => {
            let body = RotateInput {
                grace_seconds: grace.map(|g| g.as_secs().try_into().unwrap_or(i64::MAX)),
            };
            let path = app_path(&id, "/rotate");
            let body = api.call(Method::POST, &path, &[], Some(&body), Auth::Key)?;
            out.emit(&body, |v: &Rotated| {
                let cred = &v.credentials;
                let mut s = fields(&[
                    ("App ID", cred.app_id.clone()),
                    ("Key ID", cred.key_id.clone()),
                    ("Secret", cred.secret.clone()),
                ]);
                for k in &v.retiring {
                    s.push_str(&format!(
                        "Key {} keeps working until {}.\n",
                        k.key_id,
                        date(k.not_after)
                    ));
                }
                s.push_str("\nThe secret is shown only once: store it now.\n");
                s
            })
        }
    }
}

fn app_block(a: &App) -> String {
    let mut s = fields(&[
        ("App ID", a.id.clone()),
        ("Name", a.name.clone()),
        ("Owner", opt(&a.owner_id)),
        ("Status", a.status.to_string()),
        ("Created", date(a.created_at)),
        ("Updated", date(a.updated_at)),
    ]);
    let t = Table::of(
        &a.keys,
        &[
            ("KEY ID", |k| k.key_id.clone()),
            ("CREATED", |k| date(k.created_at)),
            ("NOT AFTER", |k| match k.not_after {
                Some(t) => date(t),
                None => "- (current)".into(),
            }),
        ],
    );
    if !t.is_empty() {
        s.push('\n');
        s.push_str(&t.render());
    }
    s
}

fn app_status(a: &App) -> String {
    format!("App {}: {}\n", a.id, a.status)
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
        let body = api.call(Method::GET, &path, &query, NO_BODY, Auth::Key)?;
        print!("{}", super::table::terminal_safe(&body, true));
        return Ok(());
    }
    let body = api.call(Method::GET, &path, &query, NO_BODY, Auth::Key)?;
    out.emit(&body, |v: &Usage| {
        if v.days.is_empty() {
            return format!("No usage recorded for app {}.\n", v.app_id);
        }
        let t = Table::of(
            &v.days,
            &[
                ("DAY", |d| d.day.clone()),
                ("MODE", |d| d.mode.to_string()),
                ("QUALITY", |d| {
                    d.quality.map_or("-".into(), |q| q.to_string())
                }),
                ("MINUTES", |d| format!("{:.1}", d.minutes)),
                ("BYTES", |d| d.bytes.to_string()),
                ("PEAK", |d| d.peak_concurrency.to_string()),
            ],
        );
        let (minutes, bytes) = v
            .days
            .iter()
            .fold((0.0, 0u64), |(m, b), d| (m + d.minutes, b + d.bytes));
        format!("{}Total: {minutes:.1} minutes, {bytes} bytes\n", t.render())
    })
}
