//! Sessions and users, and the service that stores them (encrypted) in the databroker.
//!
//! INVARIANT: a session's `claims` are always `id_token.claims` overridden claim by claim
//! by `user_info` — both the newest responses *for this session*. They are recomputed
//! from scratch on every change ([`derive_claims`]); nothing from an older response
//! survives, and no other session or user record is ever consulted. The policy view, the
//! identity JWT and the user info page are all derived from these stored claims.

use crate::databroker::crypto::{RecordCipher, short};
use crate::databroker::{Expect, Kind, Put, Store, StoreError, StoredRecord, now_unix};
use crate::idp::{SecretString, TokenSet, VerifiedIdToken};
use portcullis_common::api::{Claim, ClaimValue, Header, SessionView, claim_value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The OAuth token of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuthToken {
    /// Access token (for the user-info endpoint).
    pub access_token: SecretString,
    /// Refresh token, if any.
    pub refresh_token: Option<SecretString>,
    /// Unix seconds the access token expires, if known.
    pub expires_at: Option<i64>,
}

/// Identity manager bookkeeping for one session (persisted, so every replica agrees).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RefreshState {
    /// Unix seconds of the last successful token refresh (0 = never since login).
    pub token_refreshed_at: i64,
    /// Unix seconds of the last user-info refresh: drives the schedule (0 = due now; set
    /// to 0 to make the identity manager re-read user info at once).
    pub user_info_at: i64,
    /// Wall-clock unix milliseconds at which the stored user-info response's fetch
    /// *started* (0 = unknown). A user-info result is applied only if its fetch started
    /// later (compare-and-swap inside the rewrite), so of two concurrent refreshes the
    /// older response can never overwrite the newer one (a removed group cannot come
    /// back). Separate from `user_info_at`, which may be reset to 0 to reschedule.
    #[serde(default)]
    pub user_info_fetched_ms: i64,
    /// Consecutive IdP failures (drives the backoff).
    pub failures: u32,
    /// Unix seconds before which the identity manager must not retry (backoff).
    pub retry_at: i64,
}

/// One login session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Session id: 43 characters of base64url (256 random bits), as in the cookie.
    pub id: String,
    /// The IdP subject (`sub`).
    pub user_id: String,
    /// Unix seconds the session was created.
    pub issued_at: i64,
    /// Unix seconds the session ends (`issued_at + cookie_expire`).
    pub expires_at: i64,
    /// The newest ID token.
    pub id_token: VerifiedIdToken,
    /// The newest OAuth token.
    pub oauth_token: OAuthToken,
    /// The newest user-info response.
    pub user_info: Map<String, Value>,
    /// The OAuth client (`idp_client_id`) that issued the tokens.
    pub client_id: String,
    /// Derived: `id_token.claims` overridden by `user_info` ([`derive_claims`]).
    pub claims: Map<String, Value>,
    /// Identity manager state.
    #[serde(default)]
    pub refresh: RefreshState,
    /// Databroker version this copy was read at (0 = not stored yet). Not persisted:
    /// the store owns versions.
    #[serde(skip)]
    pub version: u64,
}

/// A user: the newest user info seen for a subject (informational; policy never reads it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The IdP subject.
    pub id: String,
    /// `email` claim.
    pub email: Option<String>,
    /// `name` claim.
    pub name: Option<String>,
    /// Newest claims (ID token + user info) of the most recently updated session.
    pub claims: Map<String, Value>,
    /// Unix seconds of the update.
    pub updated_at: i64,
}

/// The claims of a session: the ID token's claims, overridden claim by claim by the
/// user-info response (the fresher source). A pure function of its inputs.
pub fn derive_claims(
    id_token: &Map<String, Value>,
    user_info: &Map<String, Value>,
) -> Map<String, Value> {
    let mut claims = id_token.clone();
    for (k, v) in user_info {
        claims.insert(k.clone(), v.clone());
    }
    claims
}

impl Session {
    /// Recompute [`Session::claims`] from the stored ID token and user info.
    pub fn rederive(&mut self) {
        self.claims = derive_claims(&self.id_token.claims, &self.user_info);
    }

    /// A string claim (e.g. `email`, `name`).
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// The `email` claim.
    pub fn email(&self) -> Option<&str> {
        self.claim_str("email")
    }

