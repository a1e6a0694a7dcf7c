//! The per-request logic under a fake host and a tiny fake policy (native, fast).

use super::*;
use crate::host::HostError;
use crate::policy::RouteMeta;
use portcullis_common::Secret;
use portcullis_common::api::{Claim, ClaimValue, Header, SessionView, claim_value};
use portcullis_common::cookie::CookieKey;
use std::cell::Cell;

const SECRET: &str = "KDBIqKTq8aJ4OuU07np7qBtT6jX37I2H5DCczzExvP8=";
const SID: &str = "Jx3kR0xu0Gm5P1l7c3V7Zz8yq1a2b3c4d5e6f7g8h9i";
const SID2: &str = "Zz3kR0xu0Gm5P1l7c3V7Zz8yq1a2b3c4d5e6f7g8h9i";
const T0: u64 = 1_800_000_000_000;

// ---- a fake policy: three routes, two bundle versions ------------------------------------

struct FakePolicy {
    version: String,
    lock_app: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum R {
    App,
    Admin,
    Public,
    Partner,
}

impl Policy for FakePolicy {
    type Route = R;
    type Subject = String;

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes {
            b"v1" => Ok(FakePolicy {
                version: "v1".into(),
                lock_app: false,
            }),
            b"v2" => Ok(FakePolicy {
                version: "v2".into(),
                lock_app: true,
            }),
            _ => Err("corrupt bundle".into()),
        }
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn cookie_name(&self) -> &str {
        "_pomerium"
    }
    fn authenticate_service_url(&self) -> &str {
        "https://authenticate.example.com"
    }
    fn claim_header_names(&self) -> Vec<String> {
        vec!["x-email".into()]
    }
    fn route_by_id(&self, id: &str) -> Option<R> {
        match id {
            "app" => Some(R::App),
            "admin" => Some(R::Admin),
            "public" => Some(R::Public),
            "partner" => Some(R::Partner),
            _ => None,
        }
    }
    fn find_route(&self, authority: &str, _path: &str) -> Option<R> {
        match authority {
            "app.example.com" => Some(R::App),
            "admin.example.com" => Some(R::Admin),
            "public.example.com" => Some(R::Public),
            "partner.example.com" => Some(R::Partner),
            _ => None,
        }
    }
    fn route_meta(&self, r: R) -> RouteMeta<'_> {
        RouteMeta {
            public: r == R::Public,
            pass_identity_headers: r == R::App,
            uses_identity: r != R::Public,
            idp_client_id: if r == R::Partner {
                "partner-client"
            } else {
                ""
            },
        }
    }
    fn subject(&self, view: &SessionView) -> String {
        view.email.clone()
    }
    fn evaluate(&self, r: R, _req: &EvalRequest<'_>, s: Option<&String>) -> Verdict {
        match (r, s) {
            (R::Public, _) => Verdict::Allow,
            (_, None) => Verdict::Login,
            (R::App, Some(_)) if self.lock_app => Verdict::Deny("policy-denied"),
            (R::App | R::Partner, Some(_)) => Verdict::Allow,
            (R::Admin, Some(e)) if e.ends_with("@admin.example") => Verdict::Allow,
            (R::Admin, Some(_)) => Verdict::Deny("not-allowed"),
        }
    }
}

// ---- a fake host that records what the filter asks -------------------------------------

type Pairs = Vec<(String, String)>;

#[derive(Default)]
struct FakeHost {
    now: u64,
    current: u32,
    streams: HashMap<u32, Vec<HeaderPair>>,
    route_name: Option<String>,
    cluster_name: Option<String>,
    responses: Vec<(u32, u32, Pairs, String)>,
    resumed: Vec<u32>,
    dispatched: Vec<(u32, String, Pairs)>,
    next_token: u32,
    dispatch_fails: bool,
    call_headers: Vec<HeaderPair>,
    call_body: Vec<u8>,
    shared: HashMap<String, (Vec<u8>, u32)>,
}

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn request_headers(&self) -> Vec<HeaderPair> {
        self.streams.get(&self.current).cloned().unwrap_or_default()
    }
    fn route_name(&self) -> Option<String> {
        self.route_name.clone()
    }
    fn cluster_name(&self) -> Option<String> {
        self.cluster_name.clone()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let hs = self.streams.entry(self.current).or_default();
        hs.retain(|(k, _)| k != name);
        if let Some(v) = value {
            hs.push((name.into(), v.into()));
        }
    }
    fn send_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.responses.push((
            self.current,
            status,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            String::from_utf8_lossy(body).into_owned(),
        ));
    }
    fn resume_request(&mut self) {
        self.resumed.push(self.current);
    }
    fn set_effective_context(&mut self, id: u32) -> bool {
        self.current = id;
        self.streams.contains_key(&id)
    }
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        _t: u64,
    ) -> Result<u32, HostError> {
        if self.dispatch_fails {
            return Err(HostError);
        }
        self.next_token += 1;
        self.dispatched.push((
            self.next_token,
            cluster.into(),
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        Ok(self.next_token)
    }
    fn call_response_headers(&self) -> Vec<HeaderPair> {
        self.call_headers.clone()
    }
    fn call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        self.call_body.get(..size).map(<[u8]>::to_vec)
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.shared.get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        let cur = self.shared.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != cur {
            return Err(HostError);
        }
        self.shared
            .insert(key.into(), (value.to_vec(), cur.unwrap_or(0) + 1));
        Ok(())
    }
}

