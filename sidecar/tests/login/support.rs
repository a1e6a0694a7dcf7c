//! Test harness for the login flow against the real `oidc-provider` (tests/idp/idp.mjs):
//! an IdP child process, an in-process sidecar on a loopback port, optionally a real
//! `redis-server` child, and a browser-like HTTP client (cookie jar, manual redirects).
//!
//! Host names (`auth.portcullis.test`, `app.portcullis.test`, `b.portcullis.test`) are
//! resolved to the sidecar's loopback port by the client itself (reqwest `resolve`), so
//! cookies are per host exactly as in a browser, and no DNS is involved.
// Test-only harness: panicking on a broken environment is the point, and each test crate
// that includes it uses a different subset of helpers.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use portcullis_common::Secret;
use portcullis_common::api::{self, SessionResponse};
use portcullis_common::cookie::{self, CookieKey};
use portcullis_common::signed_url::{RedirectKey, sign_in_url};
use prost::Message;
use reqwest::cookie::CookieStore as _;
use serde_json::{Value, json};
use sidecar::bundle::{Bundle, BundleHolder, BundleSource};
use sidecar::settings::{
    IdentitySettings, IdpClientSettings, LoginRoute, Settings, StorageSettings,
};
use sidecar::{AppParts, AppState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use url::Url;

pub const SHARED: [u8; 32] = [11; 32];
pub const COOKIE: [u8; 32] = [22; 32];
pub const AUTH_HOST: &str = "auth.portcullis.test";
pub const APP_HOST: &str = "app.portcullis.test";
/// A route with its own IdP client (per-route credentials).
pub const B_HOST: &str = "b.portcullis.test";

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The real OpenID provider.
pub struct Idp {
    pub issuer: String,
    _child: ChildGuard,
    http: reqwest::Client,
}

impl Idp {
    /// Start `node tests/idp/idp.mjs` with our clients and users; waits for `READY`.
    pub async fn start(redirect_uri: &str, token_ttl: u64) -> Idp {
        let dir = std::env::var("PORTCULLIS_IDP_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("tests/idp"));
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed in {}: run `make deps-node`",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("idp.mjs"))
            .args(["--port", "0"])
            .args(["--access-token-ttl", &token_ttl.to_string()])
            .args(["--id-token-ttl", &token_ttl.to_string()])
            .args([
                "--client",
                &format!("default:default-secret:{redirect_uri}"),
            ])
            .args([
                "--client",
                &format!("route-b:route-b-secret:{redirect_uri}"),
            ])
            .args([
                "--user",
                "alice:alice-pw:alice@example.com:Alice Example:admins,staff",
            ])
            .args(["--user", "bob:bob-pw:bob@example.com:Bob Example:staff"])
            .env("IDP_EXIT_ON_STDIN_CLOSE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node (is node 20 installed?)");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let issuer = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read idp stdout") {
                if let Some(issuer) = line.strip_prefix("READY ") {
                    return issuer.trim().to_owned();
                }
            }
            panic!("idp exited before READY");
        })
        .await
        .expect("idp READY within 30 s");
        Idp {
            issuer,
            _child: ChildGuard(child),
            http: reqwest::Client::new(),
        }
    }

    /// Call the admin API.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/admin{path}", self.issuer);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, &url);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let res = req.send().await.expect("idp admin");
        assert!(
            res.status().is_success(),
            "{method} {path}: {}",
            res.status()
        );
        res.json().await.expect("admin json")
    }

    pub async fn stats(&self) -> Value {
        self.admin("GET", "/stats", None).await
    }
}

