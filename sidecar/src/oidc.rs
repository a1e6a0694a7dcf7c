//! OpenID Connect against `idp_provider_url`, with the `openidconnect` crate.
//!
//! - Discovery is lazy and cached: the sidecar starts (and serves sessions it already
//!   has) while the IdP is down; the first login or refresh discovers, a failure is
//!   retried on the next call.
//! - Authorization-code flow with PKCE (S256), `state` and `nonce` supplied by the caller
//!   ([`crate::auth`] derives them so nothing has to be stored server-side).
//! - ID tokens are verified by `openidconnect` (signature with the provider JWKS, `iss`,
//!   `aud`/`azp`, `exp`, `nonce` at login). An unknown `kid` refetches the JWKS once
//!   (key rotation), at most every [`JWKS_REFETCH_MIN_INTERVAL`].
//! - [`OidcClient`] (one per OAuth client: `idp_client_id` and every route's own) implements
//!   [`IdentityProvider`]: refresh (`invalid_grant` → [`IdpError::InvalidGrant`]) and user
//!   info (401/403 → [`IdpError::UserDisabled`]).
//!
//! Transport security: the issuer and every endpoint it advertises must be `https`, except
//! on loopback (`127.0.0.0/8`, `::1`, `localhost`), where `http` is allowed so tests and
//! the demo can run a local IdP. Redirects are never followed (SSRF, token leaks).

use crate::idp::{BoxFuture, IdentityProvider, IdpError, SecretString, TokenSet, VerifiedIdToken};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreErrorResponseType, CoreGrantType, CoreIdToken, CoreIdTokenVerifier,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
    CoreTokenResponse,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, IssuerUrl, JsonWebKeySetUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, SignatureVerificationError, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};
use url::Url;

/// Timeout of every IdP request.
pub const IDP_TIMEOUT: Duration = Duration::from_secs(10);
/// The JWKS is refetched for an unknown `kid` at most this often (a forged `kid` cannot
/// make us hammer the IdP).
pub const JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);

/// Discovery fields `openidconnect` does not model.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraProviderMetadata {
    /// RP-initiated logout endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session_endpoint: Option<String>,
}
impl AdditionalProviderMetadata for ExtraProviderMetadata {}

/// Provider metadata with `end_session_endpoint`.
pub type ProviderMeta = ProviderMetadata<
    ExtraProviderMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Why the OIDC settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum OidcConfigError {
    /// `idp_provider_url` is not a URL.
    #[error("`idp_provider_url` is not a valid URL: {0}")]
    BadIssuer(String),
    /// An `http` URL that is not loopback.
    #[error("`{0}` must use https (plain http is only allowed on loopback)")]
    Insecure(String),
    /// The redirect URL could not be built.
    #[error("`authenticate_service_url` does not give a valid callback URL: {0}")]
    BadRedirect(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// Is `url` https, or http on a loopback host?
pub fn transport_allowed(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        },
        _ => false,
    }
}

struct Discovered {
    meta: ProviderMeta,
    jwks: RwLock<CoreJsonWebKeySet>,
    /// When the JWKS was last refetched (`None`: only the discovery fetch so far).
    last_jwks_fetch: Mutex<Option<Instant>>,
}

/// One OpenID provider (issuer): discovery and JWKS, shared by all its clients.
pub struct OidcProvider {
    issuer: IssuerUrl,
    http: reqwest::Client,
    discovered: RwLock<Option<Arc<Discovered>>>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer.as_str())
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> IdpError {
    IdpError::Unavailable(format!("{what}: {e}"))
}

impl OidcProvider {
    /// A provider for `idp_provider_url`. No network until first use.
    pub fn new(issuer: &str) -> Result<Self, OidcConfigError> {
        let url = Url::parse(issuer).map_err(|e| OidcConfigError::BadIssuer(e.to_string()))?;
        if !transport_allowed(&url) {
            return Err(OidcConfigError::Insecure(format!("idp_provider_url {url}")));
        }
        // Issuer identifiers are compared exactly (OIDC Discovery §4.3): keep the text as
        // configured, not the normalised URL (which would add a trailing slash).
        let issuer = IssuerUrl::new(issuer.trim().to_owned())
            .map_err(|e| OidcConfigError::BadIssuer(e.to_string()))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(IDP_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| OidcConfigError::Http(e.to_string()))?;
        Ok(OidcProvider {
            issuer,
            http,
            discovered: RwLock::new(None),
        })
    }

