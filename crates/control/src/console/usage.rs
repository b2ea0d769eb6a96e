//! The usage view: per app (only the caller's own for an owner), a chart of relayed minutes
//! per day and mode over the last `days` (default 30, UTC days), the rows behind it, and the
//! same rows as CSV (`/usage.csv`).

use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::html;

use super::chart::{self, Series};
use super::i18n;
use super::page::{Ctx, SignedIn};
use crate::model::{UsageMode, Wire};
use crate::state::AppState;
use crate::store::{App, UsageDay};
use crate::time::{day, now_unix};

const DEFAULT_DAYS: i64 = 30;
const MAX_DAYS: i64 = 366;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/usage", get(view))
        .route("/usage.csv", get(csv))
}

/// The apps to show (`?app=` or every app in scope) with their usage, and the days.
async fn load(
    state: &AppState,
    ctx: &Ctx,
    scope: Option<&str>,
) -> Result<(Vec<(App, Vec<UsageDay>)>, Vec<String>), Response> {
    let days = ctx
        .query
        .get("days")
        .and_then(|d| d.parse::<i64>().ok())
        .unwrap_or(DEFAULT_DAYS)
        .clamp(1, MAX_DAYS);
    let now = now_unix();
    let labels: Vec<String> = (0..days)
        .rev()
        .map(|back| day(now - back * 86_400))
        .collect();
    let apps = match ctx.query.get("app").filter(|a| !a.is_empty()) {
        Some(id) => match state.store().get_app(id, scope).await {
            Ok(a) => vec![a],
            Err(e) => return Err(ctx.api_error(e)),
        },
        None => match state.store().list_apps(scope).await {
            Ok(a) => a,
            Err(e) => return Err(ctx.api_error(e)),
        },
    };
    let (from, to) = (&labels[0], &labels[labels.len() - 1]);
    let mut out = Vec::with_capacity(apps.len());
    for app in apps {
        match state.store().usage(&app.id, from, to).await {
            Ok(rows) => out.push((app, rows)),
            Err(e) => return Err(ctx.api_error(e)),
        }
    }
    Ok((out, labels))
}

async fn view(State(state): State<AppState>, SignedIn { ctx, caller }: SignedIn) -> Response {
    let (t, lang) = (ctx.t(), ctx.lang);
    let (apps, days) = match load(&state, &ctx, caller.scope()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let csv_link = match ctx.query.get("app") {
        Some(a) => format!("/usage.csv?app={}&days={}", urlencode(a), days.len()),
        None => format!("/usage.csv?days={}", days.len()),
    };
    let body = html! {
        p { (t.usage_intro) " " a.download href=(csv_link) download { (t.download_csv) } }
        @if apps.is_empty() { p.empty { (t.no_apps) } }
        @for (app, rows) in &apps {
            section.usage id={ "usage-" (app.id) } {
                h2 { a.app-name href={ "/apps/" (app.id) } { (app.name) } " " small { code { (app.id) } } }
                @if rows.is_empty() { p.empty { (t.no_usage) } }
                @else {
                    @let series: Vec<Series> = UsageMode::ALL.iter().map(|m| Series {
                        label: i18n::usage_mode(lang, *m),
                        values: days.iter().map(|d| rows.iter()
                            .filter(|r| r.mode == *m && &r.day == d)
                            .map(|r| r.minutes).sum()).collect(),
                    }).collect();
                    (chart::bars(&format!("{} — {}", app.name, t.chart_title), &days, &series))
                    table.usage-rows {
                        thead { tr {
                            th { (t.day) } th { (t.mode) } th { (t.quality) } th { (t.minutes) }
                            th { (t.bytes) } th { (t.peak) }
                        } }
                        tbody { @for r in rows { tr class={ "mode-" (r.mode.as_str()) } {
                            td { (r.day) }
                            td { (i18n::usage_mode(lang, r.mode)) }
                            td { @match r.quality { Some(q) => { (i18n::quality(lang, q)) }, None => { "—" } } }
                            td.num { (format!("{:.2}", r.minutes)) }
                            td.num { (r.bytes) }
                            td.num { (r.peak_concurrency) }
                        } } }
                    }
                }
            }
        }
    };
    ctx.page(t.nav_usage, body)
}

async fn csv(State(state): State<AppState>, SignedIn { ctx, caller }: SignedIn) -> Response {
    let (apps, _) = match load(&state, &ctx, caller.scope()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut out =
        String::from("app_id,app_name,day,mode,quality,seconds,minutes,bytes,peak_concurrency\n");
    for (app, rows) in &apps {
        for r in rows {
            out.push_str(&format!(
                "{},{},{},{},{},{},{:.2},{},{}\n",
                app.id,
                csv_field(&app.name),
                r.day,
                r.mode.as_str(),
                r.quality.map_or("", |q| q.as_str()),
                r.seconds,
                r.minutes,
                r.bytes,
                r.peak_concurrency
            ));
        }
    }
    (
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                CONTENT_DISPOSITION,
                "attachment; filename=\"cloudproxy-usage.csv\"",
            ),
        ],
        out,
    )
        .into_response()
}

/// A CSV field (RFC 4180), with a leading `=`, `+`, `-` or `@` defused so a spreadsheet does
/// not run a name as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        // (field, as written to the CSV): plain, quoted for a comma, quotes doubled, and a
        // leading `=` defused so a spreadsheet does not run it as a formula.
        for (field, written) in [
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("=1+1", "'=1+1"),
        ] {
            assert_eq!(csv_field(field), written, "{field}");
        }
        assert_eq!(urlencode("a b&c"), "a%20b%26c");
    }
}
