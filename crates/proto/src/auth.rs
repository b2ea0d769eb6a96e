//! Stateless TURN REST credentials (draft-uberti-behave-turn-rest, as coturn's
//! `--use-auth-secret`), and stateless nonces.
//!
//! ## Credential format
//!
//! ```text
//! username = "<unix-expiry>:<id>"
//! password = base64(HMAC-SHA1(secret, username))
//! ```
//!
//! The relay recomputes the password from the username, so it keeps no per-user state and needs
//! no database. The secret is chosen by the `<id>`:
//!
//! * `<id>` = `<app-id>:<key-id>[:<anything>]` where `<app-id>` is a configured application:
//!   that app's secret under `<key-id>`. An app may hold several key ids at once, so a rotated
//!   key keeps working until its `not_after` (the grace period).
//! * otherwise, the static shared secret (coturn-compatible), if one is configured.
//!
//! ## Nonces
//!
//! A nonce is 16 base64url characters: 4 bytes of expiry (Unix seconds, big-endian) and the
//! first 8 bytes of an HMAC-SHA256 tag over the expiry and the client's address, keyed with a
//! per-process random key. When the server offers RFC 8489 §9.2's password algorithms, the
//! nonce starts with the cookie `obMatJos2` and 4 base64 characters of security feature bits.
//! Checking a nonce needs no table, so an unauthenticated request creates no state at all,
//! and the challenge stays small (a 401 to a bare Allocate is at most 4× its size).

use std::collections::HashMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::config::{AppKey, AuthConfig};

/// The RFC 8489 §9.2 nonce cookie prefix.
pub const NONCE_COOKIE: &str = "obMatJos2";
/// Security feature set: bit 0 "Password algorithms" (the first of 24 bits, MSB first).
const FEATURES_B64: &str = "gAAA";
/// Characters of a nonce without the cookie: base64url of 4 + 8 bytes.
pub const NONCE_LEN: usize = 16;
/// Characters of a nonce with the cookie and feature bits.
pub const NONCE_LEN_WITH_COOKIE: usize = NONCE_COOKIE.len() + FEATURES_B64.len() + NONCE_LEN;

/// Builds `"<expiry>:<id>"`.
pub fn rest_username(expiry_unix: u64, id: &str) -> String {
    format!("{expiry_unix}:{id}")
}

/// `base64(HMAC-SHA1(secret, username))`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Why a credential was refused. Logged at debug level; the client only sees 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The username has no `<unix-expiry>:` prefix or is not a well-formed token username.
    #[error("username is not '<unix-expiry>:<id>'")]
    Malformed,
    /// The username's expiry is in the past.
    #[error("credential expired")]
    Expired,
    /// The application has no key with the username's key id.
    #[error("application has no key with this key id")]
    UnknownKey,
    /// The key was rotated out and its grace period is over.
    #[error("application key retired (rotation grace period over)")]
    KeyRetired,
    /// The username names no application and no static secret is configured.
    #[error("no secret is configured for this username")]
    NoSecret,
}

/// What a valid username says about who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity<'a> {
    /// The app id, when the credential came from an application key.
    pub app_id: Option<&'a str>,
    /// The `<id>` part, used as the quota key.
    pub id: &'a str,
}

/// Checks TURN REST usernames and derives their passwords.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    static_secret: Option<Vec<u8>>,
    apps: HashMap<String, Vec<AppKey>>,
}

impl Authenticator {
    /// An authenticator for the static secret and application keys in `config`.
    pub fn new(config: &AuthConfig) -> Self {
        let mut apps: HashMap<String, Vec<AppKey>> = HashMap::new();
        for k in &config.app_keys {
            apps.entry(k.app_id.clone()).or_default().push(k.clone());
        }
        Self {
            static_secret: config.static_secret.clone(),
            apps,
        }
    }

    /// Replaces the application keys (the control plane syncs them).
    pub fn set_app_keys(&mut self, keys: &[AppKey]) {
        self.apps.clear();
        for k in keys {
            self.apps
                .entry(k.app_id.clone())
                .or_default()
                .push(k.clone());
        }
    }

    /// The app a username names, if its id starts with a configured app id.
    pub fn app_of<'u>(&self, username: &'u str) -> Option<&'u str> {
        let app = username.split(':').nth(1)?;
        self.apps.contains_key(app).then_some(app)
    }

    /// Validates `username` at `now_unix` and returns the password the client must have used.
    pub fn password<'u>(
        &self,
        username: &'u str,
        now_unix: u64,
    ) -> Result<(String, Identity<'u>), CredentialError> {
        let (expiry, id) = username.split_once(':').ok_or(CredentialError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
        if id.is_empty() {
            return Err(CredentialError::Malformed);
        }
        if expiry < now_unix {
            return Err(CredentialError::Expired);
        }
        let mut parts = id.splitn(3, ':');
        let app = parts.next().unwrap_or_default();
        if let Some(keys) = self.apps.get(app) {
            let key_id = parts.next().ok_or(CredentialError::Malformed)?;
            let key = keys
                .iter()
                .find(|k| k.key_id == key_id)
                .ok_or(CredentialError::UnknownKey)?;
            if key.not_after.is_some_and(|t| t < now_unix) {
                return Err(CredentialError::KeyRetired);
            }
            let identity = Identity {
                app_id: Some(app),
                id,
            };
            return Ok((rest_password(&key.secret, username), identity));
        }
        match &self.static_secret {
            Some(secret) => Ok((
                rest_password(secret, username),
                Identity { app_id: None, id },
            )),
            None => Err(CredentialError::NoSecret),
        }
    }
}

