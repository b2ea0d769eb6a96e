//! User tokens: one credential per user that works at the relay (as a TURN REST
//! username/password, also as a browser's `iceServers` `username`/`credential`) and at the media
//! service.
//!
//! ## Format
//!
//! ```text
//! username = "<expiry>:<app_id>:<key_id>:<channel>:<uid>"
//! password = base64(HMAC-SHA1(app secret under key_id, username))
//! token    = username "#" password          (one string for CLIs and apps)
//! ```
//!
//! This is exactly the application-key form of [`crate::auth`] (`<expiry>:<app-id>:<key-id>:…`),
//! so the relay's [`Authenticator`] accepts a token's username/password unchanged. `app_id`,
//! `key_id` and `channel` are 1 to 64 characters of `[A-Za-z0-9_.-]` and `uid` is a `u32` in
//! canonical decimal, so neither `:` nor `#` can appear inside a part and a username has exactly
//! one parse. The base64 alphabet has no `#`.
//!
//! The media service verifies a token with [`verify`]: the same [`Authenticator`] derives the
//! password (checking expiry, unknown key ids and retired keys), then the passwords are compared
//! in constant time. Only application keys mint media tokens: a username that selects the static
//! shared secret has no app id and is refused there.

use crate::auth::{rest_password, Authenticator, CredentialError};
pub use crate::config::{is_valid_name, MAX_NAME_LEN};

/// The separator between username and password in [`Token::encode`].
pub const SEPARATOR: char = '#';

/// What is wrong with a token or with the parts it is minted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The app id is empty, longer than 64 characters or has a character outside `A-Z a-z 0-9 _ . -`.
    #[error("app id must be 1 to 64 characters of A-Z a-z 0-9 _ . -")]
    AppId,
    /// The key id is empty, longer than 64 characters or has a forbidden character.
    #[error("key id must be 1 to 64 characters of A-Z a-z 0-9 _ . -")]
    KeyId,
    /// The channel name is empty, longer than 64 characters or has a forbidden character.
    #[error("channel must be 1 to 64 characters of A-Z a-z 0-9 _ . -")]
    Channel,
    /// The uid is not a decimal `u32`.
    #[error("uid must be a number from 0 to 4294967295 in decimal")]
    Uid,
    /// The expiry is not a decimal Unix time.
    #[error("expiry must be a unix time in decimal")]
    Expiry,
    /// The app secret to sign with is empty.
    #[error("secret must not be empty")]
    EmptySecret,
    /// The username does not have the five `:`-separated fields.
    #[error("username is not '<expiry>:<app_id>:<key_id>:<channel>:<uid>'")]
    Username,
    /// The password is not non-empty standard base64.
    #[error("password is not base64")]
    Password,
    /// The text is not `<username>#<password>` with one `#`.
    #[error("token is not '<username>#<password>'")]
    Shape,
}

/// A user token. `username`/`password` are the TURN REST credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// `<expiry>:<app_id>:<key_id>:<channel>:<uid>`, the TURN USERNAME.
    pub username: String,
    /// Base64 HMAC of the username under the app key's secret, the TURN password.
    pub password: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a token's username says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims<'a> {
    /// Unix time after which the token is refused.
    pub expiry: u64,
    /// The application the token was minted for.
    pub app_id: &'a str,
    /// The application key that signed it.
    pub key_id: &'a str,
    /// The channel (call or room) the user may join.
    pub channel: &'a str,
    /// The user id within the application.
    pub uid: u32,
}

impl Token {
    /// Mints a token for `uid` in `channel`, valid until `expiry_unix`, signed with the app's
    /// `secret` under `key_id`.
    pub fn mint(
        app_id: &str,
        key_id: &str,
        secret: &[u8],
        channel: &str,
        uid: u32,
        expiry_unix: u64,
    ) -> Result<Token, TokenError> {
        check_name(app_id, TokenError::AppId)?;
        check_name(key_id, TokenError::KeyId)?;
        check_name(channel, TokenError::Channel)?;
        if secret.is_empty() {
            return Err(TokenError::EmptySecret);
        }
        let username = format!("{expiry_unix}:{app_id}:{key_id}:{channel}:{uid}");
        let password = rest_password(secret, &username);
        Ok(Token { username, password })
    }

