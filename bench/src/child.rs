//! The seeded sidecar: the real sidecar (library) in a child process of the harness.
//!
//! `portcullis-bench sidecar-child --config <yaml> --sessions <n> --cookies <file>` builds
//! the sidecar's `AppState` exactly as `sidecar/src/main.rs` does — settings from the
//! config, the databroker from `databroker::open` (memory or Redis), the real identity
//! JWT signer (`jwt::JwtSigner`, an ephemeral P-256 key as without `signing_key`), the
//! bundle compiled from the config's routes — then creates `n` sessions through
//! `SessionService::create_session` (what the login callback does), seals their cookies
//! with the config's `cookie_secret`, and serves `sidecar::router` (internal API) on a
//! loopback port and `sidecar::ext_authz::router` (Envoy `ext_authz`, HTTP and gRPC) on
//! another.
//!
//! `--tcp-nodelay` sets `TCP_NODELAY` on accepted connections (the harness passes it unless
//! `BENCH_SIDECAR_NODELAY=0`): without it, an HTTP/2 (gRPC) answer written in several
//! small frames waits for the peer's delayed ACK (Nagle), ~40 ms per ext_authz check.
//!
//! Not running: the identity manager, the expiry sweep and the bundle watcher. The IdP is
//! not on any measured path, and with the demo config's 15 s user-info interval the
//! identity manager would refresh 100 000 sessions in the background while we measure.
//! The login routes answer 503 (no login state): nothing here signs in through a browser.
//!
//! Protocol: one `ready …` line on stdout once serving; the cookies go to the cookie file
//! (`<index> <session id> <Cookie header value>` per line, in completion order). Then
//! commands on stdin, one per line, each answered with one line on stdout:
//! - `signout <sid>` → deletes the session (as `/.pomerium/sign_out` does);
//! - `drop-group <sid> <group>` → rewrites the session's user info without the group (as
//!   the identity manager does when the IdP's answer changed);
//! - `stats` → `stats lookups=<session lookups served> rss_kb=<n>`.
//!
//! Changes answer `ok version=<databroker version> commit_us=<unix µs>` once the store
//! returned, i.e. once the change is committed and the change stream can see it.
//! End of stdin ends the process (the harness died or is done).

use anyhow::{Context as _, Result, anyhow, bail};
use portcullis_common::cookie::{self, CookieKey};
use serde_json::{Map, Value, json};
use sidecar::bundle::{Bundle, BundleHolder};
use sidecar::databroker::{Expect, Kind};
use sidecar::idp::{IdpRegistry, SecretString, TokenSet, VerifiedIdToken};
use sidecar::session::NewSession;
use sidecar::settings::Settings;
use sidecar::{AppParts, AppState};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Groups of every seeded user (the demo's alice: `admins` opens the `admin` route).
pub const GROUPS: [&str; 2] = ["admins", "staff"];

/// The seeded user number `i`.
pub fn user_email(i: usize) -> String {
    format!("user{i}@example.com")
}

/// Sessions created in flight at once while seeding (Redis round trips overlap).
const SEED_CONCURRENCY: usize = 64;

/// Resident set size of this process, in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kb(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

struct ChildOpts {
    config: PathBuf,
    sessions: usize,
    cookies: PathBuf,
    tcp_nodelay: bool,
}

fn parse_opts(args: &[String]) -> Result<ChildOpts> {
    let mut config = None;
    let mut sessions = 0;
    let mut cookies = None;
    let mut tcp_nodelay = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--sessions" => sessions = value()?.parse().context("--sessions")?,
            "--cookies" => cookies = Some(PathBuf::from(value()?)),
            "--tcp-nodelay" => tcp_nodelay = true,
            other => bail!("sidecar-child: unknown argument {other:?}"),
        }
    }
    Ok(ChildOpts {
        config: config.ok_or_else(|| anyhow!("--config missing"))?,
        sessions,
        cookies: cookies.ok_or_else(|| anyhow!("--cookies missing"))?,
        tcp_nodelay,
    })
}

/// Entry point of `portcullis-bench sidecar-child …`.
pub fn child_main(args: &[String]) -> Result<()> {
    let opts = parse_opts(args)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(opts))
}

/// `authenticate.example.com` of `https://authenticate.example.com/`: the identity JWT's
/// issuer, as `sidecar::auth::setup` derives it.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or("").to_owned()
}