    /// The `groups` claim as strings (non-strings skipped).
    pub fn groups(&self) -> Vec<String> {
        match self.claims.get("groups") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    /// The policy view of this session: flattened claims, exactly from `self.claims`.
    pub fn view(&self, jwt_claims_headers: &[(String, String)]) -> SessionView {
        let claims = flatten_claims(&self.claims);
        let claim_headers = jwt_claims_headers
            .iter()
            .filter_map(|(header, claim)| {
                let c = claims.iter().find(|c| &c.key == claim)?;
                let value = c
                    .values
                    .iter()
                    .map(scalar_text)
                    .collect::<Vec<_>>()
                    .join(",");
                Some(Header {
                    name: header.to_ascii_lowercase(),
                    value,
                })
            })
            .collect();
        SessionView {
            session_id: self.id.clone(),
            user_id: self.user_id.clone(),
            email: self.email().unwrap_or_default().to_owned(),
            claims,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            version: self.version,
            claim_headers,
            client_id: self.client_id.clone(),
        }
    }
}

fn scalar_text(v: &ClaimValue) -> String {
    match &v.kind {
        Some(claim_value::Kind::Str(s)) => s.clone(),
        Some(claim_value::Kind::Number(n)) => {
            if n.fract() == 0.0 && n.abs() < 1e15 {
                format!("{}", *n as i64)
            } else {
                n.to_string()
            }
        }
        Some(claim_value::Kind::Bool(b)) => b.to_string(),
        None => String::new(),
    }
}

/// Flatten claims the way Pomerium's policy sees them, with the evaluator's own
/// implementation (`policy_compiler::eval::Claims::from_json`), so the filter evaluates
/// exactly these values: nested objects joined with dots, arrays as lists, scalars as
/// one-element lists. Sorted by name.
pub fn flatten_claims(claims: &Map<String, Value>) -> Vec<Claim> {
    use policy_compiler::eval::{ClaimValue as V, Claims};
    Claims::from_json(claims)
        .iter()
        .map(|(key, values)| Claim {
            key: key.to_owned(),
            values: values
                .iter()
                .map(|v| ClaimValue {
                    kind: match v {
                        V::Str(s) => Some(claim_value::Kind::Str(s.clone())),
                        V::Number(n) => Some(claim_value::Kind::Number(*n)),
                        V::Bool(b) => Some(claim_value::Kind::Bool(*b)),
                        // null / object / nested list: an element that equals nothing.
                        V::Other => None,
                    },
                })
                .collect(),
        })
        .collect()
}

/// A wall-clock timestamp (unix ms) for "a user-info fetch starts now", strictly
/// increasing within this process (so two fetches here are always ordered, even within
/// one millisecond). Across replicas ordering is as good as their clocks agree.
pub fn fetch_stamp_ms() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = crate::databroker::now_unix_ms();
    let prev = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or(now);
    now.max(prev.saturating_add(1))
}

/// What the login callback hands over to create a session.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The IdP subject (`sub` of the ID token).
    pub user_id: String,
    /// The verified ID token of the login.
    pub id_token: VerifiedIdToken,
    /// The token endpoint's answer (its `id_token` field is ignored: use `id_token`).
    pub tokens: TokenSet,
    /// The user-info response of the login.
    pub user_info: Map<String, Value>,
    /// The OAuth client that ran the login.
    pub client_id: String,
    /// Session lifetime (`cookie_expire`).
    pub lifetime: Duration,
}

/// Errors of the session service.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// (De)serialisation failure (never carries the data).
    #[error("session record encoding failed")]
    Encoding,
    /// The session changed concurrently too often to update.
    #[error("session `{0}` changed concurrently")]
    Conflict(String),
}

/// Creates, reads, updates and deletes sessions; all encryption happens here.
#[derive(Clone)]
pub struct SessionService {
    store: Arc<dyn Store>,
    cipher: RecordCipher,
    /// Key of [`SessionService::user_key`] (derived from the databroker key).
    user_key: Arc<portcullis_common::Secret>,
    identity: crate::settings::IdentitySettings,
}

