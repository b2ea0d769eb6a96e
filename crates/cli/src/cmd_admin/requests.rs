//! Enablement requests: the form, and each lifecycle step as one line.

use reqwest::Method;
use serde_json::{json, Value};

use super::http::{Api, Auth};
use super::table::{date, fields, items, text, Table};
use super::{app_path, or_none, seg, Out, RequestsCommand};
use crate::failure::Failure;

pub(super) fn requests(api: &Api, out: &Out, c: RequestsCommand) -> Result<(), Failure> {
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
        RequestsCommand::Approve { id, effective_at } => {
            let path = format!("/v1/requests/{}/approve", seg(&id));
            let body = match effective_at {
                Some(t) => json!({ "effective_at": t }),
                None => json!({}),
            };
            let body = api.call(Method::POST, &path, &[], Some(&body), Auth::Key)?;
            out.emit(&body, request_outcome)
        }
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
        ("Activates", date(r, "activates_at")),
    ])
}

/// One line after a lifecycle step: the state, with the reservation or the reason.
fn request_outcome(r: &Value) -> String {
    let state = text(r, "state");
    let detail = match state.as_str() {
        "rejected" => format!(": {}", text(r, "reason")),
        "revoked" => String::new(),
        "approved" if !r["activates_at"].is_null() => format!(
            " ({} kbps reserved; active from {})",
            text(r, "reserved_kbps"),
            date(r, "activates_at")
        ),
        _ => format!(" ({} kbps reserved)", text(r, "reserved_kbps")),
    };
    format!("Request {}: {state}{detail}\n", text(r, "id"))
}