/// Build the state as the sidecar binary does (minus the login flow's IdP clients).
async fn build_state(config_text: &str) -> Result<AppState> {
    let loaded = policy_compiler::config::load_str("bench.yaml", config_text, &|_| None)
        .map_err(|d| anyhow!("config: {}", sidecar::bundle::diagnostics(&d)))?;
    let settings = Settings::from_config(&loaded.config, None)?;
    let store = sidecar::databroker::open(&settings.storage)
        .await
        .context("opening the databroker")?;
    let issuer = authority(settings.authenticate_service_url.as_deref().unwrap_or(""));
    let signer = sidecar::jwt::JwtSigner::new(None, issuer, &settings.jwt_claims_headers)?;
    let bundle = Bundle::from_config(&loaded.config)?;
    let client_id = settings
        .idp_client
        .as_ref()
        .map(|c| c.client_id.clone())
        .unwrap_or_default();
    Ok(AppState::new(AppParts {
        settings,
        store,
        idps: IdpRegistry::new(client_id),
        signer: Arc::new(signer),
        bundle: BundleHolder::new(bundle),
        login: None,
    }))
}

/// A JWT-shaped string of a realistic ID token's size (RS256-signed tokens of this shape
/// are ~0.9 KB), so the stored session is as large as a real one.
fn fake_raw_id_token(claims: &Map<String, Value>) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"bench","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    format!("{header}.{payload}.{}", "s".repeat(342))
}

/// What the login callback hands the session service for seeded user `i`.
fn new_session(i: usize, client_id: &str, lifetime: Duration) -> NewSession {
    let now = sidecar::databroker::now_unix();
    let sub = format!("bench-user-{i:07}");
    let email = user_email(i);
    let mut claims = Map::new();
    claims.insert("iss".into(), json!("https://idp.example.com/"));
    claims.insert("sub".into(), json!(sub));
    claims.insert("aud".into(), json!(client_id));
    claims.insert("email".into(), json!(email));
    claims.insert("email_verified".into(), json!(true));
    claims.insert("name".into(), json!(format!("User {i}")));
    claims.insert("groups".into(), json!(GROUPS));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + 3600));
    let mut user_info = Map::new();
    for k in ["sub", "email", "email_verified", "name", "groups"] {
        if let Some(v) = claims.get(k) {
            user_info.insert(k.into(), v.clone());
        }
    }
    NewSession {
        user_id: sub,
        id_token: VerifiedIdToken {
            raw: SecretString::new(fake_raw_id_token(&claims)),
            claims,
            expires_at: now + 3600,
        },
        tokens: TokenSet {
            access_token: SecretString::new(format!("bench-access-{i:07}-{}", "a".repeat(48))),
            refresh_token: Some(SecretString::new(format!(
                "bench-refresh-{i:07}-{}",
                "r".repeat(48)
            ))),
            access_token_expires_at: Some(now + 3600),
            id_token: None,
        },
        user_info,
        client_id: client_id.to_owned(),
        lifetime,
    }
}

/// Create `n` sessions; write `<i> <sid> <cookie>` lines to `out`.
async fn seed(state: &AppState, n: usize, out: &Path) -> Result<()> {
    let key = CookieKey::new(&state.settings.cookie_secret);
    let name = state.settings.cookie_name.clone();
    let client_id = state.idps.default_client_id().to_owned();
    let lifetime = state.settings.cookie_expire;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0usize;
    let mut done = 0usize;
    while done < n {
        while next < n && tasks.len() < SEED_CONCURRENCY {
            let st = state.clone();
            let new = new_session(next, &client_id, lifetime);
            let i = next;
            tasks.spawn(async move { (i, st.sessions.create_session(new).await) });
            next += 1;
        }
        let Some(joined) = tasks.join_next().await else {
            bail!("seeding stopped early");
        };
        let (i, created) = joined?;
        let session = created.with_context(|| format!("creating session {i}"))?;
        // Nonce: 24 bytes of the (256-bit random) session id — unique per cookie.
        let mut nonce = [0u8; 24];
        for (d, s) in nonce.iter_mut().zip(session.id.bytes()) {
            *d = s;
        }
        let sealed = cookie::seal(
            &key,
            &name,
            &session.id,
            u64::try_from(session.expires_at).unwrap_or(0),
            nonce,
        )
        .ok_or_else(|| anyhow!("session id {i} is not a cookie id"))?;
        writeln!(file, "{i} {} {name}={sealed}", session.id)?;
        done += 1;
    }
    file.flush()?;
    Ok(())
}

/// The listener, with `TCP_NODELAY` on every accepted connection when `on`.
fn nodelay(
    listener: tokio::net::TcpListener,
    on: bool,
) -> axum::serve::TapIo<
    tokio::net::TcpListener,
    impl FnMut(&mut tokio::net::TcpStream) + Send + 'static,
> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(move |tcp| {
        if on && let Err(e) = tcp.set_nodelay(true) {
            eprintln!("sidecar-child: TCP_NODELAY: {e}");
        }
    })
}

