//! Test support: a real `redis-server` child process, a fake IdP, a fake signer, and
//! helpers to build app state and sessions.

#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_common::Secret;
use serde_json::{Map, Value, json};
use sidecar::bundle::{Bundle, BundleHolder};
use sidecar::databroker::{Store, memory::MemoryStore, now_unix, redis::RedisStore};
use sidecar::idp::{
    BoxFuture, IdentityProvider, IdentitySigner, IdpError, IdpRegistry, SecretString, SignError,
    TokenSet, VerifiedIdToken,
};
use sidecar::session::{NewSession, Session};
use sidecar::settings::Settings;
use sidecar::{AppParts, AppState};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SHARED: [u8; 32] = [11; 32];
pub const CLIENT: &str = "portcullis-test-client";
/// A second OAuth client (a route with its own `idp_client_id`).
pub const CLIENT_B: &str = "portcullis-test-client-b";

// ---------------------------------------------------------------- temp dirs

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!(
            "portcullis-sidecar-{tag}-{}-{n}-{}",
            std::process::id(),
            now_unix()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- redis-server

/// A `redis-server` child on a free loopback port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
    persistent: bool,
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl RedisServer {
    /// Ephemeral: no RDB, no AOF.
    pub fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// With `appendonly yes` (fsync always) in a temp dir: survives a restart.
    pub fn start_persistent() -> RedisServer {
        Self::start_with(true)
    }

    /// Ephemeral, on a given port.
    pub fn start_on(port: u16) -> RedisServer {
        Self::start_with_port(false, port)
    }

    fn start_with(persistent: bool) -> RedisServer {
        Self::start_with_port(persistent, free_port())
    }

    fn start_with_port(persistent: bool, port: u16) -> RedisServer {
        let dir = TempDir::new("redis");
        let mut s = RedisServer {
            child: None,
            port,
            dir,
            persistent,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        self.child = Some(cmd.spawn().expect("redis-server must be installed"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                c.set_read_timeout(Some(Duration::from_millis(500))).ok();
                if c.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 16];
                    if let Ok(n) = c.read(&mut buf)
                        && buf[..n].starts_with(b"+PONG")
                    {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not come up on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kill the server (SIGKILL) and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop and start again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A raw connection for inspecting what Redis holds.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Every value in the database, as raw bytes (strings, hash fields+values, set and
    /// zset members, key names).
    pub async fn dump_everything(&self) -> Vec<Vec<u8>> {
        let mut con = self.raw().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut con)
            .await
            .unwrap();
        let mut out = Vec::new();
        for k in keys {
            out.push(k.as_bytes().to_vec());
            let t: String = redis::cmd("TYPE")
                .arg(&k)
                .query_async(&mut con)
                .await
                .unwrap();
            match t.as_str() {
                "string" => {
                    let v: Vec<u8> = redis::cmd("GET")
                        .arg(&k)
                        .query_async(&mut con)
                        .await
                        .unwrap();
                    out.push(v);
                }
                "hash" => {
                    let v: Vec<Vec<u8>> = redis::cmd("HGETALL")
                        .arg(&k)
                        .query_async(&mut con)
                        .await
                        .unwrap();
                    out.extend(v);
                }
                "set" => {
                    let v: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                        .arg(&k)
                        .query_async(&mut con)
                        .await
                        .unwrap();
                    out.extend(v);
                }
                "zset" => {
                    let v: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                        .arg(&k)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut con)
                        .await
                        .unwrap();
                    out.extend(v);
                }
                other => panic!("unexpected redis type {other} for {k}"),
            }
        }
        out
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn redis_store(server: &RedisServer) -> Arc<dyn Store> {
    Arc::new(
        RedisStore::connect(&server.url(), "portcullis:")
            .await
            .unwrap(),
    )
}

pub fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------- fake IdP

/// What the fake IdP currently believes about one user.
#[derive(Debug, Clone)]
pub struct FakeUser {
    pub email: String,
    pub groups: Vec<String>,
    pub disabled: bool,
}

#[derive(Default)]
pub struct FakeIdpState {
    pub users: HashMap<String, FakeUser>,
    /// refresh token → subject
    pub refresh_tokens: HashMap<String, String>,
    /// access token → subject
    pub access_tokens: HashMap<String, String>,
    pub revoked: HashSet<String>,
    pub down: bool,
    /// Whether refresh issues a new ID token.
    pub issue_id_token_on_refresh: bool,
    /// Whether user info includes `groups`.
    pub user_info_has_groups: bool,
    pub access_ttl: i64,
}

/// An in-process IdP with the semantics the identity manager relies on.
pub struct FakeIdp {
    pub state: Mutex<FakeIdpState>,
    pub refresh_calls: AtomicUsize,
    pub user_info_calls: AtomicUsize,
    counter: AtomicU64,
    /// Called inside `user_info` (e.g. to sign the session out mid-refresh).
    pub during_user_info: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl FakeIdp {
    pub fn new() -> Arc<FakeIdp> {
        Arc::new(FakeIdp {
            state: Mutex::new(FakeIdpState {
                issue_id_token_on_refresh: true,
                user_info_has_groups: true,
                access_ttl: 3600,
                ..Default::default()
            }),
            refresh_calls: AtomicUsize::new(0),
            user_info_calls: AtomicUsize::new(0),
            counter: AtomicU64::new(0),
            during_user_info: Mutex::new(None),
        })
    }

    pub fn add_user(&self, sub: &str, email: &str, groups: &[&str]) {
        self.state.lock().unwrap().users.insert(
            sub.to_owned(),
            FakeUser {
                email: email.to_owned(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                disabled: false,
            },
        );
    }

    pub fn set_groups(&self, sub: &str, groups: &[&str]) {
        self.state
            .lock()
            .unwrap()
            .users
            .get_mut(sub)
            .unwrap()
            .groups = groups.iter().map(|g| g.to_string()).collect();
    }

    pub fn disable(&self, sub: &str) {
        self.state
            .lock()
            .unwrap()
            .users
            .get_mut(sub)
            .unwrap()
            .disabled = true;
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn revoke_all(&self) {
        let mut s = self.state.lock().unwrap();
        let all: Vec<String> = s.refresh_tokens.keys().cloned().collect();
        s.revoked.extend(all);
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst)
    }

    /// ID token claims as the IdP would issue them now, plus `extra`.
    pub fn id_claims(&self, sub: &str, extra: &Map<String, Value>) -> Map<String, Value> {
        let s = self.state.lock().unwrap();
        let u = &s.users[sub];
        let mut m = Map::new();
        m.insert("iss".into(), json!("https://idp.test"));
        m.insert("sub".into(), json!(sub));
        m.insert("email".into(), json!(u.email));
        m.insert("groups".into(), json!(u.groups));
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
        m
    }

    /// Tokens for a fresh login of `sub`.
    pub fn login(
        &self,
        sub: &str,
        extra_id_claims: &Map<String, Value>,
    ) -> (VerifiedIdToken, TokenSet, Map<String, Value>) {
        let n = self.next();
        let at = format!("access-token-{sub}-{n}");
        let rt = format!("refresh-token-{sub}-{n}");
        let ttl = {
            let mut s = self.state.lock().unwrap();
            s.access_tokens.insert(at.clone(), sub.to_owned());
            s.refresh_tokens.insert(rt.clone(), sub.to_owned());
            s.access_ttl
        };
        let claims = self.id_claims(sub, extra_id_claims);
        let idt = VerifiedIdToken {
            raw: SecretString::new(format!("raw-id-token-{sub}-{n}")),
            claims,
            expires_at: now_unix() + 3600,
        };
        let ts = TokenSet {
            access_token: SecretString::new(at),
            refresh_token: Some(SecretString::new(rt)),
            access_token_expires_at: Some(now_unix() + ttl),
            id_token: None,
        };
        let info = self.user_info_now(sub);
        (idt, ts, info)
    }

    fn user_info_now(&self, sub: &str) -> Map<String, Value> {
        let s = self.state.lock().unwrap();
        let u = &s.users[sub];
        let mut m = Map::new();
        m.insert("sub".into(), json!(sub));
        m.insert("email".into(), json!(u.email));
        if s.user_info_has_groups {
            m.insert("groups".into(), json!(u.groups));
        }
        m
    }
}

impl IdentityProvider for FakeIdp {
    fn refresh(&self, refresh_token: &SecretString) -> BoxFuture<'_, Result<TokenSet, IdpError>> {
        self.refresh_calls.fetch_add(1, Ordering::SeqCst);
        let rt = refresh_token.expose().to_owned();
        Box::pin(async move {
            let (sub, issue_id, ttl) = {
                let s = self.state.lock().unwrap();
                if s.down {
                    return Err(IdpError::Unavailable("connection refused".into()));
                }
                if s.revoked.contains(&rt) {
                    return Err(IdpError::InvalidGrant("revoked".into()));
                }
                let Some(sub) = s.refresh_tokens.get(&rt).cloned() else {
                    return Err(IdpError::InvalidGrant("unknown".into()));
                };
                if s.users[&sub].disabled {
                    return Err(IdpError::InvalidGrant("user disabled".into()));
                }
                (sub, s.issue_id_token_on_refresh, s.access_ttl)
            };
            let n = self.next();
            let at = format!("access-token-{sub}-{n}");
            let new_rt = format!("refresh-token-{sub}-{n}");
            {
                let mut s = self.state.lock().unwrap();
                s.access_tokens.insert(at.clone(), sub.clone());
                // Rotation: the old refresh token is now invalid.
                s.refresh_tokens.remove(&rt);
                s.revoked.insert(rt.clone());
                s.refresh_tokens.insert(new_rt.clone(), sub.clone());
            }
            let id_token = issue_id.then(|| VerifiedIdToken {
                raw: SecretString::new(format!("raw-id-token-{sub}-{n}")),
                claims: self.id_claims(&sub, &Map::new()),
                expires_at: now_unix() + 3600,
            });
            Ok(TokenSet {
                access_token: SecretString::new(at),
                refresh_token: Some(SecretString::new(new_rt)),
                access_token_expires_at: Some(now_unix() + ttl),
                id_token,
            })
        })
    }

    fn user_info(
        &self,
        access_token: &SecretString,
    ) -> BoxFuture<'_, Result<Map<String, Value>, IdpError>> {
        self.user_info_calls.fetch_add(1, Ordering::SeqCst);
        let at = access_token.expose().to_owned();
        Box::pin(async move {
            // Not called under the lock: a hook may itself run a refresh through this IdP.
            let hook = self.during_user_info.lock().unwrap().clone();
            if let Some(hook) = hook {
                hook();
            }
            let sub = {
                let s = self.state.lock().unwrap();
                if s.down {
                    return Err(IdpError::Unavailable("503".into()));
                }
                let Some(sub) = s.access_tokens.get(&at).cloned() else {
                    return Err(IdpError::UserDisabled("401 unknown token".into()));
                };
                if s.users[&sub].disabled {
                    return Err(IdpError::UserDisabled("401".into()));
                }
                sub
            };
            Ok(self.user_info_now(&sub))
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

// ---------------------------------------------------------------- fake signer

/// "Signs" by encoding the claims the real signer must use: the session's own claims.
/// Payload is readable base64url JSON; the signature part is a fixed marker.
pub struct FakeSigner {
    pub signatures: AtomicUsize,
}

impl IdentitySigner for FakeSigner {
    fn sign(&self, session: &Session, audience: &str) -> Result<(String, i64), SignError> {
        self.signatures.fetch_add(1, Ordering::SeqCst);
        let exp = now_unix() + 300;
        let payload = json!({
            "aud": audience,
            "sub": session.user_id,
            "sid": session.id,
            "email": session.email(),
            "groups": session.groups(),
            "exp": exp,
        });
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
        Ok((format!("eyJhbGciOiJub25lIn0.{p}.fake"), exp))
    }

    fn jwks(&self) -> Value {
        json!({"keys": []})
    }
}

pub fn jwt_payload(jwt: &str) -> Value {
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

// ---------------------------------------------------------------- app state

pub fn settings() -> Settings {
    Settings::new(Secret::from_bytes(SHARED), Secret::from_bytes([12; 32]))
}

pub fn app(store: Arc<dyn Store>, idp: Arc<FakeIdp>, settings: Settings) -> AppState {
    let mut idps = IdpRegistry::new(CLIENT);
    idps.insert(CLIENT, idp);
    AppState::new(AppParts {
        settings,
        store,
        idps,
        signer: Arc::new(FakeSigner {
            signatures: AtomicUsize::new(0),
        }),
        bundle: BundleHolder::new(Bundle::unchecked(b"bundle-v1".to_vec(), "v1")),
        login: None,
    })
}

/// App state with two OAuth clients: [`CLIENT`] through `idp`, [`CLIENT_B`] through `idp_b`.
pub fn app_two_clients(store: Arc<dyn Store>, idp: Arc<FakeIdp>, idp_b: Arc<FakeIdp>) -> AppState {
    let mut idps = IdpRegistry::new(CLIENT);
    idps.insert(CLIENT, idp);
    idps.insert(CLIENT_B, idp_b);
    AppState::new(AppParts {
        settings: settings(),
        store,
        idps,
        signer: Arc::new(FakeSigner {
            signatures: AtomicUsize::new(0),
        }),
        bundle: BundleHolder::new(Bundle::unchecked(b"bundle-v1".to_vec(), "v1")),
        login: None,
    })
}

/// Log `sub` in through `idp` as OAuth client `client_id`.
pub async fn login_with_client(
    state: &AppState,
    idp: &FakeIdp,
    sub: &str,
    client_id: &str,
) -> Session {
    let (id_token, tokens, user_info) = idp.login(sub, &Map::new());
    state
        .sessions
        .create_session(NewSession {
            user_id: sub.to_owned(),
            id_token,
            tokens,
            user_info,
            client_id: client_id.to_owned(),
            lifetime: Duration::from_secs(14 * 3600),
        })
        .await
        .unwrap()
}

/// Log `sub` in through the fake IdP (what the login callback does).
pub async fn login(
    state: &AppState,
    idp: &FakeIdp,
    sub: &str,
    extra_id_claims: Map<String, Value>,
) -> Session {
    let (id_token, tokens, user_info) = idp.login(sub, &extra_id_claims);
    state
        .sessions
        .create_session(NewSession {
            user_id: sub.to_owned(),
            id_token,
            tokens,
            user_info,
            client_id: CLIENT.to_owned(),
            lifetime: Duration::from_secs(14 * 3600),
        })
        .await
        .unwrap()
}

pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

/// Flattened string values of one claim in a view.
pub fn view_strings(view: &portcullis_common::api::SessionView, key: &str) -> Option<Vec<String>> {
    use portcullis_common::api::claim_value::Kind;
    view.claims.iter().find(|c| c.key == key).map(|c| {
        c.values
            .iter()
            .filter_map(|v| match &v.kind {
                Some(Kind::Str(s)) => Some(s.clone()),
                _ => None,
            })
            .collect()
    })
}

// ---------------------------------------------------------------- configs

/// A minimal valid config whose one route requires `group`.
pub fn config_yaml(group: &str) -> String {
    use base64::engine::general_purpose::STANDARD;
    format!(
        r#"shared_secret: {shared}
cookie_secret: {cookie}
authenticate_service_url: https://auth.example.com
idp_provider_url: https://idp.example.com
idp_client_id: portcullis-test-client
idp_client_secret: client-secret
routes:
  - from: https://app.example.com
    to: http://127.0.0.1:9
    policy:
      allow:
        and:
          - claim/groups: {group}
"#,
        shared = STANDARD.encode(SHARED),
        cookie = STANDARD.encode([12u8; 32]),
    )
}
