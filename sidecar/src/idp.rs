//! What the sidecar needs from an identity provider after login: token refresh and
//! user info. The OIDC implementation lives in [`crate::oidc`]; the identity manager and
//! its tests only see these traits, so a fake IdP can drive every refresh path.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, `Send` future: keeps the traits below dyn-compatible without `async_trait`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A token or other credential whose `Debug` prints `***`, so it never reaches a log
/// (the same type the config loader uses for client secrets).
pub use portcullis_common::SecretString;

/// An ID token whose signature, `iss`, `aud`, `exp` (and `nonce` at login) were verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifiedIdToken {
    /// The compact JWT as received (a credential: never logged).
    pub raw: SecretString,
    /// Its claims, exactly as the IdP sent them.
    pub claims: Map<String, Value>,
    /// `exp`, unix seconds.
    pub expires_at: i64,
}

/// The answer of a token endpoint (authorization code or refresh grant).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSet {
    /// The OAuth access token (used for the user-info endpoint).
    pub access_token: SecretString,
    /// A refresh token, if the IdP issued (or rotated) one. `None` on refresh means
    /// "keep the previous one".
    pub refresh_token: Option<SecretString>,
    /// Unix seconds the access token expires (`expires_in` resolved); `None` if unknown.
    pub access_token_expires_at: Option<i64>,
    /// A new verified ID token, if the IdP issued one (not every IdP does on refresh).
    pub id_token: Option<VerifiedIdToken>,
}

/// How an IdP call failed. The identity manager decides from the variant alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdpError {
    /// The refresh token was rejected (`invalid_grant`): the IdP ended the session.
    /// The sidecar terminates the session.
    #[error("the identity provider rejected the grant: {0}")]
    InvalidGrant(String),
    /// The user-info endpoint answered 401/403: the user is disabled or the token revoked.
    /// The sidecar terminates the session.
    #[error("the identity provider refused the user: {0}")]
    UserDisabled(String),
    /// Network error, timeout, 5xx: transient. The session is kept, the call retried with
    /// backoff. An IdP outage never deletes sessions.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// Any other protocol failure (malformed answer, ID token failing verification, other
    /// 4xx). Treated like [`IdpError::Unavailable`] (kept, retried with backoff), but logged
    /// as an error because it usually means misconfiguration.
    #[error("identity provider protocol error: {0}")]
    Protocol(String),
}

/// One configured OAuth client at the IdP (the default `idp_client_id`, or a route's own).
pub trait IdentityProvider: Send + Sync {
    /// Use a refresh token (refresh grant).
    fn refresh(&self, refresh_token: &SecretString) -> BoxFuture<'_, Result<TokenSet, IdpError>>;

    /// Call the user-info endpoint with an access token. 401/403 must map to
    /// [`IdpError::UserDisabled`].
    fn user_info(
        &self,
        access_token: &SecretString,
    ) -> BoxFuture<'_, Result<Map<String, Value>, IdpError>>;

    /// Downcast hook, so the login flow can reach its concrete client type.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The IdP clients, by OAuth client id: the default client and every route's
/// `idp_client_id`. A session remembers which client issued its tokens.
#[derive(Clone, Default)]
pub struct IdpRegistry {
    default_client_id: String,
    clients: HashMap<String, Arc<dyn IdentityProvider>>,
}

impl IdpRegistry {
    /// An empty registry whose default client is `default_client_id`.
    pub fn new(default_client_id: impl Into<String>) -> Self {
        IdpRegistry {
            default_client_id: default_client_id.into(),
            clients: HashMap::new(),
        }
    }

    /// Register (or replace) the client `client_id`.
    pub fn insert(&mut self, client_id: impl Into<String>, idp: Arc<dyn IdentityProvider>) {
        self.clients.insert(client_id.into(), idp);
    }

    /// The client that issued a session's tokens.
    pub fn get(&self, client_id: &str) -> Option<Arc<dyn IdentityProvider>> {
        self.clients.get(client_id).cloned()
    }

    /// The default client id (`idp_client_id`).
    pub fn default_client_id(&self) -> &str {
        &self.default_client_id
    }

    /// The default client, if registered.
    pub fn default_client(&self) -> Option<Arc<dyn IdentityProvider>> {
        self.get(&self.default_client_id)
    }

    /// All registered client ids.
    pub fn client_ids(&self) -> impl Iterator<Item = &str> {
        self.clients.keys().map(String::as_str)
    }
}

impl fmt::Debug for IdpRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpRegistry")
            .field("default_client_id", &self.default_client_id)
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why an identity JWT could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("signing the identity JWT failed: {0}")]
pub struct SignError(pub String);

/// Signs the identity JWT (`X-Pomerium-Jwt-Assertion`) from a session's stored claims.
/// Implemented in [`crate::jwt`] with the configured (or generated) `signing_key`.
pub trait IdentitySigner: Send + Sync {
    /// Sign the identity JWT of `session` for `audience` (the route host). Returns the
    /// compact JWT and its `exp` (unix seconds). The claims must come from
    /// `session.claims` only (never from another session or the user record).
    fn sign(
        &self,
        session: &crate::session::Session,
        audience: &str,
    ) -> Result<(String, i64), SignError>;

    /// The public JWKS (`/.well-known/pomerium/jwks.json`).
    fn jwks(&self) -> Value;
}
