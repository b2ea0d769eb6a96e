//! The long-term credential check with stateless nonces (RFC 8489 §9.2), and the 401
//! challenge.

use super::*;

/// Who a request authenticated as.
#[derive(Debug)]
pub(super) struct Authenticated {
    /// The USERNAME as sent (an allocation keeps it: later requests must use the same).
    pub username: String,
    /// What the per-user allocation quota counts: the app user, or the username.
    pub quota_key: String,
}

impl Server {
    /// RFC 8489 §9.2.4 long-term credential check with stateless nonces. On success fills in
    /// the reply key and returns the username and quota key.
    pub(super) fn authenticate(
        &mut self,
        msg: &Message<'_>,
        client: ClientAddr,
        now: Instant,
        reply: &mut ReplyAuth,
    ) -> Result<Authenticated, ()> {
        let has_sha1 = msg.has_attribute(AttributeType::new(ATTR_MESSAGE_INTEGRITY));
        let has_sha256 = msg.has_attribute(AttributeType::new(ATTR_MESSAGE_INTEGRITY_SHA256));
        if !has_sha1 && !has_sha256 {
            self.challenge(client, reply, 401, "Unauthorized", None, now);
            return Err(());
        }
        let username = msg.attribute::<Username>().ok();
        let realm = msg.attribute::<Realm>().ok();
        let nonce = msg.attribute::<Nonce>().ok();
        let (Some(username), Some(realm), Some(nonce)) = (username, realm, nonce) else {
            self.respond_error(
                client,
                reply,
                400,
                "Bad Request: USERNAME, REALM and NONCE are required with MESSAGE-INTEGRITY",
            );
            return Err(());
        };
        let now_unix = self.unix(now);
        match self
            .nonce_key
            .check(nonce.nonce(), &client.remote, now_unix)
        {
            Ok(()) => {}
            Err(NonceError::Stale) => {
                self.challenge(client, reply, 438, "Stale Nonce", None, now);
                return Err(());
            }
            Err(NonceError::Invalid) => {
                self.challenge(
                    client,
                    reply,
                    401,
                    "Unauthorized: bad nonce",
                    Some(AuthFailure::BadNonce),
                    now,
                );
                return Err(());
            }
        }
        if realm.realm() != self.config.realm {
            self.challenge(
                client,
                reply,
                401,
                "Unauthorized: wrong realm",
                Some(AuthFailure::WrongRealm),
                now,
            );
            return Err(());
        }
        // RFC 8489 §9.2.4: PASSWORD-ALGORITHM must come with the PASSWORD-ALGORITHMS we sent.
        let algorithm = match msg.attribute::<PasswordAlgorithm>() {
            Ok(a) => {
                let echoed = msg.attribute::<PasswordAlgorithms>().ok();
                let ours = password_algorithms();
                if echoed.is_none_or(|e| e.algorithms() != ours.algorithms()) {
                    self.respond_error(
                        client,
                        reply,
                        400,
                        "Bad Request: PASSWORD-ALGORITHMS does not match",
                    );
                    return Err(());
                }
                match a.algorithm() {
                    PasswordAlgorithmValue::MD5 => KeyAlgorithm::Md5,
                    PasswordAlgorithmValue::SHA256 => KeyAlgorithm::Sha256,
                    #[allow(unreachable_patterns)]
                    _ => {
                        self.respond_error(
                            client,
                            reply,
                            400,
                            "Bad Request: unknown PASSWORD-ALGORITHM",
                        );
                        return Err(());
                    }
                }
            }
            Err(_) => KeyAlgorithm::Md5,
        };
        let user = username.username();
        let (password, quota_key) = match self.auth.password(user, now_unix) {
            Ok((p, id)) => (p, id.id.to_owned()),
            Err(e) => {
                tracing::debug!(%client, username = user, reason = %e, "credential refused");
                let reason = match (self.auth.app_of(user), e) {
                    (None, CredentialError::NoSecret) => {
                        let named = user.split(':').nth(1).unwrap_or_default();
                        refusal(None, &format!("unknown app '{named}'"))
                    }
                    (app, e) => refusal(app, &e.to_string()),
                };
                self.challenge(
                    client,
                    reply,
                    401,
                    &reason,
                    Some(AuthFailure::Credential(e)),
                    now,
                );
                return Err(());
            }
        };
        let key = LongTermKey::derive(algorithm, user, &self.config.realm, &password);
        // RFC 8489 §14.6: when both are present, MESSAGE-INTEGRITY-SHA256 is the one checked.
        let kind = if has_sha256 {
            IntegrityKind::Sha256
        } else {
            IntegrityKind::Sha1
        };
        let ok = msg
            .raw_attribute_and_offset(AttributeType::new(kind.attribute_type()))
            .is_some_and(|(offset, raw)| {
                integrity::verify(kind, &key, msg.as_bytes(), offset, &raw.value)
            });
        if !ok {
            tracing::debug!(%client, username = user, "message integrity check failed");
            let app = self.auth.app_of(user);
            let reason = refusal(app, "wrong password (forged credential or wrong secret)");
            self.challenge(
                client,
                reply,
                401,
                &reason,
                Some(AuthFailure::BadIntegrity),
                now,
            );
            return Err(());
        }
        reply.key = Some((key, kind));
        Ok(Authenticated {
            username: user.to_owned(),
            quota_key,
        })
    }

    /// 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS, unsigned.
    pub(super) fn challenge(
        &mut self,
        client: ClientAddr,
        reply: &ReplyAuth,
        code: u16,
        reason: &str,
        failure: Option<AuthFailure>,
        now: Instant,
    ) {
        if let Some(reason) = failure {
            self.events.push_back(Event::AuthFailed { client, reason });
        }
        let expiry = self.unix(now) + self.config.lifetimes.nonce.as_secs();
        // RFC 8489 §9.2's password-algorithms feature (the nonce cookie and
        // PASSWORD-ALGORITHMS) costs 44 bytes: offered when the answer stays within the
        // reflection budget, which any real client's request (it carries
        // REQUESTED-TRANSPORT or credentials) leaves room for.
        let padded = |n: usize| 4 + n.div_ceil(4) * 4;
        let with_features = 20
            + padded(4 + reason.len())
            + padded(self.config.realm.len())
            + padded(crate::auth::NONCE_LEN_WITH_COOKIE)
            + 12 // PASSWORD-ALGORITHMS with MD5 and SHA-256
            + if reply.fingerprint { 8 } else { 0 };
        let features = with_features <= REFLECTION_FACTOR * reply.request_len;
        let nonce = self.nonce_key.mint(expiry, &client.remote, features);
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Error, reply.method),
            reply.transaction,
            MessageWriteVec::new(),
        );
        let _ = w.add_attribute(&error_code(code, reason));
        if let Ok(r) = Realm::new(&self.config.realm) {
            let _ = w.add_attribute(&r);
        }
        if let Ok(n) = Nonce::new(&nonce) {
            let _ = w.add_attribute(&n);
        }
        if features {
            let _ = w.add_attribute(&password_algorithms());
        }
        let unsigned = ReplyAuth {
            key: None,
            ..reply.clone()
        };
        self.finish_and_send(w, client, &unsigned, Some(code));
    }
}
