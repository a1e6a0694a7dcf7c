//! The real `filter.wasm` (release build), driven through the wasmtime proxy-wasm host:
//! what it asks of "Envoy" for each scenario of issue 5.

use anyhow::Result;
use proxy_wasm_test_host::fixtures::{self, User};
use proxy_wasm_test_host::{Action, HttpCall, Process, Vm, wasm_path};

const CLUSTER: &str = "portcullis-sidecar";

struct Setup {
    process: Process,
    bundle: Vec<u8>,
    version: String,
}

fn setup() -> Result<Setup> {
    let process = Process::load(&wasm_path())?;
    let (bundle, version) = fixtures::bundle(&fixtures::config_yaml(None))?;
    Ok(Setup {
        process,
        bundle,
        version,
    })
}

impl Setup {
    fn now_s(&self) -> u64 {
        self.process.now_ms() / 1000
    }

    fn vm(&self, extra: &str) -> Result<Vm> {
        let mut vm = self.process.vm()?;
        let cfg = fixtures::plugin_config(CLUSTER, Some(&self.bundle), extra);
        assert!(vm.configure(&cfg)?, "on_configure refused: {:?}", vm.logs());
        Ok(vm)
    }

    fn cookie(&self, n: u32) -> Result<String> {
        fixtures::cookie_header(&fixtures::session_id(n), self.now_s())
    }
}

fn get<'a>(host: &'a str, path: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        (":authority", host),
        (":path", path),
        (":method", "GET"),
        (":scheme", "https"),
        ("x-request-id", "rid-7"),
    ];
    h.extend_from_slice(extra);
    h
}

fn session_calls(vm: &Vm) -> Vec<HttpCall> {
    vm.pending_calls()
        .into_iter()
        .filter(|c| c.path().starts_with("/.portcullis/v1/session"))
        .collect()
}

fn answer_session(s: &Setup, vm: &mut Vm, call: &HttpCall, user: Option<&User>) -> Result<()> {
    let sid = fixtures::query_param(call.path(), "id")
        .unwrap_or_default()
        .to_owned();
    let aud = fixtures::query_param(call.path(), "aud")
        .unwrap_or_default()
        .to_owned();
    let now = i64::try_from(s.now_s())?;
    let body = fixtures::session_answer(&sid, user, &aud, 1, now);
    vm.answer(call.token, 200, &[], &body)
}

fn alice() -> User {
    User::new("alice@example.com", &["admins", "staff"])
}

fn bob() -> User {
    User::new("bob@example.com", &["staff"])
}

#[test]
fn imports_are_only_what_the_host_implements() -> Result<()> {
    let s = setup()?;
    let imports = s.process.imports();
    for i in &imports {
        assert!(
            i.starts_with("env::proxy_") || i.starts_with("wasi_snapshot_preview1::"),
            "unexpected import {i}"
        );
    }
    Ok(())
}

#[test]
fn bad_plugin_config_is_refused_with_the_field_named() -> Result<()> {
    let s = setup()?;
    let cases = [
        ("{}", "sidecar_cluster"),
        (
            r#"{"sidecar_cluster":"x","shared_secret":"short","cookie_secret":"short"}"#,
            "shared_secret",
        ),
        ("not json", "$"),
    ];
    for (cfg, field) in cases {
        let mut vm = s.process.vm()?;
        assert!(!vm.configure(cfg)?, "{cfg} accepted");
        assert!(vm.logged(&format!("`{field}`")), "{cfg}: {:?}", vm.logs());
    }
    // A corrupt inline bundle too.
    let mut vm = s.process.vm()?;
    let cfg = fixtures::plugin_config(CLUSTER, Some(b"\x08\x63garbage"), "");
    assert!(!vm.configure(&cfg)?);
    assert!(vm.logged("`bundle`"), "{:?}", vm.logs());
    Ok(())
}

#[test]
fn configure_sets_a_tick_and_public_route_passes_with_spoofed_headers_stripped() -> Result<()> {
    let s = setup()?;
    let mut vm = s.vm("")?;
    assert_eq!(vm.tick_period_ms(), 500);
    let (id, action) = vm.request(
        &get(
            "public.example.com",
            "/",
            &[
                ("x-pomerium-jwt-assertion", "forged"),
                ("x-pomerium-claim-email", "ceo@example.com"),
                ("x-other", "kept"),
            ],
        ),
        &[("xds.route_name", "public")],
    )?;
    assert_eq!(action, Action::Continue);
    let st = vm.stream(id)?;
    assert_eq!(st.header("x-pomerium-jwt-assertion"), None);
    assert_eq!(st.header("x-pomerium-claim-email"), None);
    assert_eq!(st.header("x-other"), Some("kept"));
    assert!(vm.all_calls().is_empty());
    Ok(())
}