async fn serve(opts: ChildOpts) -> Result<()> {
    let text = std::fs::read_to_string(&opts.config)
        .with_context(|| format!("reading {}", opts.config.display()))?;
    let state = build_state(&text).await?;
    let rss_before = rss_kb(None);
    let start = Instant::now();
    seed(&state, opts.sessions, &opts.cookies).await?;
    let seed_ms = start.elapsed().as_millis();
    let rss_after = rss_kb(None);

    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_addr = api.local_addr()?;
    let api = nodelay(api, opts.tcp_nodelay);
    let app = sidecar::router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(api, app).await {
            eprintln!("sidecar-child: internal API stopped: {e}");
        }
    });
    // The external-authorization listener (scenario 3): same state, same session store.
    let authz = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let authz_addr = authz.local_addr()?;
    let authz = nodelay(authz, opts.tcp_nodelay);
    let authz_app = sidecar::ext_authz::router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(authz, authz_app).await {
            eprintln!("sidecar-child: ext_authz listener stopped: {e}");
        }
    });
    println!(
        "ready api={api_addr} ext_authz={authz_addr} sessions={} rss_before_kb={rss_before} rss_after_kb={rss_after} seed_ms={seed_ms}",
        opts.sessions
    );
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
    while let Some(line) = lines.next_line().await? {
        let answer = match command(&state, &line).await {
            Ok(a) => a,
            Err(e) => format!("err {e:#}"),
        };
        println!("{answer}");
    }
    Ok(())
}

async fn command(state: &AppState, line: &str) -> Result<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["signout", sid] => {
            let version = state
                .store
                .delete(Kind::Session, sid, Expect::Any)
                .await?
                .ok_or_else(|| anyhow!("no session {sid}"))?;
            Ok(format!("ok version={version} commit_us={}", now_us()))
        }
        ["drop-group", sid, group] => {
            for _ in 0..10 {
                let mut s = state
                    .sessions
                    .get(sid)
                    .await?
                    .ok_or_else(|| anyhow!("no session {sid}"))?;
                if let Some(Value::Array(groups)) = s.user_info.get_mut("groups") {
                    groups.retain(|g| g.as_str() != Some(group));
                }
                s.refresh.user_info_fetched_ms = sidecar::session::fetch_stamp_ms();
                if state.sessions.update(&mut s).await? {
                    return Ok(format!("ok version={} commit_us={}", s.version, now_us()));
                }
            }
            bail!("session {sid} kept changing")
        }
        ["stats"] => Ok(format!(
            "stats lookups={} rss_kb={}",
            state.metrics.session_lookups.get(),
            rss_kb(None)
        )),
        _ => bail!("unknown command {line:?}"),
    }
}

// ---- the harness side -------------------------------------------------------------------

/// One seeded session as the harness knows it.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// Session id (for commands).
    pub sid: String,
    /// `Cookie` header value (`_pomerium=…`).
    pub cookie: String,
}

/// A committed change.
#[derive(Debug, Clone, Copy)]
pub struct Commit {
    /// When the store returned (unix µs, this machine's clock).
    pub commit_us: u64,
}

/// The running child; killed on drop.
pub struct SeededSidecar {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Internal API listener.
    pub api: SocketAddr,
    /// External-authorization listener (`sidecar::ext_authz::router`).
    pub ext_authz: SocketAddr,
    /// Seeded sessions, by index.
    pub sessions: Vec<Seeded>,
    /// RSS before seeding, KiB.
    pub rss_before_kb: u64,
    /// RSS after seeding, KiB.
    pub rss_after_kb: u64,
    /// Seeding time.
    pub seed_ms: u64,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn num(line: &str, key: &str) -> Result<u64> {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no {key}= in {line:?}"))
}

impl SeededSidecar {
    /// Start the child with `config` (YAML text) and `sessions` sessions; files go to `dir`.
    /// `tcp_nodelay`: set `TCP_NODELAY` on the connections its listeners accept.
    pub fn start(
        config: &str,
        sessions: usize,
        dir: &Path,
        tag: &str,
        tcp_nodelay: bool,
    ) -> Result<SeededSidecar> {
        let config_path = dir.join(format!("{tag}-config.yaml"));
        let cookies_path = dir.join(format!("{tag}-cookies.txt"));
        std::fs::write(&config_path, config)?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("sidecar-child")
            .arg("--config")
            .arg(&config_path)
            .args(["--sessions", &sessions.to_string()])
            .arg("--cookies")
            .arg(&cookies_path)
            .args(tcp_nodelay.then_some("--tcp-nodelay"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the sidecar child")?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("child stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("child stdout"))?);
        let mut me = SeededSidecar {
            child,
            stdin,
            stdout,
            api: "127.0.0.1:0".parse()?,
            ext_authz: "127.0.0.1:0".parse()?,
            sessions: Vec::new(),
            rss_before_kb: 0,
            rss_after_kb: 0,
            seed_ms: 0,
        };
        let ready = me.read_line()?;
        if !ready.starts_with("ready ") {
            bail!("sidecar child: {ready}");
        }
        me.api = field(&ready, "api")
            .ok_or_else(|| anyhow!("no api= in {ready:?}"))?
            .parse()?;
        me.ext_authz = field(&ready, "ext_authz")
            .ok_or_else(|| anyhow!("no ext_authz= in {ready:?}"))?
            .parse()?;
        me.rss_before_kb = num(&ready, "rss_before_kb")?;
        me.rss_after_kb = num(&ready, "rss_after_kb")?;
        me.seed_ms = num(&ready, "seed_ms")?;
        me.sessions = read_cookies(&std::fs::read_to_string(&cookies_path)?, sessions)?;
        Ok(me)
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the sidecar child exited (see its stderr above)");
        }
        Ok(line.trim_end().to_owned())
    }