    /// The issuer as configured.
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    async fn discovered(&self) -> Result<Arc<Discovered>, IdpError> {
        if let Some(d) = self.discovered.read().await.as_ref() {
            return Ok(d.clone());
        }
        let mut slot = self.discovered.write().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let meta = self.discover().await?;
        for (what, url) in [
            (
                "authorization_endpoint",
                Some(meta.authorization_endpoint().url()),
            ),
            ("token_endpoint", meta.token_endpoint().map(|u| u.url())),
            (
                "userinfo_endpoint",
                meta.userinfo_endpoint().map(|u| u.url()),
            ),
            ("jwks_uri", Some(meta.jwks_uri().url())),
        ] {
            if let Some(url) = url
                && !transport_allowed(url)
            {
                return Err(IdpError::Protocol(format!(
                    "the provider's {what} {url} must use https (http only on loopback)"
                )));
            }
        }
        if meta.token_endpoint().is_none() {
            return Err(IdpError::Protocol(
                "the provider has no token_endpoint".into(),
            ));
        }
        let jwks = meta.jwks().clone();
        let d = Arc::new(Discovered {
            meta,
            jwks: RwLock::new(jwks),
            last_jwks_fetch: Mutex::new(None),
        });
        *slot = Some(d.clone());
        tracing::info!(issuer = self.issuer.as_str(), "OIDC provider discovered");
        Ok(d)
    }

    /// Fetch the discovery document and the JWKS.
    ///
    /// Done by hand rather than with `ProviderMetadata::discover_async` because that one
    /// demands the configured issuer text byte for byte, and a configured URL often gains
    /// or loses a trailing `/` on its way through URL parsing (`http://idp:9000` vs
    /// `http://idp:9000/`). A difference in that one trailing slash is tolerated; the
    /// IdP's own spelling is then used for ID token `iss` checks (tokens carry it).
    async fn discover(&self) -> Result<ProviderMeta, IdpError> {
        let configured = self.issuer.as_str().trim_end_matches('/');
        let url = format!("{configured}/.well-known/openid-configuration");
        let response = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable("OIDC discovery failed", error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(IdpError::Unavailable(format!(
                "OIDC discovery answered {status}"
            )));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable("reading the OIDC discovery document failed", e))?;
        let meta: ProviderMeta = serde_json::from_slice(&body)
            .map_err(|e| IdpError::Protocol(format!("invalid OIDC discovery document: {e}")))?;
        if meta.issuer().as_str().trim_end_matches('/') != configured {
            return Err(IdpError::Protocol(format!(
                "the provider calls itself `{}`, not `{}` (idp_provider_url)",
                meta.issuer().as_str(),
                self.issuer.as_str()
            )));
        }
        let jwks = CoreJsonWebKeySet::fetch_async(meta.jwks_uri(), &self.http)
            .await
            .map_err(|e| unavailable("fetching the provider JWKS failed", error_chain(&e)))?;
        Ok(meta.set_jwks(jwks))
    }

    /// Refetch the JWKS (after an unknown `kid`), rate-limited. Returns whether it did.
    async fn refetch_jwks(&self, d: &Discovered) -> Result<bool, IdpError> {
        let mut last = d.last_jwks_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_MIN_INTERVAL) {
            return Ok(false);
        }
        let url: &JsonWebKeySetUrl = d.meta.jwks_uri();
        let jwks = CoreJsonWebKeySet::fetch_async(url, &self.http)
            .await
            .map_err(|e| unavailable("fetching the provider JWKS failed", error_chain(&e)))?;
        *d.jwks.write().await = jwks;
        *last = Some(Instant::now());
        tracing::info!(
            issuer = self.issuer.as_str(),
            "refetched the provider JWKS (unknown key id)"
        );
        Ok(true)
    }

    /// The `end_session_endpoint`, if the provider has one (and discovery works).
    pub async fn end_session_endpoint(&self) -> Option<Url> {
        let d = self.discovered().await.ok()?;
        let url = Url::parse(
            d.meta
                .additional_metadata()
                .end_session_endpoint
                .as_deref()?,
        )
        .ok()?;
        transport_allowed(&url).then_some(url)
    }
}

/// One OAuth client at the provider.
pub struct OidcClient {
    provider: Arc<OidcProvider>,
    client_id: ClientId,
    client_secret: ClientSecret,
    redirect_uri: RedirectUrl,
    scopes: Vec<String>,
    /// Extra authorization request parameters (`idp_request_params`).
    request_params: Vec<(String, String)>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.provider.issuer())
            .field("client_id", &self.client_id.as_str())
            .field("client_secret", &"***")
            .finish_non_exhaustive()
    }
}