#[test]
fn login_redirect_for_browsers_and_401_for_apis() -> Result<()> {
    let s = setup()?;
    let mut vm = s.vm("")?;
    let (id, action) = vm.request(
        &get("app.example.com", "/x?y=1", &[]),
        &[("xds.route_name", "app")],
    )?;
    assert_eq!(action, Action::Pause);
    let r = vm.stream(id)?.local_response.clone().expect("answered");
    assert_eq!(r.status, 302);
    let loc = r.header("location").unwrap_or_default();
    assert!(
        loc.starts_with("https://authenticate.example.com/.pomerium/sign_in?pomerium_redirect_uri=https%3A%2F%2Fapp.example.com%2Fx%3Fy%3D1&pomerium_issued="),
        "{loc}"
    );
    let (id, _) = vm.request(
        &get("app.example.com", "/api", &[("accept", "application/json")]),
        &[("xds.route_name", "app")],
    )?;
    let r = vm.stream(id)?.local_response.clone().expect("answered");
    assert_eq!(r.status, 401);
    assert!(r.body_text().contains(r#""error":"unauthenticated""#));
    Ok(())
}

#[test]
fn miss_sidecar_allow_with_identity_headers_and_cookie_stripped_then_cache_hit() -> Result<()> {
    let s = setup()?;
    let mut vm = s.vm("")?;
    let cookie = format!("theme=dark; {}", s.cookie(1)?);
    let (id, action) = vm.request(
        &get(
            "app.example.com",
            "/",
            &[("cookie", &cookie), ("x-pomerium-claim-email", "spoof")],
        ),
        &[("xds.route_name", "app")],
    )?;
    assert_eq!(action, Action::Pause);
    let calls = session_calls(&vm);
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.cluster, CLUSTER);
    assert_eq!(
        c.header("authorization"),
        Some(format!("Bearer {}", fixtures::api_token()?).as_str())
    );
    assert_eq!(
        fixtures::query_param(c.path(), "aud"),
        Some("app.example.com")
    );
    answer_session(&s, &mut vm, c, Some(&bob()))?;

    let st = vm.stream(id)?;
    assert_eq!(st.resumed, 1);
    assert!(st.local_response.is_none());
    assert_eq!(st.header("cookie"), Some("theme=dark"));
    assert_eq!(
        st.header("x-pomerium-jwt-assertion"),
        Some("jwt.app.example.com.sub-bob@example.com")
    );
    assert_eq!(st.header("x-pomerium-claim-email"), Some("bob@example.com"));

    // Cache hit: continue at once, no call.
    let (id, action) = vm.request(
        &get("app.example.com", "/", &[("cookie", &s.cookie(1)?)]),
        &[("xds.route_name", "app")],
    )?;
    assert_eq!(action, Action::Continue);
    assert_eq!(vm.stream(id)?.header("cookie"), None);
    assert!(session_calls(&vm).is_empty());
    Ok(())
}

#[test]
fn route_lookup_without_route_name_uses_the_bundle_and_deny_names_reason_not_claims() -> Result<()>
{
    let s = setup()?;
    let mut vm = s.vm("")?;
    let (id, action) = vm.request(
        &get("admin.example.com", "/", &[("cookie", &s.cookie(2)?)]),
        &[],
    )?;
    assert_eq!(action, Action::Pause);
    let call = session_calls(&vm).remove(0);
    answer_session(&s, &mut vm, &call, Some(&bob()))?;
    let r = vm.stream(id)?.local_response.clone().expect("denied");
    assert_eq!(r.status, 403);
    let body = r.body_text();
    assert!(body.contains("rid-7"), "{body}");
    assert!(
        body.contains("not-allowed") || body.contains("denied"),
        "{body}"
    );
    assert!(
        !body.contains("bob@example.com") && !body.contains("staff"),
        "{body}"
    );

    // Alice is an admin.
    let (id, _) = vm.request(
        &get("admin.example.com", "/", &[("cookie", &s.cookie(3)?)]),
        &[],
    )?;
    let call = session_calls(&vm).remove(0);
    answer_session(&s, &mut vm, &call, Some(&alice()))?;
    assert_eq!(vm.stream(id)?.resumed, 1);
    // admin has no pass_identity_headers: no JWT upstream.
    assert_eq!(vm.stream(id)?.header("x-pomerium-jwt-assertion"), None);

    // An unknown host: 404, never through.
    let (id, _) = vm.request(&get("nope.example.com", "/", &[]), &[])?;
    assert_eq!(
        vm.stream(id)?.local_response.as_ref().map(|r| r.status),
        Some(404)
    );
    Ok(())
}

#[test]
fn concurrent_misses_share_one_call() -> Result<()> {
    let s = setup()?;
    let mut vm = s.vm("")?;
    let c = s.cookie(4)?;
    let ids: Vec<u32> = (0..3)
        .map(|_| {
            vm.request(
                &get("app.example.com", "/", &[("cookie", &c)]),
                &[("xds.route_name", "app")],
            )
            .map(|r| r.0)
        })
        .collect::<Result<_>>()?;
    let calls = session_calls(&vm);
    assert_eq!(calls.len(), 1);
    answer_session(&s, &mut vm, &calls[0], Some(&bob()))?;
    for id in ids {
        assert_eq!(vm.stream(id)?.resumed, 1, "stream {id}");
    }
    Ok(())
}

#[test]
fn unknown_sessions_are_negatively_cached() -> Result<()> {
    let s = setup()?;
    let mut vm = s.vm("")?;
    let c = s.cookie(5)?;
    let (id, _) = vm.request(
        &get("app.example.com", "/", &[("cookie", &c)]),
        &[("xds.route_name", "app")],
    )?;
    let call = session_calls(&vm).remove(0);
    answer_session(&s, &mut vm, &call, None)?;
    assert_eq!(
        vm.stream(id)?.local_response.as_ref().map(|r| r.status),
        Some(302)
    );
    for _ in 0..20 {
        let (id, _) = vm.request(
            &get("app.example.com", "/", &[("cookie", &c)]),
            &[("xds.route_name", "app")],
        )?;
        assert_eq!(
            vm.stream(id)?.local_response.as_ref().map(|r| r.status),
            Some(302)
        );
    }
    assert!(session_calls(&vm).is_empty(), "one lookup for 21 requests");
    Ok(())
}

#[test]
fn garbage_cookies_never_crash_or_reach_the_sidecar() -> Result<()> {
    let s = setup()?;
    let mut vm = s.vm("")?;
    let long = "B".repeat(20_000);
    let garbage = [
        "_pomerium=".to_owned(),
        "_pomerium==;=;;".to_owned(),
        format!("_pomerium={long}"),
        format!("{}Z", s.cookie(6)?),
        "_pomerium=\"unterminated".to_owned(),
        "_pomerium=%00%ff".to_owned(),
    ];
    for g in &garbage {
        let (id, _) = vm.request(
            &get("app.example.com", "/", &[("cookie", g)]),
            &[("xds.route_name", "app")],
        )?;
        assert_eq!(
            vm.stream(id)?.local_response.as_ref().map(|r| r.status),
            Some(302),
            "{g:.40}"
        );
    }
    assert!(
        vm.all_calls()
            .iter()
            .all(|c| !c.path().contains("/session"))
    );
    Ok(())
}

/// Tick once and answer the first change-stream poll (cursor learning) with `version`.
fn start_stream(vm: &mut Vm, version: u64, bundle_version: &str) -> Result<()> {
    vm.tick()?;
    let poll = pending_poll(vm)?;
    // The VM's current bundle rides along, so a bundle change between polls is answered at once.
    assert_eq!(
        poll.path(),
        format!("/.portcullis/v1/changes?since=0&wait_ms=0&bundle={bundle_version}")
    );
    vm.answer(
        poll.token,
        200,
        &[],
        &fixtures::changes_answer(version, &[], &[], bundle_version),
    )?;
    // An early answer without news: the next poll starts on the next tick.
    assert!(pending_poll(vm).is_err());
    vm.advance_ms(500);
    vm.tick()
}

fn pending_poll(vm: &Vm) -> Result<HttpCall> {
    vm.pending_calls()
        .into_iter()
        .find(|c| c.path().starts_with("/.portcullis/v1/changes"))
        .ok_or_else(|| anyhow::anyhow!("no change-stream poll pending"))
}

#[test]
fn change_stream_evicts_on_every_worker_and_shared_data_follows() -> Result<()> {
    let s = setup()?;
    let mut w1 = s.vm("")?;
    let mut w2 = s.vm("")?;
    start_stream(&mut w1, 10, &s.version)?;
    start_stream(&mut w2, 10, &s.version)?;
    let c = s.cookie(7)?;
    let app = [("xds.route_name", "app")];

    // Worker 1 fetches; worker 2 then finds it in shared data without a call.
    w1.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    let call = session_calls(&w1).remove(0);
    answer_session(&s, &mut w1, &call, Some(&bob()))?;
    let (id, action) = w2.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    assert_eq!(action, Action::Continue);
    assert!(w2.stream(id)?.header("x-pomerium-jwt-assertion").is_some());
    assert!(session_calls(&w2).is_empty());

    // The sidecar reports the sign-out on each worker's long poll.
    for w in [&mut w1, &mut w2] {
        let poll = pending_poll(w)?;
        assert_eq!(
            poll.path(),
            format!(
                "/.portcullis/v1/changes?since=10&wait_ms=25000&epoch=fixture-epoch&bundle={}",
                s.version
            )
        );
        w.answer(
            poll.token,
            200,
            &[],
            &fixtures::changes_answer(11, &[], &[&fixtures::session_id(7)], &s.version),
        )?;
    }
    for w in [&mut w1, &mut w2] {
        let (_, action) = w.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
        assert_eq!(action, Action::Pause, "evicted: must ask the sidecar again");
        assert_eq!(session_calls(w).len(), 1);
        assert_eq!(
            pending_poll(w)?.path(),
            format!(
                "/.portcullis/v1/changes?since=11&wait_ms=25000&epoch=fixture-epoch&bundle={}",
                s.version
            )
        );
    }
    Ok(())
}

#[test]
fn new_bundle_is_fetched_and_swapped_and_a_corrupt_one_ignored() -> Result<()> {
    let s = setup()?;
    let mut vm = s.vm("")?;
    start_stream(&mut vm, 1, &s.version)?;
    let c = s.cookie(8)?;
    let app = [("xds.route_name", "app")];
    vm.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    let call = session_calls(&vm).remove(0);
    answer_session(&s, &mut vm, &call, Some(&bob()))?;

    // A corrupt bundle is announced: fetched, refused, the old policy keeps working.
    let poll = pending_poll(&vm)?;
    vm.answer(
        poll.token,
        200,
        &[],
        &fixtures::changes_answer(2, &[], &[], "corrupt-1"),
    )?;
    let fetch = vm
        .pending_calls()
        .into_iter()
        .find(|c| c.path() == "/.portcullis/v1/bundle")
        .expect("bundle fetch");
    vm.answer(
        fetch.token,
        200,
        &[("x-portcullis-bundle-version", "corrupt-1")],
        b"\x0a\xff\xff",
    )?;
    assert!(vm.logged("refused"), "{:?}", vm.logs());
    let (_, action) = vm.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    assert_eq!(action, Action::Continue);

    // A real new bundle that only lets alice into app: bob is now denied.
    let (b2, v2) = fixtures::bundle(&fixtures::config_yaml(Some("alice@example.com")))?;
    assert_ne!(v2, s.version);
    let poll = pending_poll(&vm)?;
    vm.answer(
        poll.token,
        200,
        &[],
        &fixtures::changes_answer(3, &[], &[], &v2),
    )?;
    let fetch = vm
        .pending_calls()
        .into_iter()
        .find(|c| c.path() == "/.portcullis/v1/bundle")
        .expect("bundle fetch");
    vm.answer(
        fetch.token,
        200,
        &[("x-portcullis-bundle-version", &v2)],
        &b2,
    )?;
    let (id, _) = vm.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    assert_eq!(
        vm.stream(id)?.local_response.as_ref().map(|r| r.status),
        Some(403)
    );
    Ok(())
}

#[test]
fn sidecar_down_cached_sessions_work_within_the_bound_unknown_get_503_and_recovery() -> Result<()> {
    let s = setup()?;
    let mut vm = s.vm(r#","staleness_bound_secs":30"#)?;
    let c = s.cookie(9)?;
    let app = [("xds.route_name", "app")];
    vm.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    let call = session_calls(&vm).remove(0);
    answer_session(&s, &mut vm, &call, Some(&bob()))?;

    vm.set_sidecar_unknown(true);
    // Unknown session: 503.
    let (id, _) = vm.request(
        &get("app.example.com", "/", &[("cookie", &s.cookie(10)?)]),
        &app,
    )?;
    let r = vm.stream(id)?.local_response.clone().expect("503");
    assert_eq!(r.status, 503);
    assert!(r.body_text().contains("sidecar-unavailable"));
    // Cached: fine within 30 s...
    s.process.advance_ms(20_000);
    let (_, action) = vm.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    assert_eq!(action, Action::Continue);
    // ...not after.
    s.process.advance_ms(15_000);
    let (id, _) = vm.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    assert_eq!(
        vm.stream(id)?.local_response.as_ref().map(|r| r.status),
        Some(503)
    );

    // A failed call (connection refused / timeout) is a 503 too, then recovery.
    vm.set_sidecar_unknown(false);
    let (id, _) = vm.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    let call = session_calls(&vm).remove(0);
    vm.fail(call.token)?;
    assert_eq!(
        vm.stream(id)?.local_response.as_ref().map(|r| r.status),
        Some(503)
    );
    let (id, _) = vm.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    let call = session_calls(&vm).remove(0);
    answer_session(&s, &mut vm, &call, Some(&bob()))?;
    assert_eq!(vm.stream(id)?.resumed, 1);
    Ok(())
}

#[test]
fn internal_api_paths_are_refused_and_sidecar_routes_pass() -> Result<()> {
    let s = setup()?;
    let mut vm = s.vm("")?;
    let (id, _) = vm.request(
        &get("app.example.com", "/.portcullis/v1/bundle", &[]),
        &[("xds.route_name", "app")],
    )?;
    assert_eq!(
        vm.stream(id)?.local_response.as_ref().map(|r| r.status),
        Some(404)
    );
    // Without a route name (hand-written config), the sidecar's well-known paths pass...
    let (_, action) = vm.request(&get("app.example.com", "/.pomerium/sign_out", &[]), &[])?;
    assert_eq!(action, Action::Continue);
    // ...but when Envoy routed it to an app route, the route's policy applies (Pomerium's
    // implicit rule allows most `/.pomerium/` paths, not `/.pomerium/jwt` without a user).
    let (id, _) = vm.request(
        &get("app.example.com", "/.pomerium/jwt", &[]),
        &[("xds.route_name", "app")],
    )?;
    assert_eq!(
        vm.stream(id)?.local_response.as_ref().map(|r| r.status),
        Some(302)
    );
    let (id, action) = vm.request(
        &get(
            "authenticate.example.com",
            "/oauth2/callback",
            &[("x-pomerium-jwt-assertion", "x")],
        ),
        &[
            ("xds.route_name", "portcullis-sidecar"),
            ("xds.cluster_name", CLUSTER),
        ],
    )?;
    assert_eq!(action, Action::Continue);
    assert_eq!(vm.stream(id)?.header("x-pomerium-jwt-assertion"), None);
    // A route merely named like the sidecar's, sending elsewhere, is refused.
    let (id, _) = vm.request(
        &get("app.example.com", "/anything", &[]),
        &[
            ("xds.route_name", "portcullis-sidecar"),
            ("xds.cluster_name", "some-upstream"),
        ],
    )?;
    assert_eq!(
        vm.stream(id)?.local_response.as_ref().map(|r| r.status),
        Some(403)
    );
    Ok(())
}

#[test]
fn bundle_from_the_sidecar_when_not_inline() -> Result<()> {
    let s = setup()?;
    let mut vm = s.process.vm()?;
    assert!(vm.configure(&fixtures::plugin_config(CLUSTER, None, ""))?);
    let (id, _) = vm.request(
        &get("app.example.com", "/", &[]),
        &[("xds.route_name", "app")],
    )?;
    assert_eq!(
        vm.stream(id)?.local_response.as_ref().map(|r| r.status),
        Some(503)
    );
    vm.tick()?;
    let fetch = vm
        .pending_calls()
        .into_iter()
        .find(|c| c.path() == "/.portcullis/v1/bundle")
        .expect("bundle fetch");
    vm.answer(
        fetch.token,
        200,
        &[("x-portcullis-bundle-version", &s.version)],
        &s.bundle,
    )?;
    let (id, _) = vm.request(
        &get("public.example.com", "/", &[]),
        &[("xds.route_name", "public")],
    )?;
    assert!(vm.stream(id)?.local_response.is_none());
    Ok(())
}

#[test]
fn a_stream_that_ends_while_waiting_is_not_touched() -> Result<()> {
    let s = setup()?;
    let mut vm = s.vm("")?;
    let c = s.cookie(11)?;
    let app = [("xds.route_name", "app")];
    let (a, _) = vm.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    let (b, _) = vm.request(&get("app.example.com", "/", &[("cookie", &c)]), &app)?;
    vm.end_stream(b)?;
    let call = session_calls(&vm).remove(0);
    answer_session(&s, &mut vm, &call, Some(&bob()))?;
    assert_eq!(vm.stream(a)?.resumed, 1);
    assert!(vm.stream(b).is_err());
    assert!(!vm.logged("panic"), "{:?}", vm.logs());
    Ok(())
}
