//! `GET /metrics`: requests counted and timed by route template (never the raw path) and
//! status, relay syncs, live leases and the database pool, in OpenMetrics text.

use crate::common::{Env, OPERATOR_KEY, RELAY_KEY};
use crate::on_both_backends;
use crate::relays::{enabled_app, lease};

on_both_backends!(metrics_by_route_template);

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

async fn metrics_by_route_template(env: Env) {
    let (app, _owner) = enabled_app(&env, 2, 2).await;
    let k = Some(OPERATOR_KEY);
    // Three 404s under one route template, with different ids in the path.
    for id in ["a0a0a0a0missing", "b1b1b1b1missing", "c2c2c2c2missing"] {
        env.get(&format!("/v1/apps/{id}"), k).await.expect(404);
    }
    // A path no route has, and a made-up one: both only `unmatched`.
    env.get("/v1/no-such-thing-xyz", k).await.expect(404);
    env.get("/wp-admin/secret-guess", None).await.expect(404);
    // A relay syncs and takes a lease.
    env.sync(RELAY_KEY).await;
    env.post(
        "/v1/leases",
        Some(RELAY_KEY),
        lease("l1", "r1", &app, "force_tcp", "room", "u1"),
    )
    .await
    .expect(201);

    let resp = env.get("/metrics", None).await;
    assert_eq!(resp.status.as_u16(), 200);
    assert!(
        resp.content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        resp.content_type
    );
    let text = resp.body.as_str().expect("text").to_owned();
    let m =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));

    let route = r#"method="GET",route="/v1/apps/{id}",status="404""#;
    assert_eq!(
        m(&format!(
            "cloudproxy_control_http_requests_total{{{route}}}"
        )),
        3.0
    );
    assert_eq!(
        m(&format!(
            "cloudproxy_control_http_request_duration_seconds_count{{{route}}}"
        )),
        3.0
    );
    assert_eq!(
        m(r#"cloudproxy_control_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        2.0
    );
    assert_eq!(
        m(
            r#"cloudproxy_control_http_requests_total{method="POST",route="/v1/leases",status="201"}"#
        ),
        1.0
    );
    // Raw paths never become labels.
    for raw in ["missing", "no-such-thing", "wp-admin", app.as_str()] {
        assert!(!text.contains(raw), "{raw} leaked into\n{text}");
    }
    assert_eq!(m("cloudproxy_control_relay_syncs_total"), 1.0);
    assert_eq!(m("cloudproxy_control_leases"), 1.0);
    let max = m("cloudproxy_control_db_pool_max_connections");
    let open = m(r#"cloudproxy_control_db_pool_connections{state="idle"}"#)
        + m(r#"cloudproxy_control_db_pool_connections{state="in_use"}"#);
    assert!(
        max >= 1.0 && open >= 1.0 && open <= max,
        "open {open}, max {max}"
    );
    // A lease that ends is no longer counted.
    env.post(
        "/v1/leases/release",
        Some(RELAY_KEY),
        serde_json::json!({"relay_id": "r1", "lease_ids": ["l1"]}),
    )
    .await
    .expect(200);
    let text = env
        .get("/metrics", None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sample(&text, "cloudproxy_control_leases"),
        Some(0.0),
        "{text}"
    );
}