/// The result of a successful authorization-code exchange.
#[derive(Debug, Clone)]
pub struct LoginTokens {
    /// The tokens (its `id_token` is the verified one below).
    pub tokens: TokenSet,
    /// The verified ID token (nonce checked).
    pub id_token: VerifiedIdToken,
}

/// Which nonce check an ID token gets.
enum NonceCheck<'a> {
    /// Login: must carry exactly this nonce.
    Exactly(&'a str),
    /// Refresh: a nonce, if present, is the login's; not checked again.
    Skip,
}

impl OidcClient {
    /// A client of `provider`. `redirect_uri` is `{authenticate_service_url}/oauth2/callback`.
    pub fn new(
        provider: Arc<OidcProvider>,
        client_id: &str,
        client_secret: &SecretString,
        redirect_uri: &str,
        scopes: &[String],
        request_params: Vec<(String, String)>,
    ) -> Result<Self, OidcConfigError> {
        let redirect_uri = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| OidcConfigError::BadRedirect(e.to_string()))?;
        Ok(OidcClient {
            provider,
            client_id: ClientId::new(client_id.to_owned()),
            client_secret: ClientSecret::new(client_secret.expose().to_owned()),
            redirect_uri,
            scopes: scopes.to_vec(),
            request_params,
        })
    }

    /// The OAuth client id.
    pub fn client_id(&self) -> &str {
        self.client_id.as_str()
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<OidcProvider> {
        &self.provider
    }

    fn client(
        &self,
        d: &Discovered,
        jwks: CoreJsonWebKeySet,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
        >,
        IdpError,
    > {
        let token_uri = d
            .meta
            .token_endpoint()
            .cloned()
            .ok_or_else(|| IdpError::Protocol("the provider has no token_endpoint".into()))?;
        // client_secret_basic unless the provider only takes client_secret_post.
        let auth_type = match d.meta.token_endpoint_auth_methods_supported() {
            Some(methods)
                if !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                    && methods.contains(&CoreClientAuthMethod::ClientSecretPost) =>
            {
                AuthType::RequestBody
            }
            _ => AuthType::BasicAuth,
        };
        Ok(
            CoreClient::new(self.client_id.clone(), d.meta.issuer().clone(), jwks)
                .set_client_secret(self.client_secret.clone())
                .set_auth_uri(d.meta.authorization_endpoint().clone())
                .set_token_uri(token_uri)
                .set_redirect_uri(self.redirect_uri.clone())
                .set_auth_type(auth_type),
        )
    }

    /// The authorization URL for a login with the given `state`, `nonce` and PKCE verifier
    /// (43–128 characters of `[A-Za-z0-9-._~]`).
    pub async fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<Url, IdpError> {
        let d = self.provider.discovered().await?;
        let jwks = d.jwks.read().await.clone();
        let client = self.client(&d, jwks)?;
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            pkce_verifier.to_owned(),
        ));
        let state = state.to_owned();
        let nonce = nonce.to_owned();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for scope in &self.scopes {
            // `openid` is always added by the library.
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope.clone()));
            }
        }
        for (k, v) in &self.request_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        let (url, _, _) = request.url();
        Ok(url)
    }

    /// Exchange an authorization code (with its PKCE verifier) and verify the ID token
    /// (including `nonce`).
    pub async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<LoginTokens, IdpError> {
        let d = self.provider.discovered().await?;
        let jwks = d.jwks.read().await.clone();
        let client = self.client(&d, jwks)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.provider.http)
            .await
            .map_err(token_error)?;
        let id_token = response
            .id_token()
            .ok_or_else(|| IdpError::Protocol("the token response has no id_token".into()))?;
        let verified = self
            .verify_id_token(&d, id_token, NonceCheck::Exactly(nonce))
            .await?;
        let mut tokens = token_set(&response);
        tokens.id_token = Some(verified.clone());
        Ok(LoginTokens {
            tokens,
            id_token: verified,
        })
    }

    async fn verify_id_token(
        &self,
        d: &Discovered,
        id_token: &CoreIdToken,
        nonce: NonceCheck<'_>,
    ) -> Result<VerifiedIdToken, IdpError> {
        let mut refetched = false;
        loop {
            let jwks = d.jwks.read().await.clone();
            let verifier = CoreIdTokenVerifier::new_confidential_client(
                self.client_id.clone(),
                self.client_secret.clone(),
                d.meta.issuer().clone(),
                jwks,
            );
            let result = match &nonce {
                NonceCheck::Exactly(n) => id_token
                    .claims(&verifier, &Nonce::new((*n).to_owned()))
                    .map(|_| ()),
                NonceCheck::Skip => id_token
                    .claims(&verifier, |_: Option<&Nonce>| Ok::<(), String>(()))
                    .map(|_| ()),
            };
            match result {
                Ok(()) => break,
                Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )) if !refetched => {
                    refetched = true;
                    if !self.provider.refetch_jwks(d).await? {
                        return Err(IdpError::Protocol(
                            "ID token signed with an unknown key (JWKS refetched recently)".into(),
                        ));
                    }
                }
                Err(e) => return Err(IdpError::Protocol(format!("ID token rejected: {e}"))),
            }
        }
        // The signature covers exactly these bytes: read every claim (not only the ones
        // `openidconnect` models), so `groups` and custom claims reach the session.
        let raw = id_token.to_string();
        let claims = jwt_payload(&raw)
            .ok_or_else(|| IdpError::Protocol("ID token payload is not a JSON object".into()))?;
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| IdpError::Protocol("ID token without exp".into()))?;
        Ok(VerifiedIdToken {
            raw: SecretString::new(raw),
            claims,
            expires_at,
        })
    }

    async fn do_refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, IdpError> {
        let d = self.provider.discovered().await?;
        let jwks = d.jwks.read().await.clone();
        let client = self.client(&d, jwks)?;
        let rt = RefreshToken::new(refresh_token.expose().to_owned());
        let response = client
            .exchange_refresh_token(&rt)
            .request_async(&self.provider.http)
            .await
            .map_err(token_error)?;
        let mut tokens = token_set(&response);
        if let Some(id_token) = response.id_token() {
            tokens.id_token = Some(self.verify_id_token(&d, id_token, NonceCheck::Skip).await?);
        }
        Ok(tokens)
    }

    async fn do_user_info(
        &self,
        access_token: &SecretString,
    ) -> Result<Map<String, Value>, IdpError> {
        let d = self.provider.discovered().await?;
        let Some(endpoint) = d.meta.userinfo_endpoint() else {
            // No user-info endpoint: the ID token is all there is.
            return Ok(Map::new());
        };
        let response = self
            .provider
            .http
            .get(endpoint.url().clone())
            .bearer_auth(access_token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable("user info request failed", e))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(IdpError::UserDisabled(format!(
                "user info answered {status}"
            )));
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(IdpError::Unavailable(format!(
                "user info answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(IdpError::Protocol(format!("user info answered {status}")));
        }
        let is_jwt = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/jwt"));
        if is_jwt {
            return Err(IdpError::Protocol(
                "signed user info responses (application/jwt) are not supported".into(),
            ));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable("reading user info failed", e))?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(IdpError::Protocol("user info is not a JSON object".into())),
        }
    }
}

