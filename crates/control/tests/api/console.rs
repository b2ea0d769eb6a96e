//! The console over HTTP, without a browser: sign-in and sign-out, the session cookie's
//! attributes, the security headers, CSRF (a POST without the session's token, or with
//! another session's, is 403), the `Origin` check, owners seeing only their own apps in every
//! view, escaping and the language choice.

use reqwest::header::{ACCEPT_LANGUAGE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{client_builder, Env, OPERATOR_KEY, RELAY_KEY};
use crate::on_both_backends;
use crate::requests::form;

on_both_backends!(
    owners_see_only_their_own_apps_in_every_view,
    forms_need_the_sessions_csrf_token,
    sessions_cookies_headers_language_and_escaping
);

/// A browser without a cookie jar: one session cookie, kept by hand.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

struct Page {
    status: StatusCode,
    body: String,
    headers: reqwest::header::HeaderMap,
}

impl Page {
    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token");
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

fn no_redirects() -> reqwest::Client {
    client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl Browser {
    /// Signs in with `key`; panics unless it worked.
    async fn sign_in(env: &Env, key: &str) -> Browser {
        let http = no_redirects();
        let resp = post_sign_in(&http, &env.base, key, None).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "sign-in");
        assert_eq!(resp.headers()[LOCATION], "/apps");
        let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();
        assert!(cookie.starts_with("cp_session="), "{set}");
        Browser {
            http,
            base: env.base.clone(),
            cookie,
        }
    }

    async fn get(&self, path: &str) -> Page {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        page(resp).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap();
        page(resp).await
    }
}

/// Posts the sign-in form with `key`, from a page of `origin` if given.
async fn post_sign_in(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut req = http.post(format!("{base}/signin")).form(&[("key", key)]);
    if let Some(origin) = origin {
        req = req.header(ORIGIN, origin);
    }
    req.send().await.unwrap()
}

async fn page(resp: reqwest::Response) -> Page {
    Page {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

/// Files a Force TCP request for `app` and reports usage for it, through the API.
async fn with_request_and_usage(env: &Env, key: &str, app: &str) -> String {
    let id = env.file_request(app, key, form("japan", 1, 2, 1)).await;
    let day = cloudproxy_control::time::day(cloudproxy_control::time::now_unix());
    let report = json!({"report_id": format!("r-{app}"), "relay_id": "relay-1", "records": [
        {"app_id": app, "day": day, "mode": "force_tcp", "quality": "720p",
         "seconds": 600, "bytes": 123456, "peak_concurrency": 1}]});
    env.post("/v1/usage", Some(RELAY_KEY), report)
        .await
        .expect(200);
    id
}

async fn owners_see_only_their_own_apps_in_every_view(env: Env) {
    let (_, key_a) = env.owner("Owner A").await;
    let (_, key_b) = env.owner("Owner B").await;
    let app_a = env.app(&key_a, "alpha-visible-app").await;
    let app_b = env.app(&key_b, "bravo-hidden-app").await;
    let (id_a, id_b) = (
        app_a["app"]["id"].as_str().unwrap().to_owned(),
        app_b["app"]["id"].as_str().unwrap().to_owned(),
    );
    with_request_and_usage(&env, &key_a, &id_a).await;
    let req_b = with_request_and_usage(&env, &key_b, &id_b).await;

    let a = Browser::sign_in(&env, &key_a).await;
    let hidden = ["bravo-hidden-app", id_b.as_str(), req_b.as_str()];
    let mut checked = 0;
    for path in [
        "/apps".to_owned(),
        "/requests".to_owned(),
        format!("/requests?app={id_b}"),
        "/usage".to_owned(),
        "/usage.csv".to_owned(),
        "/usage?days=366".to_owned(),
        "/allowlist".to_owned(),
        "/allowlist/japan".to_owned(),
    ] {
        let p = a.get(&path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}");
        for h in hidden {
            assert!(!p.body.contains(h), "{path} shows owner B's {h}");
        }
        checked += 1;
    }
    // A's own app is there, so the pages really list apps.
    assert!(a.get("/apps").await.body.contains("alpha-visible-app"));
    assert!(a.get("/usage").await.body.contains(&id_a));
    assert!(a.get("/usage.csv").await.body.contains(&id_a));
    // B's app by id: not found, exactly like an id that does not exist.
    for path in [
        format!("/apps/{id_b}"),
        format!("/usage?app={id_b}"),
        format!("/usage.csv?app={id_b}"),
    ] {
        let p = a.get(&path).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!p.body.contains("bravo-hidden-app"), "{path}");
        checked += 1;
    }
    // The operator-only view.
    assert_eq!(a.get("/regions").await.status, StatusCode::FORBIDDEN);
    // Actions on B's app and request, with A's valid token: not found, nothing changed.
    let csrf = a.get("/apps").await.csrf();
    for (path, form) in [
        (
            format!("/apps/{id_b}/rotate"),
            vec![("csrf", csrf.as_str())],
        ),
        (
            format!("/apps/{id_b}/suspend"),
            vec![("csrf", csrf.as_str())],
        ),
        (
            format!("/requests/{req_b}/activate"),
            vec![("csrf", csrf.as_str())],
        ),
        (
            "/requests".to_owned(),
            vec![
                ("csrf", csrf.as_str()),
                ("app_id", id_b.as_str()),
                ("region", "japan"),
                ("sdk", "web"),
                ("use_case", "x"),
                ("max_concurrent_channels", "1"),
                ("max_users_per_channel", "1"),
                ("max_proxy_users_per_channel", "1"),
                ("quality", "720p"),
                ("mode", "force_udp"),
            ],
        ),
    ] {
        let p = a.post(&path, &form).await;
        assert!(
            matches!(p.status.as_u16(), 403 | 404),
            "{path}: {} {}",
            p.status,
            p.body
        );
        assert!(!p.body.contains("bravo-hidden-app"));
        checked += 1;
    }
    let b_app = env
        .get(&format!("/v1/apps/{id_b}"), Some(&key_b))
        .await
        .expect(200);
    assert_eq!(b_app["keys"].as_array().unwrap().len(), 1, "not rotated");
    assert_eq!(b_app["status"], "active", "not suspended");
    let b_reqs = env
        .get(&format!("/v1/apps/{id_b}/requests"), Some(&key_b))
        .await
        .expect(200);
    assert_eq!(b_reqs.as_array().unwrap().len(), 1, "no request filed");

    // The operator sees both.
    let op = Browser::sign_in(&env, OPERATOR_KEY).await;
    let apps = op.get("/apps").await.body;
    assert!(apps.contains("alpha-visible-app") && apps.contains("bravo-hidden-app"));
    assert_eq!(op.get("/regions").await.status, StatusCode::OK);
    println!("owner isolation: {checked} views and actions checked");
}

async fn forms_need_the_sessions_csrf_token(env: Env) {
    let (_, key) = env.owner("Owner").await;
    let a = Browser::sign_in(&env, &key).await;
    let b = Browser::sign_in(&env, OPERATOR_KEY).await;
    let token_a = a.get("/apps").await.csrf();
    let token_b = b.get("/apps").await.csrf();
    assert_ne!(token_a, token_b, "one token per session");

    for form in [
        // No token.
        vec![("name", "no-token")],
        // Another session's token with this session's cookie.
        vec![("name", "other-token"), ("csrf", token_b.as_str())],
        // An empty token.
        vec![("name", "empty"), ("csrf", "")],
    ] {
        let p = a.post("/apps", &form).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{form:?}: {}", p.body);
    }
    // A token without any session cookie.
    let anon = no_redirects()
        .post(format!("{}/apps", env.base))
        .form(&[("name", "anon"), ("csrf", token_a.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), StatusCode::FORBIDDEN);
    // Sign-out without the token does not sign out.
    assert_eq!(a.post("/signout", &[]).await.status, StatusCode::FORBIDDEN);
    // A POST from another origin, token and all.
    let cross = a
        .http
        .post(format!("{}/apps", env.base))
        .header(COOKIE, &a.cookie)
        .header(ORIGIN, "https://evil.example")
        .form(&[("name", "cross-site"), ("csrf", token_a.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    // Nothing of that was created.
    let apps = env.get("/v1/apps", Some(OPERATOR_KEY)).await.expect_list();
    assert!(apps.is_empty(), "{apps:?}");

    // With its own token it works, and shows the secret once.
    let p = a
        .post(
            "/apps",
            &[("name", "with-token"), ("csrf", token_a.as_str())],
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
    let apps = env.get("/v1/apps", Some(&key)).await.expect_list();
    assert_eq!(apps.len(), 1);
    let synced = env.sync(OPERATOR_KEY).await;
    let secret = synced["apps"][0]["keys"][0]["secret"].as_str().unwrap();
    assert!(p.body.contains(secret), "the new secret is on the page");
    assert!(
        !a.get("/apps").await.body.contains(secret),
        "and only there"
    );
}

async fn sessions_cookies_headers_language_and_escaping(env: Env) {
    let http = no_redirects();
    // Not signed in: the sign-in form; views send you there.
    let home = http.get(format!("{}/", env.base)).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    let csp = home.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "default-src 'self'",
        "script-src 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(home.headers()["x-content-type-options"], "nosniff");
    assert_eq!(home.headers()["x-frame-options"], "DENY");
    assert!(home.text().await.unwrap().contains("name=\"key\""));
    let apps = http.get(format!("{}/apps", env.base)).send().await.unwrap();
    assert_eq!(apps.status(), StatusCode::SEE_OTHER);
    // A wrong key and the relay key are refused.
    for key in ["wrong-key-0123456789", RELAY_KEY, ""] {
        let r = post_sign_in(&http, &env.base, key, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{key}");
        assert!(r.headers().get(SET_COOKIE).is_none());
    }
    // The cookie: HttpOnly, SameSite=Strict; Secure when the form came from an https page.
    let r = post_sign_in(&http, &env.base, OPERATOR_KEY, None).await;
    let plain = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        plain.contains("HttpOnly") && plain.contains("SameSite=Strict"),
        "{plain}"
    );
    assert!(!plain.contains("Secure"), "{plain}");
    let host = env.base.trim_start_matches("http://").to_owned();
    let https = format!("https://{host}");
    let r = post_sign_in(&http, &env.base, OPERATOR_KEY, Some(&https)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let secure = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(secure.contains("; Secure"), "{secure}");

    // An app whose name is HTML is shown as text.
    let op = Browser::sign_in(&env, OPERATOR_KEY).await;
    let evil = "<img src=x onerror=alert(1)>";
    env.app(OPERATOR_KEY, evil).await;
    let p = op.get("/apps").await;
    assert!(
        p.body.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "escaped"
    );
    assert!(!p.body.contains(evil), "never raw");

    // Language: Accept-Language, then ?lang= (which sets a cookie), then the cookie.
    let ja = op
        .http
        .get(format!("{}/apps", env.base))
        .header(COOKIE, &op.cookie)
        .header(ACCEPT_LANGUAGE, "ja-JP,ja;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap();
    let ja = ja.text().await.unwrap();
    assert!(
        ja.contains("<html lang=\"ja\">") && ja.contains("アプリを作成"),
        "ja"
    );
    let en = op.get("/apps?lang=en").await;
    assert!(en.body.contains("Create an app"));
    let to_ja = op.get("/apps?lang=ja").await;
    let lang_cookie = to_ja.headers[SET_COOKIE].to_str().unwrap();
    assert!(lang_cookie.starts_with("lang=ja"), "{lang_cookie}");
    let public = http
        .get(format!("{}/allowlist", env.base))
        .header(COOKIE, "lang=ja")
        .send()
        .await
        .unwrap();
    assert!(public.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let public = public.text().await.unwrap();
    assert!(
        public.contains("許可リスト") && public.contains("日本"),
        "ja allow-list"
    );

    // Sign-out ends the session for good.
    let csrf = op.get("/apps").await.csrf();
    let out = op.post("/signout", &[("csrf", csrf.as_str())]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(op.get("/apps").await.status, StatusCode::SEE_OTHER);
}
