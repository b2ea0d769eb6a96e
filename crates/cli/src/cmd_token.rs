//! `cloudproxy token`: mints a user token (see `cloudproxy_proto::token`): one credential that
//! joins the media service and authenticates at the relay as a TURN REST username/password.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use cloudproxy_proto::token::{Token, TokenError};
use serde_json::json;

use crate::failure::Failure;

/// Flags of `cloudproxy token`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TokenArgs {
    /// The application the token is for (1-64 of A-Z a-z 0-9 _ . -).
    #[arg(long, value_name = "APP_ID")]
    pub app_id: String,
    /// Which of the app's keys signs it (key rotation).
    #[arg(long, value_name = "KEY_ID", default_value = "k1")]
    pub key_id: String,
    /// The app's secret under --key-id (as given to `cloudproxy media --app` and the relay).
    #[arg(
        long,
        value_name = "SECRET",
        env = crate::SECRET_ENV,
        hide_env_values = true
    )]
    pub secret: String,
    /// Channel the user may join (1-64 of A-Z a-z 0-9 _ . -).
    #[arg(long, value_name = "CHANNEL")]
    pub channel: String,
    /// The user's id in the channel.
    #[arg(long, value_name = "UID")]
    pub uid: u32,
    /// Lifetime (`3600`, `1h`, `1d`; a bare number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "1d")]
    pub ttl: std::time::Duration,
    /// Print one JSON object (token, username, password, claims, expiry) instead of the token.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(args: TokenArgs) -> Result<(), Failure> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")
        .map_err(Failure::Runtime)?
        .as_secs();
    let (token, expires) = mint(&args, now).map_err(Failure::Usage)?;
    std::io::stdout()
        .lock()
        .write_all(render(&args, &token, expires).as_bytes())
        .context("writing to stdout")
        .map_err(Failure::Runtime)
}

/// Mints the token, valid until `now_unix + ttl`. Errors name the flag.
fn mint(args: &TokenArgs, now_unix: u64) -> anyhow::Result<(Token, u64)> {
    let ttl = args.ttl.as_secs();
    if ttl == 0 {
        bail!("--ttl: must be at least 1 second");
    }
    let expires = now_unix.checked_add(ttl).context("--ttl: too large")?;
    let token = Token::mint(
        &args.app_id,
        &args.key_id,
        args.secret.as_bytes(),
        &args.channel,
        args.uid,
        expires,
    )
    .map_err(|e| {
        let (flag, value) = match e {
            TokenError::AppId => ("--app-id", args.app_id.as_str()),
            TokenError::KeyId => ("--key-id", args.key_id.as_str()),
            TokenError::Channel => ("--channel", args.channel.as_str()),
            TokenError::EmptySecret => return anyhow!("--secret: must not be empty"),
            other => return anyhow!("cannot mint the token: {other}"),
        };
        anyhow!("{flag} {value:?}: {e}")
    })?;
    Ok((token, expires))
}

fn render(args: &TokenArgs, token: &Token, expires: u64) -> String {
    if !args.json {
        return format!("{}\n", token.encode());
    }
    let v = json!({
        "token": token.encode(),
        "username": token.username,
        "password": token.password,
        "app_id": args.app_id,
        "key_id": args.key_id,
        "channel": args.channel,
        "uid": args.uid,
        "expires": expires,
    });
    format!("{v:#}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_flags;
    use cloudproxy_proto::auth::rest_password;

    fn args(extra: &[&str]) -> TokenArgs {
        let base = [
            "token",
            "--app-id",
            "app1",
            "--secret",
            "s3cret",
            "--channel",
            "room",
            "--uid",
            "42",
            "--ttl",
            "100",
        ];
        parse_flags::<TokenArgs>(base.iter().chain(extra)).unwrap()
    }

    #[test]
    fn text_and_json_output() {
        let a = args(&[]);
        let (t, expires) = mint(&a, 1_000).unwrap();
        assert_eq!(expires, 1_100);
        assert_eq!(t.username, "1100:app1:k1:room:42");
        assert_eq!(t.password, rest_password(b"s3cret", &t.username));
        assert_eq!(render(&a, &t, expires), format!("{}\n", t.encode()));

        let a = args(&["--key-id", "k2", "--json"]);
        let (t, expires) = mint(&a, 1_000).unwrap();
        let v: serde_json::Value = serde_json::from_str(&render(&a, &t, expires)).unwrap();
        assert_eq!(v["token"], t.encode());
        assert_eq!(v["username"], "1100:app1:k2:room:42");
        assert_eq!(v["password"], t.password);
        assert_eq!(
            (&v["app_id"], &v["channel"], &v["uid"], &v["expires"]),
            (&json!("app1"), &json!("room"), &json!(42), &json!(1100))
        );
    }

    #[test]
    fn errors_name_the_flag() {
        let e = |a: TokenArgs| mint(&a, 1).unwrap_err().to_string();
        let mut a = args(&[]);
        a.app_id = "bad:id".into();
        assert!(e(a).starts_with("--app-id \"bad:id\": "));
        let mut a = args(&[]);
        a.channel = "a b".into();
        assert!(e(a).starts_with("--channel"));
        let mut a = args(&[]);
        a.key_id.clear();
        assert!(e(a).starts_with("--key-id"));
        let mut a = args(&[]);
        a.secret.clear();
        assert_eq!(e(a), "--secret: must not be empty");
        let mut a = args(&[]);
        a.ttl = std::time::Duration::ZERO;
        assert!(e(a).starts_with("--ttl"));
        assert!(mint(&args(&[]), u64::MAX)
            .unwrap_err()
            .to_string()
            .starts_with("--ttl"));
        let cmd = |extra: &[&str]| {
            let mut v = vec!["token", "--app-id", "a", "--secret", "s", "--channel", "c"];
            v.extend(extra);
            parse_flags::<TokenArgs>(v).err().map(|e| e.to_string())
        };
        // --ttl has a default (one day) and takes units.
        assert!(cmd(&["--uid", "1"]).is_none());
        assert!(cmd(&["--uid", "1", "--ttl", "30m"]).is_none());
        let uid = cmd(&["--uid", "-1", "--ttl", "5"]).unwrap();
        assert!(uid.contains("--uid"), "{uid}");
        assert!(cmd(&["--uid", "1", "--ttl", "5"]).is_none());
    }
}