/// Generate a session id: 32 random bytes, base64url without padding (43 characters).
pub fn new_session_id() -> Result<String, StoreError> {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| StoreError::Backend(format!("no randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

impl SessionService {
    /// A service over `store`, encrypting with the key derived from `shared_secret`.
    pub fn new(
        store: Arc<dyn Store>,
        shared_secret: &portcullis_common::Secret,
        identity: crate::settings::IdentitySettings,
    ) -> Self {
        let databroker = portcullis_common::keys::derive(
            shared_secret,
            portcullis_common::keys::Purpose::Databroker,
        );
        let user_key = portcullis_common::keys::hmac_sha256(
            databroker.expose(),
            &[b"portcullis/databroker/user-id/v1"],
        );
        SessionService {
            store,
            cipher: RecordCipher::new(shared_secret),
            user_key: Arc::new(portcullis_common::Secret::from_bytes(user_key)),
            identity,
        }
    }

    /// The name a user id has in the databroker (record owner, user record id): a keyed
    /// hash (HMAC-SHA256, key derived from the databroker key), base64url. Backends see
    /// it in key names (`own:session:<it>`, `rec:user:<it>`), indexes and the change log,
    /// so a `sub` that is an email address never appears at rest in plaintext.
    pub fn user_key(&self, user_id: &str) -> String {
        use base64::Engine as _;
        let mac =
            portcullis_common::keys::hmac_sha256(self.user_key.expose(), &[user_id.as_bytes()]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Identity manager settings.
    pub fn identity_settings(&self) -> &crate::settings::IdentitySettings {
        &self.identity
    }

    /// Create a session after a successful login (and update the user record).
    pub async fn create_session(&self, new: NewSession) -> Result<Session, SessionError> {
        let now = now_unix();
        let lifetime = i64::try_from(new.lifetime.as_secs()).unwrap_or(i64::MAX);
        let mut session = Session {
            id: new_session_id()?,
            user_id: new.user_id,
            issued_at: now,
            expires_at: now.saturating_add(lifetime),
            id_token: new.id_token,
            oauth_token: OAuthToken {
                access_token: new.tokens.access_token,
                refresh_token: new.tokens.refresh_token,
                expires_at: new.tokens.access_token_expires_at,
            },
            user_info: new.user_info,
            client_id: new.client_id,
            claims: Map::new(),
            refresh: RefreshState {
                token_refreshed_at: now,
                user_info_at: now,
                // The login's user info was fetched just before this (an upper bound).
                user_info_fetched_ms: fetch_stamp_ms(),
                failures: 0,
                retry_at: 0,
            },
            version: 0,
        };
        session.rederive();
        let put = self.session_put(&session, Expect::Absent)?;
        match self.store.put(put).await? {
            Some(v) => session.version = v,
            // 256 random bits collided: astronomically unlikely; refuse rather than overwrite.
            None => return Err(SessionError::Conflict(short(&session.id).to_owned())),
        }
        self.put_user(&session).await?;
        Ok(session)
    }

    /// A live session by id (`None` if unknown, expired or deleted).
    pub async fn get(&self, id: &str) -> Result<Option<Session>, SessionError> {
        if portcullis_common::cookie::SessionId::parse(id).is_none() {
            return Ok(None);
        }
        match self.store.get(Kind::Session, id).await? {
            Some(rec) => self.decode_session(&rec).map(Some),
            None => Ok(None),
        }
    }

    /// Delete a session (sign-out, termination). Returns whether it existed. Followers
    /// (filters, replicas) learn it through the change stream.
    pub async fn delete(&self, id: &str) -> Result<bool, SessionError> {
        Ok(self
            .store
            .delete(Kind::Session, id, Expect::Any)
            .await?
            .is_some())
    }

    /// Delete a session only if it is still at `version` (the identity manager's
    /// termination must not delete a session a newer login or update replaced).
    pub async fn delete_at(&self, id: &str, version: u64) -> Result<bool, SessionError> {
        Ok(self
            .store
            .delete(Kind::Session, id, Expect::Version(version))
            .await?
            .is_some())
    }

    /// Every live session of a user.
    pub async fn list_for_user(&self, user_id: &str) -> Result<Vec<Session>, SessionError> {
        let recs = self
            .store
            .list_owned(Kind::Session, &self.user_key(user_id))
            .await?;
        let mut out = Vec::with_capacity(recs.len());
        for rec in &recs {
            match self.decode_session(rec) {
                Ok(s) => out.push(s),
                Err(e) => {
                    tracing::warn!(session = short(&rec.id), error = %e, "skipping unreadable session")
                }
            }
        }
        Ok(out)
    }

    /// The user record.
    pub async fn get_user(&self, user_id: &str) -> Result<Option<User>, SessionError> {
        match self.store.get(Kind::User, &self.user_key(user_id)).await? {
            Some(rec) => {
                let plain = self.cipher.open(Kind::User, &rec.id, &rec.data)?;
                serde_json::from_slice(&plain)
                    .map(Some)
                    .map_err(|_| SessionError::Encoding)
            }
            None => Ok(None),
        }
    }

    /// Write `session` if it is still at `session.version` (compare-and-swap).
    /// On success `session.version` is updated and `true` returned; `false` means it was
    /// changed or deleted meanwhile (re-read and retry, or give up if deleted).
    pub async fn update(&self, session: &mut Session) -> Result<bool, SessionError> {
        session.rederive();
        let put = self.session_put(session, Expect::Version(session.version))?;
        match self.store.put(put).await? {
            Some(v) => {
                session.version = v;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Update the user record from a session's current claims.
    pub async fn put_user(&self, session: &Session) -> Result<(), SessionError> {
        let user = User {
            id: session.user_id.clone(),
            email: session.email().map(str::to_owned),
            name: session.claim_str("name").map(str::to_owned),
            claims: session.claims.clone(),
            updated_at: now_unix(),
        };
        let plain = serde_json::to_vec(&user).map_err(|_| SessionError::Encoding)?;
        let id = self.user_key(&user.id);
        let data = self.cipher.seal(Kind::User, &id, &plain)?;
        self.store
            .put(Put {
                kind: Kind::User,
                id,
                owner: String::new(),
                data,
                expires_at: None,
                due_at: None,
                expect: Expect::Any,
            })
            .await?;
        Ok(())
    }

    /// When the identity manager next has to look at `session`.
    pub fn due_at(&self, session: &Session) -> i64 {
        crate::identity::next_due(session, &self.identity)
    }

    fn session_put(&self, session: &Session, expect: Expect) -> Result<Put, SessionError> {
        let plain = serde_json::to_vec(session).map_err(|_| SessionError::Encoding)?;
        let data = self.cipher.seal(Kind::Session, &session.id, &plain)?;
        Ok(Put {
            kind: Kind::Session,
            id: session.id.clone(),
            owner: self.user_key(&session.user_id),
            data,
            expires_at: Some(session.expires_at),
            due_at: Some(self.due_at(session)),
            expect,
        })
    }

    /// Decrypt and decode a stored session record.
    pub fn decode_session(&self, rec: &StoredRecord) -> Result<Session, SessionError> {
        let plain = self.cipher.open(Kind::Session, &rec.id, &rec.data)?;
        let mut s: Session = serde_json::from_slice(&plain).map_err(|_| SessionError::Encoding)?;
        if s.id != rec.id {
            return Err(StoreError::Corrupt(short(&rec.id).to_owned()).into());
        }
        s.version = rec.version;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn user_info_overrides_claim_by_claim_and_nothing_old_survives() {
        let id =
            obj(json!({"sub": "u", "groups": ["a", "b"], "department": "x", "email": "old@x"}));
        let info = obj(json!({"groups": ["b"], "email": "new@x"}));
        let c = derive_claims(&id, &info);
        assert_eq!(c["groups"], json!(["b"]), "replace, never merge lists");
        assert_eq!(c["email"], json!("new@x"));
        assert_eq!(
            c["department"],
            json!("x"),
            "claims user info lacks come from the ID token"
        );
        // Pure function: deriving again from newer inputs forgets older ones entirely.
        let c2 = derive_claims(&obj(json!({"sub": "u"})), &obj(json!({})));
        assert_eq!(c2, obj(json!({"sub": "u"})));
    }

    #[test]
    fn views_flatten_like_the_evaluator() {
        let claims = obj(json!({
            "groups": ["a", 1, true, null, {"x": 1}],
            "org": {"unit": {"name": "eng"}, "n": 2},
            "email": "E@x.com",
            "empty": [],
        }));
        let flat = flatten_claims(&claims);
        let keys: Vec<&str> = flat.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["email", "empty", "groups", "org.n", "org.unit.name"]
        );
        let groups = &flat
            .iter()
            .find(|c| c.key == "groups")
            .map(|c| c.values.clone())
            .unwrap_or_default();
        assert_eq!(groups.len(), 5);
        assert_eq!(groups[0].kind, Some(claim_value::Kind::Str("a".into())));
        assert_eq!(groups[1].kind, Some(claim_value::Kind::Number(1.0)));
        assert_eq!(groups[2].kind, Some(claim_value::Kind::Bool(true)));
        assert_eq!(
            groups[3].kind, None,
            "null is an element that equals nothing"
        );
        assert_eq!(groups[4].kind, None);
        // Same answer as the evaluator's own flattening.
        let evaluator = policy_compiler::eval::Claims::from_json(&claims);
        assert_eq!(evaluator.len(), flat.len());
    }

    #[test]
    fn session_ids_are_valid_cookie_ids() {
        for _ in 0..20 {
            let id = new_session_id().unwrap();
            assert_eq!(id.len(), 43);
            assert!(portcullis_common::cookie::SessionId::parse(&id).is_some());
        }
        assert_ne!(new_session_id().unwrap(), new_session_id().unwrap());
    }
}