/// A `redis-server` child on a free port (no persistence).
pub struct Redis {
    pub url: String,
    _child: ChildGuard,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = free_port().await;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redis-server (installed by `make deps-system`)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Redis {
            url: format!("redis://127.0.0.1:{port}/0"),
            _child: ChildGuard(child),
        }
    }
}

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Options of one test deployment.
#[derive(Clone)]
pub struct Options {
    /// IdP access/ID token lifetime (seconds).
    pub token_ttl: u64,
    /// `identity_user_info_refresh_interval`.
    pub user_info_interval: Duration,
    /// Redis URL, or memory.
    pub redis: Option<String>,
    pub cookie_domain: Option<String>,
    /// Sidecar replicas behind one round-robin listener (needs `redis`).
    pub replicas: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token_ttl: 3600,
            user_info_interval: Duration::from_secs(3600),
            redis: None,
            cookie_domain: None,
            replicas: 1,
        }
    }
}

/// A running deployment: IdP + sidecar.
pub struct Deployment {
    pub idp: Idp,
    /// The first replica.
    pub state: AppState,
    /// Every replica (one unless `Options::replicas`).
    pub replicas: Vec<AppState>,
    hits: Vec<Arc<std::sync::atomic::AtomicUsize>>,
    pub addr: SocketAddr,
    pub port: u16,
    _server: tokio::task::JoinHandle<()>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self._server.abort();
        for t in &self._tasks {
            t.abort();
        }
    }
}

