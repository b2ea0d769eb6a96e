//! Application keys and the user tokens they sign, as the relay, the media service and the
//! SDK's tests give and present them: an [`App`] is one app key; its [`App::auth`] is the
//! configuration that admits its tokens, and it mints tokens valid for some seconds from now
//! (negative: already expired) or until a fixed Unix time.

use std::time::{SystemTime, UNIX_EPOCH};

use cloudproxy_proto::token::Token;
use cloudproxy_proto::{AppKey, AuthConfig};

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// One app key: the app, the key's id and its secret.
#[derive(Debug, Clone, Copy)]
pub struct App {
    /// The app's id.
    pub id: &'static str,
    /// The key's id within the app.
    pub key_id: &'static str,
    /// The key's secret, which signs the tokens.
    pub secret: &'static [u8],
}

impl App {
    /// The key as servers are given it (no expiry).
    pub fn key(&self) -> AppKey {
        AppKey {
            app_id: self.id.into(),
            key_id: self.key_id.into(),
            secret: self.secret.to_vec(),
            not_after: None,
        }
    }

    /// Credentials that admit this key's tokens and nothing else (no static secret).
    pub fn auth(&self) -> AuthConfig {
        AuthConfig {
            static_secret: None,
            app_keys: vec![self.key()],
        }
    }

    /// An encoded token for `uid` in `channel`, expiring at `expiry` (Unix seconds).
    pub fn token_until(&self, channel: &str, uid: u32, expiry: u64) -> String {
        Token::mint(self.id, self.key_id, self.secret, channel, uid, expiry)
            .expect("a mintable token")
            .encode()
    }

    /// An encoded token for `uid` in `channel`, expiring `ttl` seconds from now (in the past
    /// when negative).
    pub fn token(&self, channel: &str, uid: u32, ttl: i64) -> String {
        let expiry = unix_now()
            .checked_add_signed(ttl)
            .expect("an expiry after 1970");
        self.token_until(channel, uid, expiry)
    }
}
