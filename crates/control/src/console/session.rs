//! Console sessions and their CSRF tokens.
//!
//! Signing in exchanges an API key (the operator's or an owner's, checked exactly as the API
//! checks a bearer key) for a session: 32 random bytes, sent only as the `cp_session` cookie
//! (`HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` when the browser reached us over
//! TLS). The table is kept in this process's memory and holds, per session, who signed in,
//! a synchronizer CSRF token and the expiry: sessions end [`SESSION_TTL`] after sign-in, or
//! at sign-out, or when the process restarts (then everyone signs in again; nothing else is
//! lost). Only the SHA-256 of a session id is kept, so a memory dump does not hold usable
//! cookies.
//!
//! Every state-changing form carries the session's CSRF token in a hidden `csrf` field; a
//! POST whose token is missing or is not this session's is refused with 403 before anything
//! else is looked at. `SameSite=Strict` already keeps the cookie off cross-site requests; the
//! token (and the `Origin` check in [`super`]) is the second lock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::caller::Caller;
use crate::store::{hash_key, random_hex};

/// How long a session lasts after sign-in.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at once; past this the oldest goes (sign-in needs a valid key, so this only
/// bounds memory against a key holder signing in in a loop).
const MAX_SESSIONS: usize = 10_000;

/// The name of the cookie that carries the session id.
pub(crate) const SESSION_COOKIE: &str = "cp_session";

/// One signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// Who signed in: the operator or an app owner.
    pub caller: Caller,
    /// The synchronizer token every form of this session carries.
    pub csrf: String,
    /// When the session ends (Unix seconds).
    pub expires_at: i64,
}

/// The session table.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    // A std mutex: every use is a short map operation, never held across an `.await`.
    table: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `caller`: (session id for the cookie, the session).
    pub(crate) fn create(&self, caller: Caller, now: i64) -> (String, Session) {
        let id = random_hex(32);
        let session = Session {
            caller,
            csrf: random_hex(32),
            expires_at: now.saturating_add(SESSION_TTL.as_secs() as i64),
        };
        let mut table = self.lock();
        table.retain(|_, s| s.expires_at > now);
        if table.len() >= MAX_SESSIONS {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| k.clone())
            {
                table.remove(&oldest);
            }
        }
        table.insert(hash_key(&id), session.clone());
        (id, session)
    }

    /// The live session of a cookie value.
    pub(crate) fn get(&self, id: &str, now: i64) -> Option<Session> {
        let key = hash_key(id);
        let mut table = self.lock();
        match table.get(&key) {
            Some(s) if s.expires_at > now => Some(s.clone()),
            Some(_) => {
                table.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session (sign-out).
    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(&hash_key(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Session {
    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub(crate) fn csrf_ok(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| {
            t.len() == self.csrf.len()
                && t.bytes()
                    .zip(self.csrf.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub(crate) fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// `Set-Cookie` for a new session.
pub(crate) fn session_cookie(id: &str, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn clear_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_end() {
        let s = Sessions::default();
        let (id, session) = s.create(Caller::Operator, 1_000);
        assert!(s.get(&id, 1_001).is_some());
        assert!(s.get(&id, session.expires_at).is_none(), "expired");
        let (id, _) = s.create(Caller::Owner("o1".into()), 1_000);
        s.remove(&id);
        assert!(s.get(&id, 1_001).is_none(), "signed out");
        assert!(s.get("nonsense", 1_001).is_none());
    }

    #[test]
    fn csrf_is_per_session() {
        let s = Sessions::default();
        let (_, a) = s.create(Caller::Operator, 0);
        let (_, b) = s.create(Caller::Operator, 0);
        assert!(a.csrf_ok(Some(&a.csrf)));
        assert!(!a.csrf_ok(Some(&b.csrf)));
        assert!(!a.csrf_ok(None));
        assert!(!a.csrf_ok(Some("")));
    }

    #[test]
    fn cookies_parse() {
        let h = "lang=ja; cp_session=abc ; other=1";
        assert_eq!(cookie(h, "cp_session"), Some("abc"));
        assert_eq!(cookie(h, "lang"), Some("ja"));
        assert_eq!(cookie(h, "none"), None);
        assert!(session_cookie("x", true).ends_with("SameSite=Strict; Secure"));
        assert!(session_cookie("x", false).contains("HttpOnly"));
    }
}
