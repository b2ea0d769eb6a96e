//! Enablement requests: the form, and each lifecycle step as one line.

use cloudproxy_api::{ApproveInput, EnablementInput, EnablementRequest, RejectInput, RequestState};
use reqwest::Method;

use super::http::{Api, Auth, NO_BODY};
use super::table::{date, fields, opt, Column};
use super::{app_path, seg, Out, RequestsCommand};
use crate::failure::Failure;

pub(super) fn requests(api: &Api, out: &Out, c: RequestsCommand) -> Result<(), Failure> {
    let step = |id: &str, step: &str| -> Result<(), Failure> {
        let path = format!("/v1/requests/{}/{step}", seg(id));
        let body = api.call(Method::POST, &path, &[], NO_BODY, Auth::Key)?;
        out.emit(&body, request_outcome)
    };
    match c {
        RequestsCommand::Submit(a) => {
            let body = EnablementInput {
                region: a.region,
                sdk: a.sdk,
                use_case: a.use_case,
                max_concurrent_channels: a.channels,
                max_users_per_channel: a.users,
                max_proxy_users_per_channel: a.proxy_users,
                quality: a.quality,
                mode: a.mode,
            };
            let path = app_path(&a.app_id, "/requests");
            let body = api.call(Method::POST, &path, &[], Some(&body), Auth::Key)?;
            out.emit(&body, request_block)
        }
        RequestsCommand::List { app_id } => {
            let path = match &app_id {
                Some(id) => app_path(id, "/requests"),
                None => "/v1/requests".into(),
            };
            let body = api.call(Method::GET, &path, &[], NO_BODY, Auth::Key)?;
            let columns: &[Column<EnablementRequest>] = &[
                ("ID", |r| r.id.clone()),
                ("APP", |r| r.app_id.clone()),
                ("REGION", |r| r.region.to_string()),
                ("SDK", |r| r.sdk.to_string()),
                ("MODE", |r| r.mode.to_string()),
                ("QUALITY", |r| r.quality.to_string()),
                ("CHANNELS", |r| r.max_concurrent_channels.to_string()),
                ("USERS", |r| r.max_users_per_channel.to_string()),
                ("PROXY", |r| r.max_proxy_users_per_channel.to_string()),
                ("KBPS", |r| r.estimated_kbps.to_string()),
                ("STATE", |r| r.state.to_string()),
            ];
            out.list(&body, columns, "no requests")
        }
        RequestsCommand::Show { id } => {
            let path = format!("/v1/requests/{}", seg(&id));
            let body = api.call(Method::GET, &path, &[], NO_BODY, Auth::Key)?;
            out.emit(&body, request_block)
        }
        RequestsCommand::Reject { id, reason } => {
            let path = format!("/v1/requests/{}/reject", seg(&id));
            let body = RejectInput { reason };
            let body = api.call(Method::POST, &path, &[], Some(&body), Auth::Key)?;
            out.emit(&body, request_outcome)
        }
        RequestsCommand::Approve { id, effective_at } => {
            let path = format!("/v1/requests/{}/approve", seg(&id));
            let body = ApproveInput { effective_at };
            let body = api.call(Method::POST, &path, &[], Some(&body), Auth::Key)?;
            out.emit(&body, request_outcome)
        }
        RequestsCommand::Activate { id } => step(&id, "activate"),
        RequestsCommand::Suspend { id } => step(&id, "suspend"),
        RequestsCommand::Resume { id } => step(&id, "resume"),
        RequestsCommand::Revoke { id } => step(&id, "revoke"),
    }
}

fn request_block(r: &EnablementRequest) -> String {
    let date_opt = |t: Option<i64>| t.map_or("-".into(), date);
    fields(&[
        ("Request ID", r.id.clone()),
        ("App ID", r.app_id.clone()),
        ("State", r.state.to_string()),
        ("Reason", opt(&r.reason)),
        ("Region", r.region.to_string()),
        ("SDK", r.sdk.to_string()),
        ("Mode", r.mode.to_string()),
        ("Quality", r.quality.to_string()),
        ("Use case", r.use_case.clone()),
        ("Channels", r.max_concurrent_channels.to_string()),
        ("Users/channel", r.max_users_per_channel.to_string()),
        (
            "Proxy users/channel",
            r.max_proxy_users_per_channel.to_string(),
        ),
        ("Estimated kbps", r.estimated_kbps.to_string()),
        ("Reserved kbps", r.reserved_kbps.to_string()),
        ("Created", date(r.created_at)),
        ("Updated", date(r.updated_at)),
        ("Activates", date_opt(r.activates_at)),
    ])
}

/// One line after a lifecycle step: the state, with the reservation or the reason.
fn request_outcome(r: &EnablementRequest) -> String {
    let detail = match (r.state, r.activates_at) {
        (RequestState::Rejected, _) => format!(": {}", opt(&r.reason)),
        (RequestState::Revoked, _) => String::new(),
        (RequestState::Approved, Some(at)) => format!(
            " ({} kbps reserved; active from {})",
            r.reserved_kbps,
            date(at)
        ),
        _ => format!(" ({} kbps reserved)", r.reserved_kbps),
    };
    format!("Request {}: {}{detail}\n", r.id, r.state)
}