impl IdentityProvider for OidcClient {
    fn refresh(&self, refresh_token: &SecretString) -> BoxFuture<'_, Result<TokenSet, IdpError>> {
        let rt = refresh_token.clone();
        Box::pin(async move { self.do_refresh(&rt).await })
    }

    fn user_info(
        &self,
        access_token: &SecretString,
    ) -> BoxFuture<'_, Result<Map<String, Value>, IdpError>> {
        let at = access_token.clone();
        Box::pin(async move { self.do_user_info(&at).await })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn token_set(response: &CoreTokenResponse) -> TokenSet {
    let now = crate::databroker::now_unix();
    TokenSet {
        access_token: SecretString::new(response.access_token().secret().clone()),
        refresh_token: response
            .refresh_token()
            .map(|t| SecretString::new(t.secret().clone())),
        access_token_expires_at: response
            .expires_in()
            .map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
        id_token: None,
    }
}

fn token_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, openidconnect::StandardErrorResponse<CoreErrorResponseType>>,
) -> IdpError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let detail = match r.error_description() {
                Some(d) => format!("{}: {d}", r.error()),
                None => r.error().to_string(),
            };
            if *r.error() == CoreErrorResponseType::InvalidGrant {
                IdpError::InvalidGrant(detail)
            } else {
                IdpError::Protocol(format!("token endpoint error {detail}"))
            }
        }
        RequestTokenError::Request(e) => unavailable("token request failed", error_chain(&e)),
        // A non-JSON answer is usually an overloaded proxy in front of the IdP.
        RequestTokenError::Parse(e, _) => unavailable("token endpoint answered garbage", e),
        RequestTokenError::Other(e) => IdpError::Protocol(format!("token request: {e}")),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// The payload of a compact JWS as a JSON object (no verification: callers verify first).