    fn ask(&mut self, command: &str) -> Result<String> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let line = self.read_line()?;
        if let Some(e) = line.strip_prefix("err ") {
            bail!("sidecar child: {command}: {e}");
        }
        Ok(line)
    }

    /// Sign session `sid` out; returns once committed.
    pub fn signout(&mut self, sid: &str) -> Result<Commit> {
        let line = self.ask(&format!("signout {sid}"))?;
        commit(&line)
    }

    /// Remove `group` from session `sid`'s claims; returns once committed.
    pub fn drop_group(&mut self, sid: &str, group: &str) -> Result<Commit> {
        let line = self.ask(&format!("drop-group {sid} {group}"))?;
        commit(&line)
    }

    /// Session lookups the internal API served so far.
    pub fn lookups(&mut self) -> Result<u64> {
        let line = self.ask("stats")?;
        num(&line, "lookups")
    }

    /// The child's pid (CPU accounting, pinning).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn commit(line: &str) -> Result<Commit> {
    // `version=` is the databroker version of the change (for a reader of the protocol).
    num(line, "version")?;
    Ok(Commit {
        commit_us: num(line, "commit_us")?,
    })
}

/// Parse the cookie file (`<i> <sid> <cookie>` lines, any order) into index order.
pub fn read_cookies(text: &str, n: usize) -> Result<Vec<Seeded>> {
    let mut out: Vec<Option<Seeded>> = vec![None; n];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut w = line.split_whitespace();
        let (Some(i), Some(sid), Some(cookie)) = (w.next(), w.next(), w.next()) else {
            bail!("bad cookie line {line:?}");
        };
        let i: usize = i
            .parse()
            .with_context(|| format!("bad index in {line:?}"))?;
        let slot = out
            .get_mut(i)
            .ok_or_else(|| anyhow!("index {i} out of range"))?;
        *slot = Some(Seeded {
            sid: sid.to_owned(),
            cookie: cookie.to_owned(),
        });
    }
    out.into_iter()
        .enumerate()
        .map(|(i, s)| s.ok_or_else(|| anyhow!("session {i} missing from the cookie file")))
        .collect()
}

impl Drop for SeededSidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_file_is_read_into_index_order_and_gaps_are_errors() {
        let s = read_cookies("1 sid1 _pomerium=b\n0 sid0 _pomerium=a\n", 2).unwrap();
        assert_eq!(s[0].sid, "sid0");
        assert_eq!(s[1].cookie, "_pomerium=b");
        assert!(read_cookies("0 sid0 c\n", 2).is_err());
        assert!(read_cookies("5 sid c\n", 2).is_err());
        assert!(read_cookies("0 sid\n", 1).is_err());
    }

    #[test]
    fn protocol_fields_and_issuer() {
        let c = commit("ok version=42 commit_us=1700000000000000").unwrap();
        assert_eq!(c.commit_us, 1_700_000_000_000_000);
        assert!(commit("ok version=x").is_err());
        assert_eq!(
            authority("https://authenticate.example.com/"),
            "authenticate.example.com"
        );
        assert_eq!(authority("http://127.0.0.1:8000"), "127.0.0.1:8000");
    }

    #[test]
    fn seeded_sessions_are_in_admins_and_look_like_a_login() {
        let n = new_session(7, "client", Duration::from_secs(60));
        assert_eq!(n.user_info["email"], json!("user7@example.com"));
        assert_eq!(n.id_token.claims["groups"], json!(["admins", "staff"]));
        assert!(n.id_token.raw.expose().len() > 600);
    }
}