    /// `username#password`.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(self.username.len() + 1 + self.password.len());
        s.push_str(&self.username);
        s.push(SEPARATOR);
        s.push_str(&self.password);
        s
    }

    /// Parses `username#password`, checking the shape of both parts (not the signature).
    pub fn decode(encoded: &str) -> Result<Token, TokenError> {
        let (username, password) = split(encoded)?;
        claims(username)?;
        Ok(Token {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The claims of this token's username.
    pub fn claims(&self) -> Result<Claims<'_>, TokenError> {
        claims(&self.username)
    }
}

/// Splits an encoded token into `(username, password)` without allocating. The password must
/// be non-empty base64.
pub fn split(encoded: &str) -> Result<(&str, &str), TokenError> {
    let (username, password) = encoded.split_once(SEPARATOR).ok_or(TokenError::Shape)?;
    if username.is_empty() || password.contains(SEPARATOR) {
        return Err(TokenError::Shape);
    }
    let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    if password.is_empty() || !password.bytes().all(base64) {
        return Err(TokenError::Password);
    }
    Ok((username, password))
}

/// Parses and checks `"<expiry>:<app_id>:<key_id>:<channel>:<uid>"`.
pub fn claims(username: &str) -> Result<Claims<'_>, TokenError> {
    let mut parts = username.split(':');
    let (Some(expiry), Some(app_id), Some(key_id), Some(channel), Some(uid), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TokenError::Username);
    };
    let expiry = parse_decimal(expiry, 20)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or(TokenError::Expiry)?;
    check_name(app_id, TokenError::AppId)?;
    check_name(key_id, TokenError::KeyId)?;
    check_name(channel, TokenError::Channel)?;
    let uid = parse_decimal(uid, 10)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(TokenError::Uid)?;
    Ok(Claims {
        expiry,
        app_id,
        key_id,
        channel,
        uid,
    })
}

fn check_name(s: &str, err: TokenError) -> Result<(), TokenError> {
    if is_valid_name(s) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Canonical decimal only (no sign, no leading zeros), so one number has one spelling and a
/// username has one parse.
fn parse_decimal(s: &str, max_digits: usize) -> Option<u128> {
    let canonical = !s.is_empty()
        && s.len() <= max_digits
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// Why the media service refused a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyReason {
    /// The token does not have the token shape.
    Malformed(TokenError),
    /// Past its expiry.
    Expired,
    /// The app id is not a configured application (static-secret credentials land here too:
    /// they carry no app id).
    UnknownApp,
    /// The app has no key with the token's key id.
    UnknownKey,
    /// The key's rotation grace period is over.
    KeyRetired,
    /// The password is not the signature of the username: forged, altered, or signed with
    /// another secret.
    BadSignature,
}

/// A refused token: the app id it names (when it names a well-formed one) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyError<'a> {
    /// The app id the username names, when it is well-formed (for per-app logs and metrics).
    pub app_id: Option<&'a str>,
    /// Why the token was refused.
    pub reason: VerifyReason,
}

impl std::fmt::Display for VerifyError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.app_id {
            Some(app) => write!(f, "token for app '{app}' ")?,
            None => f.write_str("token ")?,
        }
        match self.reason {
            VerifyReason::Malformed(e) => write!(f, "is malformed: {e}"),
            VerifyReason::Expired => f.write_str("expired"),
            VerifyReason::UnknownApp => f.write_str("names an app this service does not know"),
            VerifyReason::UnknownKey => f.write_str("names a key id the app does not have"),
            VerifyReason::KeyRetired => f.write_str("is signed with a retired key"),
            VerifyReason::BadSignature => {
                f.write_str("has a wrong signature (forged, altered or signed with another secret)")
            }
        }
    }
}

impl std::error::Error for VerifyError<'_> {}

/// Verifies `token` at `now_unix`: shape, expiry, app key, signature.
pub fn verify<'t>(
    auth: &Authenticator,
    token: &'t Token,
    now_unix: u64,
) -> Result<Claims<'t>, VerifyError<'t>> {
    verify_credential(auth, &token.username, &token.password, now_unix)
}