pub fn jwt_payload(jwt: &str) -> Option<Map<String, Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_on_loopback() {
        let ok = |s: &str| transport_allowed(&Url::parse(s).unwrap());
        assert!(ok("https://idp.example.com"));
        assert!(ok("http://127.0.0.1:9000"));
        assert!(ok("http://127.5.0.1"));
        assert!(ok("http://[::1]:80/"));
        assert!(ok("http://localhost:8080"));
        assert!(!ok("http://idp.example.com"));
        assert!(!ok("http://10.0.0.1"));
        assert!(!ok("http://localhost.evil.com"));
        assert!(!ok("ftp://127.0.0.1"));
        assert!(matches!(
            OidcProvider::new("http://idp.example.com"),
            Err(OidcConfigError::Insecure(_))
        ));
        assert!(matches!(
            OidcProvider::new("not a url"),
            Err(OidcConfigError::BadIssuer(_))
        ));
        assert!(OidcProvider::new("http://127.0.0.1:1").is_ok());
    }

    #[test]
    fn payload_decoding_is_total() {
        assert_eq!(jwt_payload("a.eyJhIjoxfQ.c").unwrap()["a"], 1);
        assert!(jwt_payload("a.WzFd.c").is_none());
        assert!(jwt_payload("garbage").is_none());
        assert!(jwt_payload("a.!!!.c").is_none());
    }

    /// A discovery document server on loopback: (issuer as served, token endpoint).
    async fn fake_discovery(issuer: Option<&str>, token_endpoint: Option<&str>) -> String {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let doc = serde_json::json!({
            "issuer": issuer.map_or_else(|| base.clone(), str::to_owned),
            "authorization_endpoint": format!("{base}/auth"),
            "token_endpoint": token_endpoint.map_or_else(|| format!("{base}/token"), str::to_owned),
            "jwks_uri": format!("{base}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { axum::Json(doc) }),
            )
            .route(
                "/jwks",
                get(|| async { axum::Json(serde_json::json!({"keys": []})) }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    fn client(issuer: &str) -> OidcClient {
        let p = Arc::new(OidcProvider::new(issuer).unwrap());
        OidcClient::new(
            p,
            "c",
            &SecretString::new("s"),
            "http://127.0.0.1/cb",
            &[],
            vec![],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn discovery_matches_the_issuer_modulo_a_trailing_slash() {
        // Configured with a trailing slash, served without: accepted (no user-info
        // endpoint in this document, so user info is empty).
        let base = fake_discovery(None, None).await;
        let c = client(&format!("{base}/"));
        assert_eq!(
            c.user_info(&SecretString::new("at")).await.unwrap(),
            Map::new()
        );
        // Another issuer: refused, clearly.
        let base = fake_discovery(Some("https://evil.example.com"), None).await;
        match client(&base).user_info(&SecretString::new("at")).await {
            Err(IdpError::Protocol(m)) => assert!(m.contains("calls itself"), "{m}"),
            other => panic!("{other:?}"),
        }
        // An advertised endpoint over plain http off loopback: refused.
        let base = fake_discovery(None, Some("http://idp.example.com/token")).await;
        match client(&base).refresh(&SecretString::new("rt")).await {
            Err(IdpError::Protocol(m)) => assert!(m.contains("token_endpoint"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn down_idp_is_unavailable_not_fatal() {
        // Port 9 (discard) on loopback: nothing listens.
        let p = Arc::new(OidcProvider::new("http://127.0.0.1:9").unwrap());
        let c = OidcClient::new(
            p,
            "c",
            &SecretString::new("s"),
            "http://127.0.0.1/cb",
            &[],
            vec![],
        )
        .unwrap();
        assert!(matches!(
            c.refresh(&SecretString::new("rt")).await,
            Err(IdpError::Unavailable(_))
        ));
        assert!(matches!(
            c.user_info(&SecretString::new("at")).await,
            Err(IdpError::Unavailable(_))
        ));
        assert!(c.provider().end_session_endpoint().await.is_none());
    }
}
