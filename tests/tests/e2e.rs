//! End-to-end: real Envoy (2 workers) + filter.wasm + sidecar + oidc-provider (+ Redis),
//! on loopback. Every scenario runs against the memory databroker with one sidecar, and
//! against Redis with two sidecar replicas behind one Envoy (`*_redis` tests).
//!
//! Logs of every process: tests/output/<test name>/. Tests run one at a time (a 2-core CI
//! machine; timings matter for the revocation assertions).

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing yields Null for missing keys; it never panics"
)]

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use portcullis_tests::client::{Resp, Session};
use portcullis_tests::process::wait_until;
use portcullis_tests::stack::{Options, Stack};
use serde_json::Value;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn memory(name: &str) -> Options {
    Options::new(name)
}

fn redis(name: &str) -> Options {
    let mut o = Options::new(name);
    o.redis = true;
    o.sidecars = 2;
    o
}

/// The identity JWT the upstream received, verified (fails the test otherwise).
fn verified_claims(r: &Resp) -> Result<Value> {
    ensure!(
        r.status == 200,
        "expected 200 from the upstream, got {} {}: {}",
        r.status,
        r.url,
        r.body
    );
    let echo = r.json()?;
    let jwt = &echo["jwt"];
    ensure!(
        jwt["present"] == true,
        "no X-Pomerium-Jwt-Assertion reached the upstream: {echo}"
    );
    ensure!(
        jwt["verified"] == true,
        "identity JWT did not verify against the JWKS: {echo}"
    );
    Ok(jwt["claims"].clone())
}