impl Deployment {
    pub async fn start(opts: Options) -> Deployment {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let port = addr.port();
        let auth = format!("http://{AUTH_HOST}:{port}");
        let idp = Idp::start(&format!("{auth}/oauth2/callback"), opts.token_ttl).await;

        let mut s = Settings::new(Secret::from_bytes(SHARED), Secret::from_bytes(COOKIE));
        s.address = addr;
        s.insecure_server = true;
        s.authenticate_service_url = Some(auth.clone());
        // As the config loader writes it (a parsed URL gains a trailing slash); the
        // IdP's issuer has none: discovery must still match them up.
        s.idp_provider_url = Some(format!("{}/", idp.issuer));
        s.idp_client = Some(IdpClientSettings {
            client_id: "default".into(),
            client_secret: sidecar::idp::SecretString::new("default-secret"),
        });
        s.route_idp_clients = vec![IdpClientSettings {
            client_id: "route-b".into(),
            client_secret: sidecar::idp::SecretString::new("route-b-secret"),
        }];
        s.login_routes = vec![
            LoginRoute {
                from: format!("http://{APP_HOST}:{port}"),
                idp_client_id: None,
            },
            LoginRoute {
                from: format!("http://{B_HOST}:{port}"),
                idp_client_id: Some("route-b".into()),
            },
        ];
        s.route_hosts = vec![format!("{APP_HOST}:{port}"), format!("{B_HOST}:{port}")];
        s.jwt_claims_headers = vec![("x-pomerium-claim-department".into(), "department".into())];
        s.cookie_domain = opts.cookie_domain.clone();
        s.identity = IdentitySettings {
            user_info_refresh_interval: opts.user_info_interval,
            token_refresh_lead: Duration::from_secs(2),
            concurrency: 4,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(2),
            tick: Duration::from_millis(200),
        };
        if let Some(url) = &opts.redis {
            s.storage = StorageSettings::Redis {
                connection_string: url.clone(),
                key_prefix: format!("login-test-{port}"),
            };
        }
        assert!(
            opts.replicas <= 1 || opts.redis.is_some(),
            "replicas share state only through Redis"
        );
        if opts.replicas > 1 {
            // Replicas must share the identity JWT key (JWKS); generate one for all.
            use p256::pkcs8::EncodePrivateKey as _;
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).unwrap();
            let key = p256::SecretKey::from_slice(&bytes).unwrap();
            let pem = key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
            s.signing_key = Some(sidecar::idp::SecretString::new(pem.to_string()));
        }
        let mut states = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..opts.replicas.max(1) {
            let store = sidecar::databroker::open(&s.storage)
                .await
                .expect("open store");
            let setup = sidecar::auth::setup(&s).await.expect("login setup");
            let state = AppState::new(AppParts {
                settings: s.clone(),
                store,
                idps: setup.idps,
                signer: setup.signer,
                bundle: BundleHolder::new(Bundle::new(Vec::new())),
                login: Some(setup.login),
            });
            tasks.extend(sidecar::spawn_background(&state, BundleSource::Fixed));
            states.push(state);
        }
        // One listener in front of every replica, alternating per request (a round-robin
        // load balancer): with 2 replicas every hop of a login changes replica.
        let routers: Vec<axum::Router> = states
            .iter()
            .map(|st| sidecar::router(st.clone()))
            .collect();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hits: Vec<Arc<std::sync::atomic::AtomicUsize>> = routers
            .iter()
            .map(|_| Arc::new(std::sync::atomic::AtomicUsize::new(0)))
            .collect();
        let lb_hits = hits.clone();
        let lb = axum::Router::new().fallback_service(tower::service_fn(
            move |req: axum::extract::Request| {
                use tower::ServiceExt as _;
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % routers.len();
                lb_hits[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                routers[i].clone().oneshot(req)
            },
        ));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, lb).await;
        });
        Deployment {
            idp,
            state: states[0].clone(),
            replicas: states,
            hits,
            addr,
            port,
            _server: server,
            _tasks: tasks,
        }
    }

    /// Requests each replica served so far.
    pub fn replica_hits(&self) -> Vec<usize> {
        self.hits
            .iter()
            .map(|h| h.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    pub fn auth_url(&self) -> String {
        format!("http://{AUTH_HOST}:{}", self.port)
    }

    pub fn app_url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    /// What the filter does for an unauthenticated browser: a signed sign-in URL.
    pub fn sign_in_url(&self, return_url: &str) -> String {
        let key = RedirectKey::new(&Secret::from_bytes(SHARED));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        sign_in_url(&key, &self.auth_url(), return_url, now)
    }

    /// A new browser (own cookie jar).
    pub fn browser(&self) -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .resolve(AUTH_HOST, self.addr)
            .resolve(APP_HOST, self.addr)
            .resolve(B_HOST, self.addr)
            .build()
            .unwrap();
        Browser { client, jar }
    }

    /// The policy view + identity JWT the filter would get (internal API).
    pub async fn internal_session(&self, session_id: &str, aud: &str) -> SessionResponse {
        let url = format!(
            "http://{}{}?id={session_id}&aud={aud}",
            self.addr,
            api::PATH_SESSION
        );
        let token = api::api_token(&Secret::from_bytes(SHARED));
        let res = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("internal api");
        assert_eq!(res.status(), 200);
        SessionResponse::decode(res.bytes().await.unwrap()).expect("protobuf")
    }

    /// Poll `cond` every 200 ms until it holds or `timeout` passes.
    pub async fn eventually<F, Fut>(&self, what: &str, timeout: Duration, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if cond().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One response, fully read.
pub struct Page {
    pub url: String,
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// A browser: cookie jar, redirects followed by hand so tests can look at every hop.
pub struct Browser {
    pub client: reqwest::Client,
    pub jar: Arc<reqwest::cookie::Jar>,
}

impl Browser {
    pub async fn get(&self, url: &str) -> Page {
        let res = self
            .client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        Self::page(url, res).await
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Page {
        let res = self
            .client
            .post(url)
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        Self::page(url, res).await
    }

    async fn page(url: &str, res: reqwest::Response) -> Page {
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| Url::parse(url).unwrap().join(l).unwrap().to_string());
        let body = res.text().await.unwrap_or_default();
        Page {
            url: url.to_owned(),
            status,
            location,
            body,
        }
    }

    /// Follow redirects from `url` until a non-redirect or a URL `stop` accepts.
    /// Returns every hop (the last one is where it stopped).
    pub async fn follow(&self, url: &str, stop: impl Fn(&str) -> bool) -> Vec<Page> {
        let mut hops = Vec::new();
        let mut next = url.to_owned();
        for _ in 0..20 {
            let page = self.get(&next).await;
            let loc = page.location.clone();
            let redirect = (300..400).contains(&page.status);
            hops.push(page);
            match loc {
                Some(l) if redirect => {
                    if stop(&l) {
                        hops.push(Page {
                            url: l,
                            status: 0,
                            location: None,
                            body: String::new(),
                        });
                        return hops;
                    }
                    next = l;
                }
                _ => return hops,
            }
        }
        panic!("redirect loop from {url}");
    }

    /// Log in at the IdP form on `page` (the IdP's login page).
    pub async fn submit_login(&self, page: &Page, user: &str, password: &str) -> Page {
        let action = attr_after(&page.body, "<form", "action").expect("login form");
        let url = Url::parse(&page.url).unwrap().join(&action).unwrap();
        self.post_form(url.as_str(), &[("username", user), ("password", password)])
            .await
    }

    /// Open the session cookie for `host` and return the session id.
    pub fn session_id(&self, host_url: &str) -> Option<String> {
        let url = Url::parse(host_url).unwrap();
        let header = self.jar.cookies(&url)?;
        let header = header.to_str().ok()?.to_owned();
        let key = CookieKey::new(&Secret::from_bytes(COOKIE));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        cookie::cookie_values(&header, "_pomerium")
            .find_map(|v| cookie::open(&key, "_pomerium", v, now).ok())
            .map(|o| o.session_id.as_str().to_owned())
    }

    /// The full login of `user` starting from the route URL `return_url`, as a browser
    /// sent there by the filter would do it. Returns the hops (the last is `return_url`).
    pub async fn login(
        &self,
        d: &Deployment,
        return_url: &str,
        user: &str,
        password: &str,
    ) -> Vec<Page> {
        let mut hops = self.follow(&d.sign_in_url(return_url), |_| false).await;
        let form = hops.last().unwrap();
        assert_eq!(
            form.status, 200,
            "expected the IdP login page, got {} at {}: {}",
            form.status, form.url, form.body
        );
        assert!(
            form.body.contains("name=\"password\""),
            "not a login page: {}",
            form.body
        );
        let after = self.submit_login(form, user, password).await;
        assert_eq!(after.status, 303, "login POST: {}", after.body);
        let next = after.location.clone().unwrap();
        hops.push(after);
        hops.extend(self.follow(&next, |l| l == return_url).await);
        let last = hops.last().unwrap();
        assert_eq!(
            last.url, return_url,
            "login did not end at the return URL: {} {} {}",
            last.url, last.status, last.body
        );
        hops
    }
}

/// The value of attribute `attr` in the first tag starting with `tag` in `html`.
pub fn attr_after(html: &str, tag: &str, attr: &str) -> Option<String> {
    let start = html.find(tag)?;
    let rest = &html[start..];
    let end = rest.find('>')?;
    let tag_text = &rest[..end];
    let key = format!("{attr}=\"");
    let i = tag_text.find(&key)? + key.len();
    let j = tag_text[i..].find('"')? + i;
    Some(tag_text[i..j].replace("&amp;", "&"))
}

/// Flattened claim values of a view as JSON (strings/numbers/bools).
pub fn view_claim(resp: &SessionResponse, key: &str) -> Option<Vec<Value>> {
    use portcullis_common::api::claim_value::Kind;
    let view = resp.view.as_ref()?;
    let claim = view.claims.iter().find(|c| c.key == key)?;
    Some(
        claim
            .values
            .iter()
            .map(|v| match &v.kind {
                Some(Kind::Str(s)) => json!(s),
                Some(Kind::Number(n)) => json!(n),
                Some(Kind::Bool(b)) => json!(b),
                None => Value::Null,
            })
            .collect(),
    )
}

/// The payload of a JWT (unverified; the unit tests verify signatures).
pub fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("jwt payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