fn config(extra: &str) -> Config {
    Config::parse(
        format!(
            r#"{{"sidecar_cluster":"sidecar","shared_secret":"{SECRET}","cookie_secret":"{SECRET}","bundle":"djE="{extra}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn worker(extra: &str) -> Worker<FakePolicy> {
    Worker::new(config(extra)).unwrap()
}

fn cookie_for(sid: &str) -> String {
    let key = CookieKey::new(&Secret::from_base64(SECRET).unwrap());
    let v = cookie::seal(&key, "_pomerium", sid, T0 / 1000 + 3600, [7; 24]).unwrap();
    format!("_pomerium={v}")
}

fn request(host: &str, extra: &[(&str, &str)]) -> Vec<HeaderPair> {
    let mut h = vec![
        (":authority".to_string(), host.to_string()),
        (":path".into(), "/page?x=1".into()),
        (":method".into(), "GET".into()),
        (":scheme".into(), "https".into()),
        ("x-request-id".into(), "req-42".into()),
    ];
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}

/// Start a stream `ctx` with `headers` and run the filter on it.
fn run(w: &mut Worker<FakePolicy>, h: &mut FakeHost, ctx: u32, headers: Vec<HeaderPair>) -> Flow {
    h.streams.insert(ctx, headers.clone());
    h.current = ctx;
    w.on_request_headers(h, ctx, &headers, Mode::Fresh)
}

fn header<'a>(h: &'a FakeHost, ctx: u32, name: &str) -> Option<&'a str> {
    h.streams[&ctx]
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn session_answer(email: &str, found: bool) -> Vec<u8> {
    session_answer_client(email, found, "")
}

fn session_answer_client(email: &str, found: bool, client_id: &str) -> Vec<u8> {
    SessionResponse {
        found,
        view: found.then(|| SessionView {
            session_id: SID.into(),
            user_id: "user-1".into(),
            email: email.into(),
            claims: vec![Claim {
                key: "groups".into(),
                values: vec![ClaimValue {
                    kind: Some(claim_value::Kind::Str("staff".into())),
                }],
            }],
            issued_at: 0,
            expires_at: i64::try_from(T0 / 1000).unwrap() + 7200,
            version: 5,
            claim_headers: vec![Header {
                name: "x-email".into(),
                value: email.into(),
            }],
            client_id: client_id.into(),
        }),
        identity_jwt: "header.payload.sig".into(),
        jwt_expires_at: i64::try_from(T0 / 1000).unwrap() + 300,
    }
    .encode_to_vec()
}

/// Deliver an answer for `token` (status + body) as Envoy would.
fn answer(w: &mut Worker<FakePolicy>, h: &mut FakeHost, token: u32, status: u32, body: Vec<u8>) {
    h.call_headers = vec![(":status".into(), status.to_string())];
    h.call_body = body;
    let n = h.call_body.len();
    w.on_call_response(h, token, n);
}

fn fake_host() -> FakeHost {
    FakeHost {
        now: T0,
        ..Default::default()
    }
}

// ---- tests ------------------------------------------------------------------------------

#[test]
fn public_route_passes_but_identity_headers_are_always_stripped() {
    let mut w = worker("");
    let mut h = fake_host();
    let flow = run(
        &mut w,
        &mut h,
        1,
        request(
            "public.example.com",
            &[
                ("x-pomerium-jwt-assertion", "forged"),
                ("x-pomerium-claim-email", "ceo@corp"),
                ("x-email", "ceo@corp"),
                ("x-keep", "1"),
            ],
        ),
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(header(&h, 1, "x-pomerium-jwt-assertion"), None);
    assert_eq!(header(&h, 1, "x-pomerium-claim-email"), None);
    assert_eq!(header(&h, 1, "x-email"), None);
    assert_eq!(header(&h, 1, "x-keep"), Some("1"));
    assert!(h.dispatched.is_empty());
}

#[test]
fn no_cookie_navigation_redirects_with_a_signed_url_and_api_calls_get_401_json() {
    let mut w = worker("");
    let mut h = fake_host();
    assert_eq!(
        run(&mut w, &mut h, 1, request("app.example.com", &[])),
        Flow::Responded
    );
    let (_, status, headers, _) = &h.responses[0];
    assert_eq!(*status, 302);
    let loc = &headers.iter().find(|(k, _)| k == "location").unwrap().1;
    let back = "https://app.example.com/page?x=1";
    let key = RedirectKey::new(&Secret::from_base64(SECRET).unwrap());
    assert_eq!(
        *loc,
        signed_url::sign_in_url(&key, "https://authenticate.example.com", back, T0 / 1000)
    );

    run(
        &mut w,
        &mut h,
        2,
        request("app.example.com", &[("accept", "application/json")]),
    );
    let (_, status, _, body) = &h.responses[1];
    assert_eq!(*status, 401);
    assert!(body.starts_with(r#"{"error":"unauthenticated","sign_in_url":"https://authenticate.example.com/.pomerium/sign_in?"#), "{body}");
}

use portcullis_common::signed_url::RedirectKey;

#[test]
fn miss_asks_the_sidecar_then_allows_with_identity_headers_and_strips_only_our_cookie() {
    let mut w = worker("");
    let mut h = fake_host();
    let cookie = format!("theme=dark; {}; lang=en", cookie_for(SID));
    let flow = run(
        &mut w,
        &mut h,
        1,
        request("app.example.com", &[("cookie", &cookie)]),
    );
    assert_eq!(flow, Flow::Pause);
    let (token, cluster, call) = h.dispatched[0].clone();
    assert_eq!(cluster, "sidecar");
    let get = |n: &str| {
        call.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(
        get(":path"),
        format!("/.portcullis/v1/session?id={SID}&aud=app.example.com")
    );
    let token_expected = portcullis_common::api::api_token(&Secret::from_base64(SECRET).unwrap());
    assert_eq!(get("authorization"), format!("Bearer {token_expected}"));

    answer(
        &mut w,
        &mut h,
        token,
        200,
        session_answer("ann@corp.example", true),
    );
    assert_eq!(h.resumed, vec![1]);
    assert_eq!(header(&h, 1, "cookie"), Some("theme=dark; lang=en"));
    assert_eq!(
        header(&h, 1, "x-pomerium-jwt-assertion"),
        Some("header.payload.sig")
    );
    assert_eq!(header(&h, 1, "x-email"), Some("ann@corp.example"));

    // Second request: a cache hit, no call.
    let flow = run(
        &mut w,
        &mut h,
        2,
        request("app.example.com", &[("cookie", &cookie_for(SID))]),
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(h.dispatched.len(), 1);
    assert_eq!(
        header(&h, 2, "cookie"),
        None,
        "header dropped when only our cookie was in it"
    );
}

#[test]
fn concurrent_misses_share_one_call_and_all_resume() {
    let mut w = worker("");
    let mut h = fake_host();
    let c = cookie_for(SID);
    for ctx in 1..=3 {
        assert_eq!(
            run(
                &mut w,
                &mut h,
                ctx,
                request("app.example.com", &[("cookie", &c)])
            ),
            Flow::Pause
        );
    }
    assert_eq!(h.dispatched.len(), 1);
    let token = h.dispatched[0].0;
    answer(
        &mut w,
        &mut h,
        token,
        200,
        session_answer("ann@corp.example", true),
    );
    let mut resumed = h.resumed.clone();
    resumed.sort();
    assert_eq!(resumed, vec![1, 2, 3]);
    for ctx in 1..=3 {
        assert_eq!(
            header(&h, ctx, "x-pomerium-jwt-assertion"),
            Some("header.payload.sig")
        );
    }
}

#[test]
fn a_stream_that_went_away_is_not_resumed() {
    let mut w = worker("");
    let mut h = fake_host();
    let c = cookie_for(SID);
    run(
        &mut w,
        &mut h,
        1,
        request("app.example.com", &[("cookie", &c)]),
    );
    run(
        &mut w,
        &mut h,
        2,
        request("app.example.com", &[("cookie", &c)]),
    );
    w.forget_context(2);
    let token = h.dispatched[0].0;
    answer(
        &mut w,
        &mut h,
        token,
        200,
        session_answer("ann@corp.example", true),
    );
    assert_eq!(h.resumed, vec![1]);
}

#[test]
fn unknown_session_is_negatively_cached_and_means_sign_in() {
    let mut w = worker("");
    let mut h = fake_host();
    let c = cookie_for(SID);
    run(
        &mut w,
        &mut h,
        1,
        request("app.example.com", &[("cookie", &c)]),
    );
    {
        let t = h.dispatched[0].0;
        answer(&mut w, &mut h, t, 200, session_answer("", false));
    }
    assert_eq!(h.responses[0].1, 302);
    // Again within the TTL: no call.
    assert_eq!(
        run(
            &mut w,
            &mut h,
            2,
            request("app.example.com", &[("cookie", &c)])
        ),
        Flow::Responded
    );
    assert_eq!(h.dispatched.len(), 1);
    // After the TTL (10 s default) it asks again.
    h.now += 10_001;
    assert_eq!(
        run(
            &mut w,
            &mut h,
            3,
            request("app.example.com", &[("cookie", &c)])
        ),
        Flow::Pause
    );
    assert_eq!(h.dispatched.len(), 2);
}

#[test]
fn deny_is_403_with_request_id_and_reason_but_no_claim_values() {
    let mut w = worker("");
    let mut h = fake_host();
    let c = cookie_for(SID);
    run(
        &mut w,
        &mut h,
        1,
        request("admin.example.com", &[("cookie", &c)]),
    );
    {
        let t = h.dispatched[0].0;
        answer(
            &mut w,
            &mut h,
            t,
            200,
            session_answer("ann@corp.example", true),
        );
    }
    let (ctx, status, _, body) = &h.responses[0];
    assert_eq!((*ctx, *status), (1, 403));
    assert!(
        body.contains("req-42") && body.contains("not-allowed"),
        "{body}"
    );
    assert!(!body.contains("ann@corp.example") && !body.contains("staff"));
    assert!(h.resumed.is_empty());

    run(
        &mut w,
        &mut h,
        2,
        request(
            "admin.example.com",
            &[("cookie", &c), ("accept", "application/json")],
        ),
    );
    assert_eq!(
        h.responses[1].3,
        r#"{"error":"access_denied","reason":"not-allowed","request_id":"req-42"}"#
    );
}

#[test]
fn garbage_cookies_are_just_unauthenticated() {
    let mut w = worker("");
    let mut h = fake_host();
    let garbage = [
        "_pomerium=".to_string(),
        "_pomerium=!!!!".into(),
        format!("_pomerium={}", "A".repeat(10_000)),
        format!("{}x", cookie_for(SID)),
        "_pomerium".into(),
        ";;;=;=".into(),
        "_pomerium=\u{0}\u{ff}".into(),
    ];
    for (i, g) in garbage.iter().enumerate() {
        let ctx = u32::try_from(i).unwrap() + 1;
        assert_eq!(
            run(
                &mut w,
                &mut h,
                ctx,
                request("app.example.com", &[("cookie", g)])
            ),
            Flow::Responded
        );
        assert_eq!(h.responses.last().unwrap().1, 302);
    }
    assert!(
        h.dispatched.is_empty(),
        "forged cookies never reach the sidecar"
    );
}

#[test]
fn a_planted_cookie_cannot_shadow_the_real_one() {
    let mut w = worker("");
    let mut h = fake_host();
    let c = format!("_pomerium=planted; {}", cookie_for(SID));
    assert_eq!(
        run(
            &mut w,
            &mut h,
            1,
            request("app.example.com", &[("cookie", &c)])
        ),
        Flow::Pause
    );
}

#[test]
fn non_normal_paths_are_refused_before_any_exemption() {
    // Without a route name `/.pomerium/…` passes untouched: a dot segment must not turn a
    // protected path into one (the upstream would resolve it to `/secret`).
    for (i, p) in [
        "/.pomerium/../secret",
        "/.well-known/pomerium/../secret",
        "/.pomerium/%2e%2e/secret",
        "/public//../admin",
        "/a%2Fb",
    ]
    .into_iter()
    .enumerate()
    {
        let mut w = worker("");
        let mut h = fake_host();
        let mut r = request("app.example.com", &[]);
        r[1].1 = p.into();
        let id = u32::try_from(i).unwrap() + 1;
        assert_eq!(run(&mut w, &mut h, id, r), Flow::Responded, "{p}");
        assert_eq!(h.responses[0].1, 400, "{p}");
    }
    // Normal paths with odd-looking queries are untouched by the check.
    let mut w = worker("");
    let mut h = fake_host();
    let mut r = request("app.example.com", &[]);
    r[1].1 = "/.pomerium/callback?x=/../..//%2e".into();
    assert_eq!(run(&mut w, &mut h, 1, r), Flow::Continue);
}

#[test]
fn internal_api_is_not_reachable_and_sidecar_paths_pass() {
    let mut w = worker("");
    let mut h = fake_host();
    let mut r = request("app.example.com", &[("x-pomerium-claim-x", "1")]);
    r[1].1 = "/.portcullis/v1/session?id=x".into();
    assert_eq!(run(&mut w, &mut h, 1, r), Flow::Responded);
    assert_eq!(h.responses[0].1, 404);

    let mut r = request("app.example.com", &[("x-pomerium-claim-x", "1")]);
    r[1].1 = "/.pomerium/callback?code=1".into();
    assert_eq!(run(&mut w, &mut h, 2, r), Flow::Continue);
    assert_eq!(header(&h, 2, "x-pomerium-claim-x"), None);
    assert_eq!(
        run(
            &mut w,
            &mut h,
            3,
            request("authenticate.example.com:443", &[])
        ),
        Flow::Continue
    );
    h.route_name = Some("portcullis-sidecar".into());
    h.cluster_name = Some(w.cfg.sidecar_cluster.clone());
    assert_eq!(
        run(&mut w, &mut h, 4, request("anything", &[])),
        Flow::Continue
    );
    // Named as the sidecar's route but sending elsewhere: refused, never passed.
    h.cluster_name = Some("some-upstream".into());
    assert_eq!(
        run(&mut w, &mut h, 5, request("anything", &[])),
        Flow::Responded
    );
    assert_eq!(h.responses.last().map(|r| r.1), Some(403));
}

#[test]
fn route_name_wins_and_an_unknown_route_is_refused() {
    let mut w = worker("");
    let mut h = fake_host();
    h.route_name = Some("public".into());
    assert_eq!(
        run(&mut w, &mut h, 1, request("app.example.com", &[])),
        Flow::Continue
    );
    h.route_name = Some("nope".into());
    assert_eq!(
        run(&mut w, &mut h, 2, request("app.example.com", &[])),
        Flow::Responded
    );
    assert_eq!(h.responses[0].1, 403);
    h.route_name = None;
    assert_eq!(
        run(&mut w, &mut h, 3, request("unknown.example.com", &[])),
        Flow::Responded
    );
    assert_eq!(h.responses[1].1, 404);
}

/// Fill the cache of `w` with SID through one miss.
fn warm(w: &mut Worker<FakePolicy>, h: &mut FakeHost) {
    let c = cookie_for(SID);
    run(w, h, 100, request("app.example.com", &[("cookie", &c)]));
    let token = h.dispatched.last().unwrap().0;
    answer(w, h, token, 200, session_answer("ann@corp.example", true));
    assert_eq!(w.cached_sessions(), 1);
}

#[test]
fn change_stream_evicts_sessions_here_and_in_shared_data() {
    let mut w = worker("");
    let mut h = fake_host();
    warm(&mut w, &mut h);
    assert!(h.shared.contains_key(&format!("portcullis/session/{SID}")));
    w.on_tick(&mut h);
    let (token, _, call) = h.dispatched.last().unwrap().clone();
    assert!(
        call.iter().any(
            |(k, v)| k == ":path" && v == "/.portcullis/v1/changes?since=0&wait_ms=0&bundle=v1"
        )
    );
    let changes = ChangesResponse {
        version: 9,
        deleted: vec![SID.into()],
        bundle_version: "v1".into(),
        ..Default::default()
    };
    answer(&mut w, &mut h, token, 200, changes.encode_to_vec());
    assert_eq!(w.cached_sessions(), 0);
    // The next poll is already out, with the cursor.
    let (_, _, call) = h.dispatched.last().unwrap().clone();
    assert!(call.iter().any(
        |(k, v)| k == ":path" && v == "/.portcullis/v1/changes?since=9&wait_ms=25000&bundle=v1"
    ));
    // A second worker sees the tombstone in shared data, not the old session.
    let mut w2 = worker("");
    let calls = h.dispatched.len();
    assert_eq!(
        run(
            &mut w2,
            &mut h,
            7,
            request("app.example.com", &[("cookie", &cookie_for(SID))])
        ),
        Flow::Pause
    );
    assert_eq!(h.dispatched.len(), calls + 1);
}

#[test]
fn other_workers_reuse_shared_data_without_calling_the_sidecar() {
    let mut w = worker("");
    let mut h = fake_host();
    warm(&mut w, &mut h);
    let mut w2 = worker("");
    let calls = h.dispatched.len();
    assert_eq!(
        run(
            &mut w2,
            &mut h,
            8,
            request("app.example.com", &[("cookie", &cookie_for(SID))])
        ),
        Flow::Continue
    );
    assert_eq!(h.dispatched.len(), calls);
    assert_eq!(
        header(&h, 8, "x-pomerium-jwt-assertion"),
        Some("header.payload.sig")
    );
}

#[test]
fn an_answer_that_predates_a_change_is_not_cached_and_the_request_asks_again() {
    let mut w = worker("");
    let mut h = fake_host();
    let c = cookie_for(SID);
    run(
        &mut w,
        &mut h,
        1,
        request("app.example.com", &[("cookie", &c)]),
    );
    let session_token = h.dispatched[0].0;
    w.on_tick(&mut h);
    let changes_token = h.dispatched[1].0;
    h.now += 5;
    let changes = ChangesResponse {
        version: 3,
        changed: vec![SID.into()],
        ..Default::default()
    };
    answer(&mut w, &mut h, changes_token, 200, changes.encode_to_vec());
    answer(
        &mut w,
        &mut h,
        session_token,
        200,
        session_answer("ann@corp.example", true),
    );
    assert_eq!(w.cached_sessions(), 0);
    assert!(h.resumed.is_empty());
    let last = h.dispatched.last().unwrap();
    assert!(
        last.2
            .iter()
            .any(|(k, v)| k == ":path" && v.starts_with("/.portcullis/v1/session"))
    );
}

#[test]
fn new_bundle_is_swapped_and_a_corrupt_one_is_ignored() {
    let mut w = worker("");
    let mut h = fake_host();
    warm(&mut w, &mut h);
    w.on_tick(&mut h);
    let t = h.dispatched.last().unwrap().0;
    let changes = ChangesResponse {
        version: 1,
        bundle_version: "v2".into(),
        ..Default::default()
    };
    answer(&mut w, &mut h, t, 200, changes.encode_to_vec());
    // Two calls went out: the bundle fetch, then the next poll.
    let bundle_call = h
        .dispatched
        .iter()
        .rev()
        .find(|d| {
            d.2.iter()
                .any(|(k, v)| k == ":path" && v == "/.portcullis/v1/bundle")
        })
        .unwrap()
        .0;
    answer(&mut w, &mut h, bundle_call, 200, b"garbage".to_vec());
    assert_eq!(
        w.bundle_version(),
        Some("v1"),
        "corrupt bundle never replaces a good one"
    );
    assert_eq!(
        run(
            &mut w,
            &mut h,
            1,
            request("app.example.com", &[("cookie", &cookie_for(SID))])
        ),
        Flow::Continue
    );

    // The same bad version is not refetched at once; a new version is.
    let poll = h.dispatched.last().unwrap().0;
    let n = h.dispatched.len();
    answer(
        &mut w,
        &mut h,
        poll,
        200,
        ChangesResponse {
            version: 2,
            bundle_version: "v2".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert_eq!(h.dispatched.len(), n + 1, "only the next poll");
    let poll = h.dispatched.last().unwrap().0;
    answer(
        &mut w,
        &mut h,
        poll,
        200,
        ChangesResponse {
            version: 3,
            bundle_version: "v2b".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let bundle_call = h
        .dispatched
        .iter()
        .rev()
        .find(|d| {
            d.2.iter()
                .any(|(k, v)| k == ":path" && v == "/.portcullis/v1/bundle")
        })
        .unwrap()
        .0;
    answer(&mut w, &mut h, bundle_call, 200, b"v2".to_vec());
    assert_eq!(w.bundle_version(), Some("v2"));
    assert_eq!(
        run(
            &mut w,
            &mut h,
            2,
            request("app.example.com", &[("cookie", &cookie_for(SID))])
        ),
        Flow::Responded
    );
    assert_eq!(h.responses.last().unwrap().1, 403);
}

#[test]
fn sidecar_down_cached_sessions_work_until_the_staleness_bound_unknown_get_503() {
    let mut w = worker(r#","staleness_bound_secs":60"#);
    let mut h = fake_host();
    warm(&mut w, &mut h);
    h.dispatch_fails = true;
    // Unknown session: 503.
    let c2 = cookie_for(SID2);
    assert_eq!(
        run(
            &mut w,
            &mut h,
            1,
            request("app.example.com", &[("cookie", &c2)])
        ),
        Flow::Responded
    );
    assert_eq!(h.responses[0].1, 503);
    assert!(h.responses[0].3.contains("sidecar-unavailable"));
    // Cached: still allowed (JWT renewal aside) within the bound...
    h.now += 50_000;
    let mut r = request("admin.example.com", &[("cookie", &cookie_for(SID))]);
    r[0].1 = "app.example.com".into();
    assert_eq!(run(&mut w, &mut h, 2, r.clone()), Flow::Continue);
    // ...and not after it.
    h.now += 11_000;
    assert_eq!(run(&mut w, &mut h, 3, r.clone()), Flow::Responded);
    assert_eq!(h.responses.last().unwrap().1, 503);
    // Recovery without restart.
    h.dispatch_fails = false;
    assert_eq!(run(&mut w, &mut h, 4, r), Flow::Pause);
    let t = h.dispatched.last().unwrap().0;
    answer(
        &mut w,
        &mut h,
        t,
        200,
        session_answer("ann@corp.example", true),
    );
    assert_eq!(h.resumed.last(), Some(&4));
}

#[test]
fn failed_lookup_answers_503_and_a_lost_callback_times_out() {
    let mut w = worker("");
    let mut h = fake_host();
    let c = cookie_for(SID);
    run(
        &mut w,
        &mut h,
        1,
        request("app.example.com", &[("cookie", &c)]),
    );
    {
        let t = h.dispatched[0].0;
        answer(&mut w, &mut h, t, 500, vec![]);
    }
    assert_eq!(h.responses[0].1, 503);

    run(
        &mut w,
        &mut h,
        2,
        request("app.example.com", &[("cookie", &c)]),
    );
    h.now += 10_000;
    w.on_tick(&mut h);
    assert_eq!(h.responses.last().unwrap().0, 2);
    assert_eq!(h.responses.last().unwrap().1, 503);
}

#[test]
fn no_bundle_yet_means_503_then_fetch_on_tick() {
    let cfg = Config::parse(
        format!(r#"{{"sidecar_cluster":"sidecar","shared_secret":"{SECRET}","cookie_secret":"{SECRET}"}}"#).as_bytes(),
    )
    .unwrap();
    let mut w: Worker<FakePolicy> = Worker::new(cfg).unwrap();
    let mut h = fake_host();
    assert_eq!(
        run(&mut w, &mut h, 1, request("app.example.com", &[])),
        Flow::Responded
    );
    assert_eq!(h.responses[0].1, 503);
    w.on_tick(&mut h);
    let bundle = h
        .dispatched
        .iter()
        .find(|d| {
            d.2.iter()
                .any(|(k, v)| k == ":path" && v == "/.portcullis/v1/bundle")
        })
        .unwrap()
        .0;
    answer(&mut w, &mut h, bundle, 200, b"v1".to_vec());
    assert_eq!(w.bundle_version(), Some("v1"));
}

#[test]
fn corrupt_inline_bundle_is_a_configuration_error() {
    let cfg = Config::parse(
        format!(r#"{{"sidecar_cluster":"s","shared_secret":"{SECRET}","cookie_secret":"{SECRET}","bundle":"eHh4"}}"#).as_bytes(),
    )
    .unwrap();
    let e = Worker::<FakePolicy>::new(cfg).err().unwrap();
    assert!(e.contains("`bundle`"), "{e}");
}

#[test]
fn reset_drops_everything_and_bumps_the_shared_generation() {
    let mut w = worker("");
    let mut h = fake_host();
    warm(&mut w, &mut h);
    w.on_tick(&mut h);
    let t = h.dispatched.last().unwrap().0;
    answer(
        &mut w,
        &mut h,
        t,
        200,
        ChangesResponse {
            version: 1,
            reset: true,
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert_eq!(w.cached_sessions(), 0);
    // The shared entry of the old generation is ignored by a fresh worker.
    let mut w2 = worker("");
    let n = h.dispatched.len();
    assert_eq!(
        run(
            &mut w2,
            &mut h,
            9,
            request("app.example.com", &[("cookie", &cookie_for(SID))])
        ),
        Flow::Pause
    );
    assert_eq!(h.dispatched.len(), n + 1);
}

// ---- allocation count on a cache hit ------------------------------------------------------

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

struct CountingAlloc;

#[expect(
    unsafe_code,
    reason = "a counting global allocator for the cache-hit test"
)]
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// A host whose own operations never allocate, so the count is the filter's alone.
struct QuietHost {
    now: u64,
    set: usize,
}

impl Host for QuietHost {
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn request_headers(&self) -> Vec<HeaderPair> {
        Vec::new()
    }
    fn route_name(&self) -> Option<String> {
        None
    }
    fn cluster_name(&self) -> Option<String> {
        None
    }
    fn set_request_header(&mut self, _: &str, _: Option<&str>) {
        self.set += 1;
    }
    fn send_response(&mut self, _: u32, _: &[(&str, &str)], _: &[u8]) {
        panic!("a cache hit never answers locally");
    }
    fn resume_request(&mut self) {}
    fn set_effective_context(&mut self, _: u32) -> bool {
        true
    }
    fn dispatch(&mut self, _: &str, _: &[(&str, &str)], _: u64) -> Result<u32, HostError> {
        panic!("a cache hit never calls the sidecar");
    }
    fn call_response_headers(&self) -> Vec<HeaderPair> {
        Vec::new()
    }
    fn call_response_body(&self, _: usize) -> Option<Vec<u8>> {
        None
    }
    fn shared_get(&self, _: &str) -> (Option<Vec<u8>>, Option<u32>) {
        panic!("a cache hit never reads shared data");
    }
    fn shared_set(&mut self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), HostError> {
        panic!("a cache hit never writes shared data");
    }
}

#[test]
fn a_cache_hit_allocates_only_the_rewritten_cookie_header() {
    let mut w = worker("");
    let mut h = fake_host();
    warm(&mut w, &mut h);
    let with_other_cookie = request(
        "app.example.com",
        &[
            ("cookie", &format!("a=1; {}", cookie_for(SID))),
            ("x-pomerium-claim-x", "spoof"),
        ],
    );
    let only_ours = request("app.example.com", &[("cookie", &cookie_for(SID))]);
    let mut q = QuietHost {
        now: T0 + 1,
        set: 0,
    };
    for (headers, max) in [(&only_ours, 0), (&with_other_cookie, 1)] {
        // Warm-up run, then count a second one.
        assert_eq!(
            w.on_request_headers(&mut q, 1, headers, Mode::Fresh),
            Flow::Continue
        );
        let before = ALLOCS.with(Cell::get);
        assert_eq!(
            w.on_request_headers(&mut q, 1, headers, Mode::Fresh),
            Flow::Continue
        );
        let n = ALLOCS.with(Cell::get) - before;
        assert!(n <= max, "cache hit made {n} allocations (max {max})");
    }
    // Cookie rewrite, JWT, claim header, stripped spoof — all host calls, no copies.
    assert!(q.set >= 3);
}

#[test]
fn when_the_calling_stream_goes_away_the_root_asks_again_for_the_others() {
    let mut w = worker("");
    let mut h = fake_host();
    let c = cookie_for(SID);
    run(
        &mut w,
        &mut h,
        1,
        request("app.example.com", &[("cookie", &c)]),
    );
    run(
        &mut w,
        &mut h,
        2,
        request("app.example.com", &[("cookie", &c)]),
    );
    let first = h.dispatched[0].0;
    w.forget_context(1);
    h.streams.remove(&1);
    w.on_tick(&mut h);
    let again = h
        .dispatched
        .iter()
        .rev()
        .find(|d| {
            d.2.iter()
                .any(|(k, v)| k == ":path" && v.starts_with("/.portcullis/v1/session"))
        })
        .unwrap()
        .0;
    assert_ne!(again, first);
    // A late answer to the abandoned call is ignored; the new one resumes stream 2.
    answer(
        &mut w,
        &mut h,
        first,
        200,
        session_answer("ann@corp.example", true),
    );
    assert!(h.resumed.is_empty());
    answer(
        &mut w,
        &mut h,
        again,
        200,
        session_answer("ann@corp.example", true),
    );
    assert_eq!(h.resumed, vec![2]);
}

#[test]
fn a_lookup_nobody_waits_for_is_dropped() {
    let mut w = worker("");
    let mut h = fake_host();
    run(
        &mut w,
        &mut h,
        1,
        request("app.example.com", &[("cookie", &cookie_for(SID))]),
    );
    w.forget_context(1);
    assert!(w.pending.is_empty());
    let n = h.dispatched.len();
    w.on_tick(&mut h);
    assert!(h.dispatched[n..].iter().all(|d| {
        !d.2.iter()
            .any(|(_, v)| v.starts_with("/.portcullis/v1/session"))
    }));
}

#[test]
fn empty_early_answers_do_not_make_the_stream_spin() {
    let mut w = worker("");
    let mut h = fake_host();
    w.on_tick(&mut h);
    let polls = |h: &FakeHost| {
        h.dispatched
            .iter()
            .filter(|d| {
                d.2.iter()
                    .any(|(k, v)| k == ":path" && v.starts_with("/.portcullis/v1/changes"))
            })
            .count()
    };
    // A sidecar answering at once with nothing new (cursor 0): no immediate re-poll...
    let t = h.dispatched.last().unwrap().0;
    answer(
        &mut w,
        &mut h,
        t,
        200,
        ChangesResponse {
            version: 0,
            bundle_version: "v1".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert_eq!(polls(&h), 1);
    // ...the next tick polls again.
    h.now += 500;
    w.on_tick(&mut h);
    assert_eq!(polls(&h), 2);
    // News is followed at once.
    let t = h.dispatched.last().unwrap().0;
    answer(
        &mut w,
        &mut h,
        t,
        200,
        ChangesResponse {
            version: 4,
            deleted: vec![SID.into()],
            bundle_version: "v1".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert_eq!(polls(&h), 3);
    // A full long poll with no news is followed at once too.
    h.now += 25_000;
    let t = h.dispatched.last().unwrap().0;
    answer(
        &mut w,
        &mut h,
        t,
        200,
        ChangesResponse {
            version: 4,
            bundle_version: "v1".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert_eq!(polls(&h), 4);
}

#[test]
fn sidecar_down_when_the_jwt_needs_renewal_keeps_the_session_working() {
    let mut w = worker(r#","staleness_bound_secs":600"#);
    let mut h = fake_host();
    warm(&mut w, &mut h); // JWT valid for 300 s
    h.now += 280_000; // within the 30 s renewal margin, still valid
    h.dispatch_fails = true;
    let r = request("app.example.com", &[("cookie", &cookie_for(SID))]);
    assert_eq!(run(&mut w, &mut h, 1, r.clone()), Flow::Continue);
    assert_eq!(
        header(&h, 1, "x-pomerium-jwt-assertion"),
        Some("header.payload.sig")
    );
    h.now += 30_000; // expired: allowed, but no stale JWT forwarded
    assert_eq!(run(&mut w, &mut h, 2, r), Flow::Continue);
    assert_eq!(header(&h, 2, "x-pomerium-jwt-assertion"), None);
}

#[test]
fn a_session_of_another_oauth_client_is_no_session_on_that_route() {
    let mut w = worker("");
    let mut h = fake_host();
    warm(&mut w, &mut h); // client ""
    let r = request("partner.example.com", &[("cookie", &cookie_for(SID))]);
    assert_eq!(run(&mut w, &mut h, 1, r.clone()), Flow::Responded);
    assert_eq!(h.responses.last().unwrap().1, 302);
    // The same session, created through the route's client, is accepted.
    let mut w = worker("");
    let mut h = fake_host();
    run(&mut w, &mut h, 2, r.clone());
    let t = h.dispatched.last().unwrap().0;
    answer(
        &mut w,
        &mut h,
        t,
        200,
        session_answer_client("ann@corp.example", true, "partner-client"),
    );
    assert_eq!(h.resumed, vec![2]);
}

#[test]
fn public_routes_skip_the_session_unless_needed_and_never_503() {
    let mut w = worker("");
    let mut h = fake_host();
    h.dispatch_fails = true;
    let r = request(
        "public.example.com",
        &[("cookie", &format!("a=1; {}", cookie_for(SID)))],
    );
    assert_eq!(run(&mut w, &mut h, 1, r), Flow::Continue);
    assert!(h.dispatched.is_empty());
    assert_eq!(
        header(&h, 1, "cookie"),
        Some("a=1"),
        "our cookie never goes upstream"
    );
}

#[test]
fn a_new_epoch_drops_everything_like_a_reset() {
    let mut w = worker("");
    let mut h = fake_host();
    warm(&mut w, &mut h);
    w.on_tick(&mut h);
    let t = h.dispatched.last().unwrap().0;
    let first = ChangesResponse {
        version: 7,
        epoch: "e1".into(),
        bundle_version: "v1".into(),
        ..Default::default()
    };
    answer(&mut w, &mut h, t, 200, first.encode_to_vec());
    assert_eq!(w.cached_sessions(), 1);
    h.now += 500;
    w.on_tick(&mut h);
    let (t, _, call) = h.dispatched.last().unwrap().clone();
    assert!(call.iter().any(|(k, v)| k == ":path"
        && v == "/.portcullis/v1/changes?since=7&wait_ms=25000&epoch=e1&bundle=v1"));
    let restarted = ChangesResponse {
        version: 9,
        epoch: "e2".into(),
        bundle_version: "v1".into(),
        ..Default::default()
    };
    answer(&mut w, &mut h, t, 200, restarted.encode_to_vec());
    assert_eq!(w.cached_sessions(), 0);
}