/// [`verify`] on a username and password that are not in a [`Token`] (e.g. borrowed from a
/// packet by [`split`]).
pub fn verify_credential<'t>(
    auth: &Authenticator,
    username: &'t str,
    password: &str,
    now_unix: u64,
) -> Result<Claims<'t>, VerifyError<'t>> {
    let claims = claims(username).map_err(|e| VerifyError {
        app_id: app_id_of(username),
        reason: VerifyReason::Malformed(e),
    })?;
    let refuse = |reason| VerifyError {
        app_id: Some(claims.app_id),
        reason,
    };
    let (want, identity) = auth.password(username, now_unix).map_err(|e| {
        refuse(match e {
            CredentialError::Expired => VerifyReason::Expired,
            CredentialError::UnknownKey => VerifyReason::UnknownKey,
            CredentialError::KeyRetired => VerifyReason::KeyRetired,
            CredentialError::Malformed => VerifyReason::Malformed(TokenError::Username),
            CredentialError::NoSecret => VerifyReason::UnknownApp,
        })
    })?;
    if identity.app_id != Some(claims.app_id) {
        return Err(refuse(VerifyReason::UnknownApp));
    }
    if !constant_time_eq(want.as_bytes(), password.as_bytes()) {
        return Err(refuse(VerifyReason::BadSignature));
    }
    Ok(claims)
}

/// [`verify`] on a token as [`Token::encode`] writes it (`username#password`), split by
/// [`split`] without allocating: what a server does with a token it receives.
pub fn verify_encoded<'t>(
    auth: &Authenticator,
    encoded: &'t str,
    now_unix: u64,
) -> Result<Claims<'t>, VerifyError<'t>> {
    let (username, password) = split(encoded).map_err(|e| VerifyError {
        app_id: None,
        reason: VerifyReason::Malformed(e),
    })?;
    verify_credential(auth, username, password, now_unix)
}

/// The app id of a username that is not a valid token, if its second part looks like one.
fn app_id_of(username: &str) -> Option<&str> {
    let app = username.split(':').nth(1)?;
    is_valid_name(app).then_some(app)
}