/// Why a nonce was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// Not one of ours (or for another client): answer 401 with a fresh nonce.
    Invalid,
    /// Ours but expired: answer 438 Stale Nonce.
    Stale,
}

/// Mints and checks stateless nonces.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

impl NonceKey {
    /// A nonce key from 32 secret bytes (the server draws them at random when it starts).
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn tag(&self, expiry: u32, client: &std::net::SocketAddr) -> [u8; 8] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(&expiry.to_be_bytes());
        match client.ip() {
            std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        let mut out = [0u8; 8];
        out.copy_from_slice(&mac.finalize().into_bytes()[..8]);
        out
    }

    /// A nonce for `client`, valid until `expiry_unix`; `features`: with the RFC 8489 cookie
    /// announcing password algorithms.
    pub fn mint(&self, expiry_unix: u64, client: &std::net::SocketAddr, features: bool) -> String {
        let expiry = u32::try_from(expiry_unix).unwrap_or(u32::MAX);
        let mut raw = [0u8; 12];
        raw[..4].copy_from_slice(&expiry.to_be_bytes());
        raw[4..].copy_from_slice(&self.tag(expiry, client));
        let mut s = String::with_capacity(NONCE_LEN_WITH_COOKIE);
        if features {
            s.push_str(NONCE_COOKIE);
            s.push_str(FEATURES_B64);
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw, &mut s);
        s
    }

    /// Whether `nonce` was minted for `client` with this key and has not expired at `now_unix`.
    pub fn check(
        &self,
        nonce: &str,
        client: &std::net::SocketAddr,
        now_unix: u64,
    ) -> Result<(), NonceError> {
        let rest = nonce
            .strip_prefix(NONCE_COOKIE)
            .map_or(Some(nonce), |r| r.strip_prefix(FEATURES_B64))
            .ok_or(NonceError::Invalid)?;
        if rest.len() != NONCE_LEN {
            return Err(NonceError::Invalid);
        }
        let mut raw = [0u8; 12];
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(rest, &mut raw) {
            Ok(12) => {}
            _ => return Err(NonceError::Invalid),
        }
        let expiry = u32::from_be_bytes(raw[..4].try_into().expect("4 bytes"));
        let want = self.tag(expiry, client);
        if want
            .iter()
            .zip(&raw[4..])
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            != 0
        {
            return Err(NonceError::Invalid);
        }
        if u64::from(expiry) < now_unix {
            return Err(NonceError::Stale);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_coturn_format() {
        // HMAC-SHA1("secret", "1700000000:alice") computed independently with openssl:
        // printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        let p = rest_password(b"secret", "1700000000:alice");
        assert_eq!(p, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
        assert_ne!(p, rest_password(b"secret2", "1700000000:alice"));
    }

    #[test]
    fn static_secret_and_app_keys() {
        let auth = Authenticator::new(&AuthConfig {
            static_secret: Some(b"s".to_vec()),
            app_keys: vec![
                AppKey {
                    app_id: "app1".into(),
                    key_id: "k2".into(),
                    secret: b"new".to_vec(),
                    not_after: None,
                },
                AppKey {
                    app_id: "app1".into(),
                    key_id: "k1".into(),
                    secret: b"old".to_vec(),
                    not_after: Some(1000),
                },
            ],
        });
        let (p, id) = auth.password("2000:bob", 10).unwrap();
        assert_eq!(p, rest_password(b"s", "2000:bob"));
        assert_eq!(id.app_id, None);
        let (p, id) = auth.password("2000:app1:k2:chan:uid", 10).unwrap();
        assert_eq!(p, rest_password(b"new", "2000:app1:k2:chan:uid"));
        assert_eq!(id.app_id, Some("app1"));
        let (p, _) = auth.password("2000:app1:k1:x", 999).unwrap();
        assert_eq!(p, rest_password(b"old", "2000:app1:k1:x"));
        assert_eq!(
            auth.password("2000:app1:k1:x", 1001),
            Err(CredentialError::KeyRetired)
        );
        assert_eq!(
            auth.password("2000:app1:k9:x", 1),
            Err(CredentialError::UnknownKey)
        );
        assert_eq!(auth.password("5:bob", 10), Err(CredentialError::Expired));
        assert_eq!(auth.password("bob", 10), Err(CredentialError::Malformed));
        assert_eq!(auth.password("x:bob", 10), Err(CredentialError::Malformed));
        let none = Authenticator::default();
        assert_eq!(none.password("2000:bob", 1), Err(CredentialError::NoSecret));
    }

    #[test]
    fn nonces_expire_and_bind_to_the_client() {
        let k = NonceKey::new([7; 32]);
        let a: std::net::SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: std::net::SocketAddr = "192.0.2.1:5001".parse().unwrap();
        for features in [true, false] {
            let n = k.mint(100, &a, features);
            assert_eq!(n.starts_with(NONCE_COOKIE), features);
            let len = if features {
                NONCE_LEN_WITH_COOKIE
            } else {
                NONCE_LEN
            };
            assert_eq!(n.len(), len);
            assert_eq!(k.check(&n, &a, 100), Ok(()));
            assert_eq!(k.check(&n, &a, 101), Err(NonceError::Stale));
            assert_eq!(k.check(&n, &b, 50), Err(NonceError::Invalid));
            let other = NonceKey::new([8; 32]);
            assert_eq!(other.check(&n, &a, 50), Err(NonceError::Invalid));
        }
        assert_eq!(k.check("garbage", &a, 50), Err(NonceError::Invalid));
        assert_eq!(
            k.check("obMatJos2gAAA!!!!", &a, 50),
            Err(NonceError::Invalid)
        );
        assert_eq!(k.check("", &a, 50), Err(NonceError::Invalid));
    }
}