fn groups(claims: &Value) -> Vec<String> {
    match &claims["groups"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// `aud` names the route host (Pomerium: the host the browser used).
fn check_audience(claims: &Value, host_port: &str) -> Result<()> {
    let host = host_port.split(':').next().unwrap_or(host_port);
    let ok = |v: &Value| v.as_str().is_some_and(|a| a == host || a == host_port);
    let aud_ok = match &claims["aud"] {
        Value::Array(a) => a.iter().any(ok),
        v => ok(v),
    };
    ensure!(aud_ok, "aud {} does not name {host_port}", claims["aud"]);
    Ok(())
}

/// Sign `user` in through the real login flow, starting at `url`; returns the final answer.
async fn login(stack: &Stack, s: &mut Session, url: &str, user: &str) -> Result<Resp> {
    let u = stack.user(user)?.clone();
    let r = s.navigate(url, Some(&u)).await?;
    ensure!(
        !r.url
            .as_str()
            .starts_with(stack.idp.issuer.trim_end_matches('/')),
        "login stuck at the IdP: {} {}\ntrace: {:#?}",
        r.status,
        r.body,
        s.trace
    );
    Ok(r)
}

// ---- 1. claims refresh: the scenario --------------------------------------------

async fn group_removal_reaches_policy_and_jwt(mut o: Options) -> Result<()> {
    o.refresh = Duration::from_secs(3);
    let stack = Stack::start(o).await?;
    let mut s1 = Session::new()?;
    let mut s2 = Session::new()?;
    // Sign in (two browser sessions of the same user): access granted.
    for s in [&mut s1, &mut s2] {
        let r = login(&stack, s, &stack.vault("/admin/panel"), "alice").await?;
        let claims = verified_claims(&r).context("vault /admin after login")?;
        ensure!(groups(&claims).contains(&"admins".to_owned()), "{claims}");
        let v = verified_claims(&s.navigate(&stack.verify("/"), None).await?)?;
        check_audience(&v, &format!("127.0.0.2:{}", stack.port))?;
        ensure!(v["email"] == "alice@example.com", "{v}");
        ensure!(groups(&v).contains(&"admins".to_owned()), "{v}");
    }
    ensure!(
        s1.cookies_for(&stack.vault("/")) != s2.cookies_for(&stack.vault("/")),
        "two sessions share a cookie"
    );

    // Remove the user from the group at the IdP.
    stack.idp.remove_group("alice", "admins").await?;
    let removed = Instant::now();
    // After the next user-info refresh: /admin denied in BOTH sessions.
    let deadline = stack.options.refresh * 3 + Duration::from_secs(10);
    for (i, s) in [&s1, &s2].into_iter().enumerate() {
        wait_until(
            &format!("session {i}: /admin denied after group removal"),
            deadline,
            || async {
                let r = s.get(&stack.vault("/admin/panel")).await?;
                Ok((r.status == 403).then_some(()))
            },
        )
        .await?;
    }
    println!(
        "group removal → /admin denied in both sessions after {:?}",
        removed.elapsed()
    );
    for s in [&mut s1, &mut s2] {
        // The verify route's identity JWT no longer lists the group; the rest stays.
        let v = verified_claims(&s.navigate(&stack.verify("/"), None).await?)?;
        ensure!(
            !groups(&v).contains(&"admins".to_owned()),
            "stale group in identity JWT: {v}"
        );
        ensure!(groups(&v).contains(&"staff".to_owned()), "{v}");
        // The rest of the host (no group needed) still works.
        verified_claims(&s.get(&stack.vault("/")).await?)?;
        // The user info page agrees.
        let page = s.get(&stack.verify("/.pomerium/")).await?;
        ensure!(page.status == 200, "user info page {}", page.status);
        ensure!(page.body.contains("staff"), "user info page lacks `staff`");
        ensure!(
            !page.body.contains("admins"),
            "user info page still shows `admins`"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_removal_reaches_policy_and_jwt_memory() -> Result<()> {
    let _g = SERIAL.lock().await;
    group_removal_reaches_policy_and_jwt(memory("group_removal_memory")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_removal_reaches_policy_and_jwt_redis() -> Result<()> {
    let _g = SERIAL.lock().await;
    group_removal_reaches_policy_and_jwt(redis("group_removal_redis")).await
}

// ---- 2. two sessions of one user never read each other's claims -------------------------

async fn sessions_decide_on_their_own_claims(mut o: Options) -> Result<()> {
    // No refresh during the test: session 1 keeps the claims of its login.
    o.refresh = Duration::from_secs(3600);
    let stack = Stack::start(o).await?;
    let alice = stack.user("alice")?.clone();
    // Session 1 signs in on both hosts (one session, handed off to each host).
    let mut s1 = Session::new()?;
    login(&stack, &mut s1, &stack.vault("/"), "alice").await?;
    s1.navigate(&stack.verify("/"), Some(&alice)).await?;
    stack.idp.remove_group("alice", "admins").await?;
    // Session 2 signs in after the change: its claims lack the group.
    let mut s2 = Session::new()?;
    login(&stack, &mut s2, &stack.vault("/"), "alice").await?;
    s2.navigate(&stack.verify("/"), Some(&alice)).await?;
    let sid = |r: &Resp| -> Result<String> {
        Ok(verified_claims(r)?["sid"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    };
    let (v1, v2) = (
        sid(&s1.get(&stack.verify("/")).await?)?,
        sid(&s2.get(&stack.verify("/")).await?)?,
    );
    ensure!(
        !v1.is_empty() && v1 != v2,
        "two logins must be two sessions: {v1} / {v2}"
    );
    ensure!(
        v1 == sid(&s1.get(&stack.vault("/")).await?)?,
        "session 1 differs between hosts"
    );
    ensure!(
        v2 == sid(&s2.get(&stack.vault("/")).await?)?,
        "session 2 differs between hosts"
    );

    // Each session's decision matches what its own identity JWT says, on both workers
    // (several fresh requests).
    for (name, s) in [("first", &mut s1), ("second", &mut s2)] {
        let own = verified_claims(&s.get(&stack.verify("/")).await?)?;
        let has_admins = groups(&own).contains(&"admins".to_owned());
        // Fresh connections, so both workers decide (checked with Envoy's counters).
        let url = stack.vault("/admin/x");
        let before = stack.envoy.worker_connections().await?;
        let statuses = fresh_connection_statuses(&url, &s.cookies_for(&url), 12).await?;
        let after = stack.envoy.worker_connections().await?;
        ensure!(
            after.iter().zip(&before).all(|(a, b)| a > b),
            "the probes did not reach both workers: {before:?} → {after:?}"
        );
        for st in statuses {
            let allowed = match st {
                200 => true,
                403 => false,
                other => bail!("{name} session: unexpected {other} on /admin"),
            };
            ensure!(
                allowed == has_admins,
                "{name} session: /admin allowed={allowed} but its identity JWT groups are {:?}",
                groups(&own)
            );
        }
        if name == "second" {
            ensure!(
                !has_admins,
                "the second login got a group the IdP no longer returns: {own}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_decide_on_their_own_claims_memory() -> Result<()> {
    let _g = SERIAL.lock().await;
    sessions_decide_on_their_own_claims(memory("own_claims_memory")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_decide_on_their_own_claims_redis() -> Result<()> {
    let _g = SERIAL.lock().await;
    sessions_decide_on_their_own_claims(redis("own_claims_redis")).await
}

// ---- 3. sign-out revokes on every worker within 1 s --------------------------------------

/// `n` requests with `cookie`, each on a new connection (so Envoy spreads them over its
/// workers); returns their status codes.
async fn fresh_connection_statuses(url: &str, cookie: &str, n: usize) -> Result<Vec<u16>> {
    let client = reqwest::Client::builder()
        // Loopback test servers: Envoy's self-signed fallback certificate.
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = client
            .get(url)
            .header("cookie", cookie)
            .header("accept", "text/html")
            .send()
            .await?;
        out.push(r.status().as_u16());
    }
    Ok(out)
}

async fn sign_out_revokes_everywhere(o: Options) -> Result<()> {
    let stack = Stack::start(o).await?;
    let mut s1 = Session::new()?;
    let mut s2 = Session::new()?;
    login(&stack, &mut s1, &stack.verify("/"), "alice").await?;
    login(&stack, &mut s2, &stack.verify("/"), "alice").await?;
    let url = stack.verify("/");
    let cookie1 = s1.cookies_for(&url);
    ensure!(!cookie1.is_empty());
    // Warm both workers' caches with session 1.
    let warm = fresh_connection_statuses(&url, &cookie1, 20).await?;
    ensure!(
        warm.iter().all(|s| *s == 200),
        "session 1 before sign-out: {warm:?}"
    );

    let r = s1.sign_out(&stack.verify("")).await?;
    ensure!(
        (300..400).contains(&r.status),
        "sign-out answered {} {}",
        r.status,
        r.body
    );
    let signed_out = Instant::now();
    // When is the old cookie refused on every request?
    let first_denied = wait_until("old cookie refused", Duration::from_secs(5), || async {
        let st = fresh_connection_statuses(&url, &cookie1, 1).await?;
        Ok((st.first() != Some(&200)).then(|| signed_out.elapsed()))
    })
    .await?;
    println!("sign-out → first refusal after {first_denied:?}");
    // At 1 s after the sign-out, every worker refuses it.
    let at = signed_out + Duration::from_secs(1);
    tokio::time::sleep_until(at.into()).await;
    let probe_start = stack.envoy.worker_connections().await?;
    let after = fresh_connection_statuses(&url, &cookie1, 30).await?;
    let probe_end = stack.envoy.worker_connections().await?;
    ensure!(
        after.iter().all(|s| *s == 302 || *s == 401),
        "1 s after sign-out the revoked session still got through: {after:?}"
    );
    ensure!(
        probe_end.iter().zip(&probe_start).all(|(a, b)| a > b),
        "the post-sign-out probes did not reach both workers: {probe_start:?} → {probe_end:?}"
    );
    // The other session of the same user keeps working.
    let cookie2 = s2.cookies_for(&url);
    let other = fresh_connection_statuses(&url, &cookie2, 20).await?;
    ensure!(
        other.iter().all(|s| *s == 200),
        "other session after sign-out: {other:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_revokes_everywhere_memory() -> Result<()> {
    let _g = SERIAL.lock().await;
    sign_out_revokes_everywhere(memory("sign_out_memory")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_revokes_everywhere_redis() -> Result<()> {
    let _g = SERIAL.lock().await;
    sign_out_revokes_everywhere(redis("sign_out_redis")).await
}

// ---- 4. what the upstream sees ------------------------------------------------------------

async fn upstream_sees_verified_identity_only(o: Options) -> Result<()> {
    let stack = Stack::start(o).await?;
    let forged = [
        (
            "x-pomerium-jwt-assertion",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.",
        ),
        ("x-pomerium-claim-email", "mallory@example.com"),
    ];
    // Unauthenticated, with forged identity headers: sign-in, the upstream is not reached.
    let anon = Session::new()?;
    let r = anon
        .request(reqwest::Method::GET, &stack.verify("/"), &forged, None)
        .await?;
    ensure!(
        r.status == 302,
        "forged identity without a session got {} {}",
        r.status,
        r.body
    );
    // A public route passes the request but strips the forged headers.
    let r = anon
        .request(reqwest::Method::GET, &stack.public("/p"), &forged, None)
        .await?;
    ensure!(r.status == 200, "public route: {} {}", r.status, r.body);
    let echo = r.json()?;
    ensure!(
        echo["headers"].get("x-pomerium-jwt-assertion").is_none(),
        "forged assertion reached the upstream: {echo}"
    );
    ensure!(
        echo["headers"].get("x-pomerium-claim-email").is_none(),
        "forged claim header reached the upstream: {echo}"
    );

    let mut s = Session::new()?;
    login(&stack, &mut s, &stack.verify("/"), "alice").await?;
    s.set_cookie(&stack.verify("/"), "theme=dark")?;
    let r = s
        .request(reqwest::Method::GET, &stack.verify("/x"), &forged, None)
        .await?;
    let claims = verified_claims(&r)?;
    ensure!(claims["sub"] == "alice", "{claims}");
    ensure!(claims["email"] == "alice@example.com", "{claims}");
    check_audience(&claims, &format!("127.0.0.2:{}", stack.port))?;
    let echo = r.json()?;
    let assertions = echo["headers"]["x-pomerium-jwt-assertion"]
        .as_array()
        .map_or(0, Vec::len);
    ensure!(
        assertions == 1,
        "expected exactly our assertion header: {echo}"
    );
    let cookies: Vec<String> = echo["headers"]["cookie"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        !cookies.iter().any(|c| c.contains("_pomerium")),
        "our session cookie reached the upstream: {cookies:?}"
    );
    ensure!(
        cookies.iter().any(|c| c.contains("theme=dark")),
        "the user's own cookie was dropped: {cookies:?}"
    );
    if let Some(v) = echo["headers"].get("x-pomerium-claim-email") {
        ensure!(
            !v.to_string().contains("mallory"),
            "forged claim header reached the upstream: {echo}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_verified_identity_only_memory() -> Result<()> {
    let _g = SERIAL.lock().await;
    upstream_sees_verified_identity_only(memory("upstream_memory")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_verified_identity_only_redis() -> Result<()> {
    let _g = SERIAL.lock().await;
    upstream_sees_verified_identity_only(redis("upstream_redis")).await
}

// ---- 5. policy edit + build + reload, Envoy keeps running ---------------------------------

async fn policy_reload_without_envoy_restart(o: Options) -> Result<()> {
    let mut stack = Stack::start(o).await?;
    let envoy_pid = stack.envoy.proc.pid();
    let mut bob = Session::new()?;
    let r = login(&stack, &mut bob, &stack.vault("/admin/x"), "bob").await?;
    ensure!(
        r.status == 403,
        "bob (staff) on /admin before the edit: {} {}",
        r.status,
        r.body
    );
    // Edit the policy: /admin now needs `staff`; rebuild the bundle.
    stack.set_admin_group("staff")?;
    let edited = Instant::now();
    let url = stack.vault("/admin/x");
    let cookie = bob.cookies_for(&url);
    // Every worker takes the new bundle (from whichever sidecar replica it polls): wait
    // until a run of fresh connections that reached both workers is all allowed.
    wait_until(
        "bob allowed on /admin by every worker after the policy edit",
        Duration::from_secs(20),
        || async {
            let before = stack.envoy.worker_connections().await?;
            let st = fresh_connection_statuses(&url, &cookie, 8).await?;
            let after = stack.envoy.worker_connections().await?;
            let both_workers = after.len() == 2 && after.iter().zip(&before).all(|(a, b)| a > b);
            Ok((both_workers && st.iter().all(|s| *s == 200)).then_some(()))
        },
    )
    .await?;
    println!(
        "policy edit → new decision on every worker after {:?}",
        edited.elapsed()
    );
    // And it stays so (no worker goes back to the old bundle); Envoy never restarted.
    let st = fresh_connection_statuses(&url, &cookie, 20).await?;
    ensure!(st.iter().all(|s| *s == 200), "after the switch: {st:?}");
    verified_claims(&bob.get(&url).await?)?;
    stack.envoy.proc.check_alive()?;
    ensure!(stack.envoy.proc.pid() == envoy_pid);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_without_envoy_restart_memory() -> Result<()> {
    let _g = SERIAL.lock().await;
    policy_reload_without_envoy_restart(memory("policy_reload_memory")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_without_envoy_restart_redis() -> Result<()> {
    let _g = SERIAL.lock().await;
    policy_reload_without_envoy_restart(redis("policy_reload_redis")).await
}

// ---- 6. the full login in a real browser ---------------------------------------------------

async fn browser_login(o: Options) -> Result<()> {
    let stack = Stack::start(o).await?;
    let screenshot = stack.dir.join("user-info.png");
    let script = portcullis_tests::env::root().join("tests/e2e/browser.mjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .env("PORTCULLIS_IDP_DIR", portcullis_tests::env::idp_dir()?)
        .env("CHROMIUM", portcullis_tests::env::chromium()?)
        .env("APP_URL", stack.vault("/admin/browser"))
        .env("USER_INFO_URL", stack.vault("/.pomerium/"))
        .env("IDP_ISSUER", &stack.idp.issuer)
        .env("LOGIN_USER", "alice")
        .env("LOGIN_PASSWORD", &stack.user("alice")?.password)
        .env("EXPECT_GROUPS", "admins,staff")
        .env("SCREENSHOT", &screenshot)
        .env("PROFILE_DIR", stack.dir.join("chromium-profile"))
        .kill_on_drop(true)
        .output()
        .await
        .context("running node tests/e2e/browser.mjs")?;
    std::fs::write(
        stack.dir.join("browser.log"),
        [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
    )?;
    ensure!(
        out.status.success(),
        "browser scenario failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_memory() -> Result<()> {
    let _g = SERIAL.lock().await;
    browser_login(memory("browser_memory")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_redis() -> Result<()> {
    let _g = SERIAL.lock().await;
    browser_login(redis("browser_redis")).await
}

// ---- 7. an issuer without a trailing slash (Azure, Okta, Keycloak publish it so) ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_without_trailing_slash_signs_in() -> Result<()> {
    let _g = SERIAL.lock().await;
    let mut o = memory("issuer_no_slash");
    o.issuer_slash = false;
    let stack = Stack::start(o).await?;
    ensure!(!stack.idp.issuer.ends_with('/'));
    let mut s = Session::new()?;
    let r = login(&stack, &mut s, &stack.verify("/"), "alice").await?;
    let claims = verified_claims(&r).with_context(|| format!("trace: {:#?}", s.trace))?;
    ensure!(claims["sub"] == "alice", "{claims}");
    Ok(())
}

// ---- 8. a hand-written Envoy config: the filter matches routes itself ---------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_envoy_config_filter_matches_routes() -> Result<()> {
    let _g = SERIAL.lock().await;
    let mut o = memory("hand_written");
    o.hand_written = true;
    let stack = Stack::start(o).await?;
    let mut alice = Session::new()?;
    let r = login(&stack, &mut alice, &stack.vault("/admin/a"), "alice").await?;
    ensure!(groups(&verified_claims(&r)?).contains(&"admins".to_owned()));
    let mut bob = Session::new()?;
    let r = login(&stack, &mut bob, &stack.vault("/admin/b"), "bob").await?;
    ensure!(r.status == 403, "bob on /admin: {} {}", r.status, r.body);
    // Same host, outside the /admin prefix: the next route (domain only) allows bob.
    verified_claims(&bob.get(&stack.vault("/other")).await?)?;
    // Envoy's normalisation applies before the filter's own match: no prefix bypass.
    let r = bob.get(&stack.vault("//admin/b")).await?;
    ensure!(
        r.status == 403,
        "merged-slash /admin bypass: {} {}",
        r.status,
        r.body
    );
    Ok(())
}

// ---- 9. TLS listener with the self-signed fallback certificate -----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_login_and_secure_cookie() -> Result<()> {
    let _g = SERIAL.lock().await;
    let mut o = memory("tls");
    o.tls = true;
    let stack = Stack::start(o).await?;
    ensure!(stack.verify("/").starts_with("https://"));
    let mut s = Session::new()?;
    let r = login(&stack, &mut s, &stack.vault("/admin/t"), "alice").await?;
    let claims = verified_claims(&r)?;
    ensure!(groups(&claims).contains(&"admins".to_owned()), "{claims}");
    // Over TLS every session cookie is set `Secure` (and `HttpOnly`).
    let session_cookies: Vec<&String> = s
        .set_cookies
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.starts_with("_pomerium=") && !c.starts_with("_pomerium=;"))
        .collect();
    ensure!(
        !session_cookies.is_empty(),
        "no session cookie set: {:#?}",
        s.set_cookies
    );
    for c in &session_cookies {
        let attrs = c.to_ascii_lowercase();
        ensure!(
            attrs.contains("; secure"),
            "session cookie without Secure: {c}"
        );
        ensure!(
            attrs.contains("; httponly"),
            "session cookie without HttpOnly: {c}"
        );
    }
    ensure!(s.cookies_for(&stack.vault("/")).contains("_pomerium"));
    Ok(())
}