/// Compares without an early exit on the first differing byte. The length is not secret (a
/// password is always 28 base64 characters).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppKey, AuthConfig};

    fn key(app: &str, id: &str, secret: &[u8], not_after: Option<u64>) -> AppKey {
        AppKey {
            app_id: app.into(),
            key_id: id.into(),
            secret: secret.to_vec(),
            not_after,
        }
    }

    fn auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            static_secret: Some(b"static".to_vec()),
            app_keys: vec![
                key("app1", "k1", b"old", Some(1_000)),
                key("app1", "k2", b"new", None),
                key("app2", "k1", b"other", None),
            ],
        })
    }

    #[test]
    fn mint_encode_decode_round_trip() {
        let t = Token::mint("app1", "k2", b"new", "room-1", 42, 2_000).unwrap();
        assert_eq!(t.username, "2000:app1:k2:room-1:42");
        assert_eq!(t.password, rest_password(b"new", "2000:app1:k2:room-1:42"));
        let s = t.encode();
        assert_eq!(s, format!("2000:app1:k2:room-1:42#{}", t.password));
        assert_eq!(Token::decode(&s).unwrap(), t);
        let c = t.claims().unwrap();
        assert_eq!(
            c,
            Claims {
                expiry: 2_000,
                app_id: "app1",
                key_id: "k2",
                channel: "room-1",
                uid: 42,
            }
        );
        let max = Token::mint("a", "k", b"s", "c", u32::MAX, u64::MAX).unwrap();
        assert_eq!(
            Token::decode(&max.encode()).unwrap().claims().unwrap().uid,
            u32::MAX
        );
        assert!(!format!("{t:?}").contains(&t.password));
    }

    #[test]
    fn verify_encoded_splits_then_verifies() {
        let a = auth();
        let t = Token::mint("app1", "k2", b"new", "room-1", 42, 2_000).unwrap();
        let encoded = t.encode();
        assert_eq!(verify_encoded(&a, &encoded, 1_500), Ok(t.claims().unwrap()));
        let expired = verify_encoded(&a, &encoded, 2_001).unwrap_err();
        assert_eq!(expired.app_id, Some("app1"));
        assert_eq!(expired.reason, VerifyReason::Expired);
        assert_eq!(
            verify_encoded(&a, "a#b#c", 1_500),
            Err(VerifyError {
                app_id: None,
                reason: VerifyReason::Malformed(TokenError::Shape),
            })
        );
        let forged = encoded.replace("room-1", "room-2");
        let e = verify_encoded(&a, &forged, 1_500).unwrap_err();
        assert_eq!(e.app_id, Some("app1"));
        assert_ne!(e.reason, VerifyReason::Expired);
    }

    #[test]
    fn mint_names_the_bad_part() {
        let long = "x".repeat(65);
        for (app, key_id, secret, channel, err) in [
            ("", "k", &b"s"[..], "c", TokenError::AppId),
            ("a:b", "k", b"s", "c", TokenError::AppId),
            (&long, "k", b"s", "c", TokenError::AppId),
            ("a", "k#", b"s", "c", TokenError::KeyId),
            ("a", "k", b"s", "c/d", TokenError::Channel),
            ("a", "k", b"s", &long, TokenError::Channel),
            ("a", "k", b"", "c", TokenError::EmptySecret),
        ] {
            assert_eq!(
                Token::mint(app, key_id, secret, channel, 1, 1),
                Err(err),
                "{app} {key_id} {channel}"
            );
        }
        assert!(Token::mint(&"x".repeat(64), "k_.-9", b"s", "C", 0, 0).is_ok());
    }

    #[test]
    fn claims_are_strict() {
        assert!(claims("1:a:k:c:0").is_ok());
        for (bad, err) in [
            ("1:a:k:c", TokenError::Username),
            ("1:a:k:c:1:extra", TokenError::Username),
            ("x:a:k:c:1", TokenError::Expiry),
            ("+1:a:k:c:1", TokenError::Expiry),
            ("01:a:k:c:1", TokenError::Expiry),
            ("99999999999999999999:a:k:c:1", TokenError::Expiry),
            ("1::k:c:1", TokenError::AppId),
            ("1:a::c:1", TokenError::KeyId),
            ("1:a:k::1", TokenError::Channel),
            ("1:a:k:c:", TokenError::Uid),
            ("1:a:k:c:4294967296", TokenError::Uid),
            ("1:a:k:c:+1", TokenError::Uid),
            ("1:a:k:c:007", TokenError::Uid),
            ("1:a:k:c:-1", TokenError::Uid),
        ] {
            assert_eq!(claims(bad), Err(err), "{bad}");
        }
    }

    #[test]
    fn decode_rejects_bad_shapes() {
        let good = Token::mint("a", "k", b"s", "c", 1, 5).unwrap().encode();
        assert_eq!(Token::decode("no-separator"), Err(TokenError::Shape));
        assert_eq!(Token::decode("#abc"), Err(TokenError::Shape));
        assert_eq!(Token::decode("1:a:k:c:1#"), Err(TokenError::Password));
        assert_eq!(Token::decode("1:a:k:c:1#a#b"), Err(TokenError::Shape));
        assert_eq!(Token::decode("1:a:k:c:1#a b"), Err(TokenError::Password));
        assert_eq!(Token::decode("1:a:k:c#abc"), Err(TokenError::Username));
        assert_eq!(Token::decode(""), Err(TokenError::Shape));
        assert!(Token::decode(&good).is_ok());
    }

    #[test]
    fn the_relay_accepts_the_token_unchanged() {
        // The relay's check: derive the password from the username, compare with the client's.
        let t = Token::mint("app1", "k2", b"new", "room", 7, 2_000).unwrap();
        let (password, identity) = auth().password(&t.username, 1_500).unwrap();
        assert_eq!(password, t.password);
        assert_eq!(identity.app_id, Some("app1"));
        assert_eq!(identity.id, "app1:k2:room:7");
    }

    #[test]
    fn verify_accepts_good_tokens() {
        let auth = auth();
        let t = Token::mint("app1", "k2", b"new", "room", 7, 2_000).unwrap();
        let c = verify(&auth, &t, 2_000).unwrap();
        assert_eq!((c.app_id, c.channel, c.uid), ("app1", "room", 7));
        // The old key works until its not_after.
        let old = Token::mint("app1", "k1", b"old", "room", 7, 2_000).unwrap();
        assert!(verify(&auth, &old, 1_000).is_ok());
    }

    #[test]
    fn verify_refuses_with_app_id_and_reason() {
        let auth = auth();
        let check = |t: &Token, now: u64| {
            let e = verify(&auth, t, now).unwrap_err();
            (e.app_id.map(str::to_owned), e.reason, e.to_string())
        };
        let t = Token::mint("app1", "k2", b"new", "room", 7, 2_000).unwrap();
        let (app, reason, msg) = check(&t, 2_001);
        assert_eq!(
            (app.as_deref(), reason),
            (Some("app1"), VerifyReason::Expired)
        );
        assert_eq!(msg, "token for app 'app1' expired");

        let old = Token::mint("app1", "k1", b"old", "room", 7, 2_000).unwrap();
        assert_eq!(check(&old, 1_001).1, VerifyReason::KeyRetired);

        let unknown_key = Token::mint("app1", "k9", b"new", "room", 7, 2_000).unwrap();
        assert_eq!(check(&unknown_key, 1).1, VerifyReason::UnknownKey);

        let wrong_secret = Token::mint("app2", "k1", b"guess", "room", 7, 2_000).unwrap();
        let (app, reason, _) = check(&wrong_secret, 1);
        assert_eq!(
            (app.as_deref(), reason),
            (Some("app2"), VerifyReason::BadSignature)
        );

        // A static-secret credential has no app: refused at the media service.
        let no_app = Token::mint("nobody", "k1", b"static", "room", 7, 2_000).unwrap();
        let (app, reason, msg) = check(&no_app, 1);
        assert_eq!(
            (app.as_deref(), reason),
            (Some("nobody"), VerifyReason::UnknownApp)
        );
        assert!(msg.contains("'nobody'"), "{msg}");
        assert_eq!(
            Authenticator::default()
                .password(&no_app.username, 1)
                .unwrap_err(),
            CredentialError::NoSecret
        );
        let empty = Authenticator::default();
        assert_eq!(
            verify(&empty, &t, 1).unwrap_err().reason,
            VerifyReason::UnknownApp
        );

        let garbage = Token {
            username: "1:app2:k1".into(),
            password: "x".into(),
        };
        let (app, reason, msg) = check(&garbage, 1);
        assert_eq!(app.as_deref(), Some("app2"));
        assert_eq!(reason, VerifyReason::Malformed(TokenError::Username));
        assert!(
            msg.starts_with("token for app 'app2' is malformed"),
            "{msg}"
        );
        let nameless = Token {
            username: "junk".into(),
            password: "x".into(),
        };
        assert_eq!(check(&nameless, 1).0, None);
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let auth = auth();
        let t = Token::mint("app1", "k2", b"new", "room", 7, 2_000).unwrap();
        for username in [
            "2000:app1:k2:room:8",
            "2000:app1:k2:other:7",
            "3000:app1:k2:room:7",
        ] {
            let forged = Token {
                username: username.into(),
                password: t.password.clone(),
            };
            assert_eq!(
                verify(&auth, &forged, 1).unwrap_err().reason,
                VerifyReason::BadSignature,
                "{username}"
            );
        }
        let mut flipped = t.clone();
        flipped.password.replace_range(
            0..1,
            if t.password.starts_with('A') {
                "B"
            } else {
                "A"
            },
        );
        assert_eq!(
            verify(&auth, &flipped, 1).unwrap_err().reason,
            VerifyReason::BadSignature
        );
        let mut short = t.clone();
        short.password.pop();
        assert_eq!(
            verify(&auth, &short, 1).unwrap_err().reason,
            VerifyReason::BadSignature
        );
    }
}
