//! Issue 7, scenario "Scale", inside the VM: the real `filter.wasm` with generated bundles of
//! N routes (`policy_compiler::testing`), for the `wasm_scale` criterion bench; the filter's
//! memory per cached session; and the report section `make bench` prints
//! (`bench/src/scale.rs` re-exports [`collect`] and [`Section`]).
//!
//! Sessions here are realistic in size: the sidecar's answer carries an identity JWT shaped
//! like the real sidecar's (ES256, Pomerium's claims) and a few claims, not the 40-byte
//! placeholder of the functional fixtures, because the JWT is most of a cached session.

use crate::fixtures;
use crate::{Action, Process, Vm};
use anyhow::{Context as _, Result, anyhow, bail, ensure};
use base64::Engine as _;
use policy_compiler::testing::{self, Probe};
use portcullis_common::api::{
    Claim, ClaimValue, Header, SessionResponse, SessionView, claim_value,
};
use prost::Message as _;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The route counts of the scenario.
pub const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// Session counts of the memory measurement.
pub const SESSION_COUNTS: [usize; 3] = [0, 1_000, 10_000];
/// The filter's default `session_cache_size` (`filter/src/config.rs`,
/// `DEFAULT_SESSION_CACHE_SIZE`): the per-worker bound, evicting expired then oldest.
pub const FILTER_SESSION_CACHE_SIZE: usize = 10_000;
/// The filter's default `negative_cache_size` (unknown session ids, per worker).
pub const FILTER_NEGATIVE_CACHE_SIZE: usize = 4_096;

const CLUSTER: &str = "portcullis-sidecar";

/// The no-op proxy-wasm module of `make bench` (`bench/noop-filter`): `$BENCH_NOOP_WASM`,
/// else the workspace's release build. On this host it measures the host's own cost per
/// request (stream bookkeeping, header copies, five wasm calls) — the floor under every
/// `wasm_scale` figure.
pub fn noop_wasm_path() -> std::path::PathBuf {
    match std::env::var_os("BENCH_NOOP_WASM") {
        Some(p) => p.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/wasm32-wasip1/release/portcullis_bench_noop.wasm"),
    }
}

/// Criterion id of the floor (`wasm_scale_floor/noop`).
pub const FLOOR_ID: &str = "wasm_scale_floor/noop";

/// Request headers of one probe (what Envoy would hand the filter).
pub fn headers<'a>(authority: &'a str, path: &'a str, cookie: &'a str) -> [(&'a str, &'a str); 6] {
    [
        (":authority", authority),
        (":path", path),
        (":method", "GET"),
        (":scheme", "https"),
        ("x-request-id", "rid-scale"),
        ("cookie", cookie),
    ]
}

/// A signed-in user allowed on every generated probe route (domain `example.com`, groups
/// `admins` and `team-0`).
pub fn user(n: usize) -> (String, String) {
    (format!("user-{n:06}"), format!("user{n}@example.com"))
}

/// base64url without padding.
fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT shaped like the sidecar's identity JWT (`sidecar/src/jwt.rs`: ES256, `kid`, the
/// claims Pomerium puts in): same length class, not a valid signature (the filter forwards
/// it and never verifies it).
pub fn identity_jwt(sid: &str, user_id: &str, email: &str, aud: &str, now_s: i64) -> String {
    let header = br#"{"alg":"ES256","kid":"3b1f0c9e4d2a7b65","typ":"JWT"}"#;
    let payload = serde_json::json!({
        "aud": aud,
        "email": email,
        "exp": now_s + 300,
        "groups": ["admins", "staff", "team-0"],
        "iat": now_s,
        "iss": "authenticate.example.com",
        "jti": "5f1d3c0a-8e8b-4b4e-9c55-2f6d8a1b7c3e",
        "name": "Scale Test User",
        "sid": sid,
        "sub": user_id,
        "user": user_id,
    });
    let payload = serde_json::to_vec(&payload).unwrap_or_default();
    format!(
        "{}.{}.{}",
        b64url(header),
        b64url(&payload),
        b64url(&[0x5a; 64])
    )
}

/// The sidecar's answer for session `sid` of user number `n`, for audience `aud`.
pub fn session_answer(sid: &str, n: usize, aud: &str, now_s: i64) -> Vec<u8> {
    let (user_id, email) = user(n);
    let s = |v: &str| ClaimValue {
        kind: Some(claim_value::Kind::Str(v.to_owned())),
    };
    SessionResponse {
        found: true,
        view: Some(SessionView {
            session_id: sid.to_owned(),
            user_id: user_id.clone(),
            email: email.clone(),
            claims: vec![
                Claim {
                    key: "email".into(),
                    values: vec![s(&email)],
                },
                Claim {
                    key: "groups".into(),
                    values: vec![s("admins"), s("staff"), s("team-0")],
                },
                Claim {
                    key: "name".into(),
                    values: vec![s("Scale Test User")],
                },
            ],
            issued_at: now_s,
            expires_at: now_s + 3600,
            version: 1,
            claim_headers: vec![Header {
                name: "x-pomerium-claim-email".into(),
                value: email.clone(),
            }],
            client_id: String::new(),
        }),
        identity_jwt: identity_jwt(sid, &user_id, &email, aud, now_s),
        jwt_expires_at: now_s + 300,
    }
    .encode_to_vec()
}

/// A VM of `process` configured with the generated `n`-route bundle inline. Returns the VM
/// and the bundle's size in bytes.
pub fn configured_vm(process: &Process, n: usize) -> Result<(Vm, usize)> {
    let (bundle, _) = fixtures::bundle(&testing::config(n))?;
    let mut vm = process.vm()?;
    let cfg = fixtures::plugin_config(CLUSTER, Some(&bundle), "");
    if !vm.configure(&cfg)? {
        bail!("on_configure refused the {n}-route bundle: {:?}", vm.logs());
    }
    Ok((vm, bundle.len()))
}

/// Sends one request and ends its stream; answers the session lookup it makes, if any,
/// with session number `n`. Returns whether the filter had to ask the sidecar, and the
/// status of its local response (None = passed upstream).
pub fn request_answering(
    vm: &mut Vm,
    process: &Process,
    headers: &[(&str, &str)],
    properties: &[(&str, &str)],
    n: usize,
) -> Result<(bool, Option<u32>)> {
    let before = vm.call_count();
    let (id, _) = vm.request(headers, properties)?;
    let calls: Vec<_> = vm
        .calls_since(before)
        .into_iter()
        .filter(|c| c.path().starts_with("/.portcullis/v1/session"))
        .collect();
    let asked = !calls.is_empty();
    for c in calls {
        let sid = fixtures::query_param(c.path(), "id").unwrap_or_default();
        let aud = fixtures::query_param(c.path(), "aud").unwrap_or_default();
        let now = i64::try_from(process.now_ms() / 1000)?;
        let body = session_answer(sid, n, aud, now);
        vm.answer(c.token, 200, &[], &body)?;
    }
    let st = vm.stream(id)?;
    let status = st.local_response.as_ref().map(|r| r.status);
    if status.is_none() && st.resumed == 0 && asked {
        bail!("stream {id} neither resumed nor answered after the session lookup");
    }
    vm.end_stream(id)?;
    Ok((asked, status))
}

/// One probe, ready to be sent again and again by the `wasm_scale` bench.
pub struct Prepared {
    /// The probe.
    pub probe: Probe,
    /// Its cookie header (session 0).
    pub cookie: String,
    /// What the filter answers: `None` = continue upstream.
    pub status: Option<u32>,
}

/// A VM with the `n`-route bundle and session 0 cached for every probe's host; each probe
/// checked: a hit continues upstream without a sidecar call, `missing` is refused (403 with
/// a route name, 404 without).
pub fn prepare(process: &Process, n: usize) -> Result<(Vm, Vec<Prepared>)> {
    let (mut vm, _) = configured_vm(process, n)?;
    let cookie = fixtures::cookie_header(&fixtures::session_id(0), process.now_ms() / 1000)?;
    let mut out = Vec::new();
    for probe in testing::probes(n) {
        let h = headers(&probe.authority, &probe.path, &cookie);
        let named = [("xds.route_name", probe.route_id.as_str())];
        // First request: the miss (session or this audience's JWT).
        request_answering(&mut vm, process, &h, &named, 0)?;
        let mut status = None;
        for props in [&named[..], &[]] {
            let (asked, st) = request_answering(&mut vm, process, &h, props, 0)?;
            ensure!(!asked, "{} ({n} routes): not a cache hit", probe.name);
            let want = match (probe.name, props.is_empty()) {
                ("missing", false) => Some(403),
                ("missing", true) => Some(404),
                _ => None,
            };
            ensure!(
                st == want,
                "{} ({n} routes, named={}): got {st:?}, want {want:?}",
                probe.name,
                !props.is_empty()
            );
            status = st;
        }
        out.push(Prepared {
            probe,
            cookie: cookie.clone(),
            status,
        });
    }
    Ok((vm, out))
}

/// Sends one prepared probe (a cache hit, or a refused `missing`) and ends its stream: the
/// work of one iteration of the `wasm_scale` bench. `named` = Envoy gives the route name.
pub fn send(vm: &mut Vm, p: &Prepared, named: bool) -> Result<Action> {
    let h = headers(&p.probe.authority, &p.probe.path, &p.cookie);
    let props = [("xds.route_name", p.probe.route_id.as_str())];
    let (id, action) = vm.request(&h, if named { &props[..] } else { &[] })?;
    vm.end_stream(id)?;
    Ok(action)
}

// ---- interleaved growth ----------------------------------------------------------------

/// One (mode, probe) row of [`Interleaved`].
#[derive(Clone, Debug, PartialEq)]
pub struct GrowthRow {
    /// `named` (Envoy names the route) or `unnamed` (`find_route` in the VM).
    pub mode: String,
    /// `early`, `late` or `missing`.
    pub probe: String,
    /// Median over rounds of the time per request, ns, for each of [`SIZES`].
    pub per_request_ns: Vec<(usize, f64)>,
    /// Per round: time at 10 000 routes ÷ time at 10; (median, min, max) over rounds.
    pub ratio: (f64, f64, f64),
    /// The same per-round ratio after subtracting that round's no-op floor from both
    /// (median over rounds); `None` without a floor.
    pub net_ratio: Option<f64>,
}

/// Growth measured in interleaved rounds: each round times every route count (and the
/// no-op floor) back to back, in an order rotated each round, so that a burst of load from
/// other processes hits one round rather than one route count; ratios are taken per round.
#[derive(Clone, Debug, PartialEq)]
pub struct Interleaved {
    /// Rounds.
    pub rounds: usize,
    /// Requests timed per route count per round.
    pub requests: usize,
    /// Median over rounds of the no-op module's time per request, ns.
    pub floor_ns: Option<f64>,
    /// One row per (mode, probe).
    pub rows: Vec<GrowthRow>,
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs.get(n / 2).copied().unwrap_or(f64::NAN),
        n => {
            (xs.get(n / 2 - 1).copied().unwrap_or(f64::NAN)
                + xs.get(n / 2).copied().unwrap_or(f64::NAN))
                / 2.0
        }
    }
}

/// Times `requests` sends of `p`, ns per request.
fn time_sends(vm: &mut Vm, p: &Prepared, named: bool, requests: usize) -> Result<f64> {
    let start = std::time::Instant::now();
    for _ in 0..requests {
        std::hint::black_box(send(vm, p, named)?);
    }
    Ok(start.elapsed().as_nanos() as f64 / requests.max(1) as f64)
}

/// Runs the interleaved measurement on VMs made by [`prepare`] (one per [`SIZES`] entry, in
/// that order) and an optional floor (a configured no-op VM and its request headers).
pub fn interleaved_growth(
    vms: &mut [(usize, Vm, Vec<Prepared>)],
    mut floor: Option<(&mut Vm, &Prepared)>,
    rounds: usize,
    requests: usize,
) -> Result<Interleaved> {
    ensure!(vms.len() >= 2, "need at least two route counts");
    let mut rows = Vec::new();
    let mut floors = Vec::new();
    for (mode, named) in [("named", true), ("unnamed", false)] {
        for pi in 0..PROBES.len() {
            // times[round][size index]
            let mut times: Vec<Vec<f64>> = Vec::new();
            let mut round_floor = Vec::new();
            for round in 0..rounds {
                let mut t = vec![0.0; vms.len()];
                let slots = vms.len() + usize::from(floor.is_some());
                for k in 0..slots {
                    let slot = (k + round) % slots;
                    if let Some((n, vm, probes)) = vms.get_mut(slot) {
                        let p = probes
                            .get(pi)
                            .ok_or_else(|| anyhow!("{n} routes: no probe {pi}"))?;
                        if let Some(x) = t.get_mut(slot) {
                            *x = time_sends(vm, p, named, requests)?;
                        }
                    } else if let Some((fvm, fp)) = floor.as_mut() {
                        round_floor.push(time_sends(fvm, fp, true, requests)?);
                    }
                }
                times.push(t);
            }
            let col =
                |i: usize| -> Vec<f64> { times.iter().filter_map(|t| t.get(i).copied()).collect() };
            let per_request_ns = vms
                .iter()
                .enumerate()
                .map(|(i, (n, _, _))| (*n, median(&mut col(i))))
                .collect();
            let last = vms.len() - 1;
            let mut ratios: Vec<f64> = times
                .iter()
                .filter_map(|t| Some(t.get(last)? / t.first()?))
                .collect();
            let net_ratio = (!round_floor.is_empty()).then(|| {
                let mut net: Vec<f64> = times
                    .iter()
                    .zip(&round_floor)
                    .filter_map(|(t, f)| Some((t.get(last)? - f) / (t.first()? - f)))
                    .collect();
                median(&mut net)
            });
            floors.extend(round_floor);
            let m = median(&mut ratios);
            let min = ratios.first().copied().unwrap_or(f64::NAN);
            let max = ratios.last().copied().unwrap_or(f64::NAN);
            rows.push(GrowthRow {
                mode: mode.to_owned(),
                probe: PROBES.get(pi).copied().unwrap_or("?").to_owned(),
                per_request_ns,
                ratio: (m, min, max),
                net_ratio,
            });
        }
    }
    Ok(Interleaved {
        rounds,
        requests,
        floor_ns: (!floors.is_empty()).then(|| median(&mut floors)),
        rows,
    })
}

impl Interleaved {
    /// As JSON (what the bench writes for the report).
    pub fn to_json(&self) -> String {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "mode": r.mode,
                    "probe": r.probe,
                    "per_request_ns": r.per_request_ns,
                    "ratio": [r.ratio.0, r.ratio.1, r.ratio.2],
                    "net_ratio": r.net_ratio,
                })
            })
            .collect();
        serde_json::json!({
            "rounds": self.rounds,
            "requests": self.requests,
            "floor_ns": self.floor_ns,
            "rows": rows,
        })
        .to_string()
    }

    /// Parses [`Interleaved::to_json`]'s output.
    pub fn from_json(text: &str) -> Result<Interleaved> {
        let v: serde_json::Value = serde_json::from_str(text)?;
        let num = |v: &serde_json::Value, what: &str| -> Result<f64> {
            v.as_f64()
                .ok_or_else(|| anyhow!("`{what}` is not a number"))
        };
        let count = |what: &str| -> Result<usize> {
            usize::try_from(
                v.get(what)
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| anyhow!("no `{what}`"))?,
            )
            .map_err(|e| anyhow!("{what}: {e}"))
        };
        let mut rows = Vec::new();
        for r in v
            .get("rows")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| anyhow!("no `rows`"))?
        {
            let text = |k: &str| -> Result<String> {
                r.get(k)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("no `{k}`"))
            };
            let ratio = r
                .get("ratio")
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| anyhow!("no `ratio`"))?;
            let [a, b, c] = ratio.as_slice() else {
                bail!("`ratio` is not [median, min, max]");
            };
            let mut per = Vec::new();
            for pair in r
                .get("per_request_ns")
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| anyhow!("no `per_request_ns`"))?
            {
                let [n, t] = pair.as_array().map(Vec::as_slice).unwrap_or(&[]) else {
                    bail!("`per_request_ns` entries are [routes, ns]");
                };
                let n = n.as_u64().ok_or_else(|| anyhow!("routes is not a count"))?;
                per.push((usize::try_from(n)?, num(t, "per_request_ns")?));
            }
            rows.push(GrowthRow {
                mode: text("mode")?,
                probe: text("probe")?,
                per_request_ns: per,
                ratio: (num(a, "ratio")?, num(b, "ratio")?, num(c, "ratio")?),
                net_ratio: r.get("net_ratio").and_then(serde_json::Value::as_f64),
            });
        }
        Ok(Interleaved {
            rounds: count("rounds")?,
            requests: count("requests")?,
            floor_ns: v.get("floor_ns").and_then(serde_json::Value::as_f64),
            rows,
        })
    }
}

/// Where the `wasm_scale` bench writes its interleaved measurement under the target dir.
pub const INTERLEAVED_FILE: &str = "scale/wasm_interleaved.json";
/// Where the native `scale` bench (`policy-compiler/benches/scale.rs`) writes its own, in
/// the same format (modes `route_by_id`, `find_route`, `find_route_evaluate`; no floor).
pub const NATIVE_INTERLEAVED_FILE: &str = "scale/native_interleaved.json";

// ---- memory --------------------------------------------------------------------------

/// The filter's memory with `sessions` sessions cached in one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPoint {
    /// Sessions cached.
    pub sessions: usize,
    /// The VM's linear memory (the heap's high-water mark: wasm memory never shrinks).
    pub linear_memory_bytes: usize,
    /// Envoy shared data the filter wrote (keys + values; Envoy's own overhead excluded):
    /// per process, not per worker.
    pub shared_data_bytes: usize,
}

/// Memory figures of the scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memory {
    /// Per session count ([`SESSION_COUNTS`]), one VM with the 10-route bundle.
    pub sessions: Vec<MemoryPoint>,
    /// (routes, bundle bytes, linear memory of a fresh VM configured with it).
    pub bundles: Vec<(usize, usize, usize)>,
    /// Size of the module measured.
    pub wasm_bytes: usize,
}

fn shared_bytes(process: &Process) -> usize {
    let shared = process.shared();
    shared
        .keys()
        .iter()
        .map(|k| k.len() + shared.get(k).map_or(0, <[u8]>::len))
        .sum()
}

/// Measures the filter at `wasm`: one VM fills its session cache with
/// [`SESSION_COUNTS`] sessions (each a miss the fake sidecar answers, then cached), reading
/// the linear memory at each count; then checks every session is still a cache hit. Plus a
/// fresh VM per bundle size of [`SIZES`].
pub fn measure_memory(wasm: &Path) -> Result<Memory> {
    let wasm_bytes = std::fs::metadata(wasm)
        .with_context(|| format!("{} (run `make wasm`)", wasm.display()))?
        .len();
    let process = Process::load(wasm)?;
    let (mut vm, _) = configured_vm(&process, 10)?;
    let probe = testing::probes(10)
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no probe"))?;
    let named = [("xds.route_name", probe.route_id.as_str())];
    let now_s = process.now_ms() / 1000;
    let cookie = |n: usize| -> Result<String> {
        fixtures::cookie_header(&fixtures::session_id(u32::try_from(n)?), now_s)
    };
    // One refused request first (no session), so that one-off allocations of the request
    // path (header buffers and the like) are not charged to the sessions.
    let missing = testing::probes(10)
        .into_iter()
        .last()
        .ok_or_else(|| anyhow!("no probe"))?;
    request_answering(
        &mut vm,
        &process,
        &headers(&missing.authority, &missing.path, ""),
        &[],
        0,
    )?;
    let mut points = Vec::new();
    let mut cached = 0usize;
    for &target in &SESSION_COUNTS {
        while cached < target {
            let c = cookie(cached)?;
            let (asked, status) = request_answering(
                &mut vm,
                &process,
                &headers(&probe.authority, &probe.path, &c),
                &named,
                cached,
            )?;
            ensure!(
                asked && status.is_none(),
                "session {cached}: asked={asked} status={status:?}"
            );
            cached += 1;
        }
        points.push(MemoryPoint {
            sessions: target,
            linear_memory_bytes: vm.memory_bytes()?,
            shared_data_bytes: shared_bytes(&process),
        });
    }
    // Honesty check: the sessions are really in the worker cache (a sample, and the last).
    for n in (0..cached).step_by(97).chain([cached.saturating_sub(1)]) {
        let (asked, status) = request_answering(
            &mut vm,
            &process,
            &headers(&probe.authority, &probe.path, &cookie(n)?),
            &named,
            n,
        )?;
        ensure!(
            !asked && status.is_none(),
            "session {n} was not a cache hit"
        );
    }
    let mut bundles = Vec::new();
    for n in SIZES {
        let (mut vm, bundle_bytes) = configured_vm(&process, n)?;
        bundles.push((n, bundle_bytes, vm.memory_bytes()?));
    }
    Ok(Memory {
        sessions: points,
        bundles,
        wasm_bytes: usize::try_from(wasm_bytes)?,
    })
}

// ---- criterion results ----------------------------------------------------------------

/// Criterion's medians (ns) under `criterion_dir` (`target/criterion`), by full id
/// (`group/function/parameter`, as criterion prints it). Reads each `new/benchmark.json`
/// (the id) and the `new/estimates.json` beside it (`median.point_estimate`).
pub fn criterion_medians(criterion_dir: &Path) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![criterion_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.file_name().is_some_and(|n| n == "new") {
                let (Ok(b), Ok(est)) = (
                    std::fs::read_to_string(p.join("benchmark.json")),
                    std::fs::read_to_string(p.join("estimates.json")),
                ) else {
                    continue;
                };
                let id = parse_full_id(&b).with_context(|| p.display().to_string())?;
                let median = parse_median(&est).with_context(|| p.display().to_string())?;
                out.insert(id, median);
            } else if p.file_name().is_none_or(|n| n != "base" && n != "report") {
                stack.push(p);
            }
        }
    }
    Ok(out)
}

/// `full_id` of a criterion `benchmark.json`.
pub fn parse_full_id(benchmark_json: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(benchmark_json)?;
    v.get("full_id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no full_id"))
}

/// `median.point_estimate` (ns) of a criterion `estimates.json`.
pub fn parse_median(estimates_json: &str) -> Result<f64> {
    let v: serde_json::Value = serde_json::from_str(estimates_json)?;
    let m = v
        .get("median")
        .and_then(|m| m.get("point_estimate"))
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| anyhow!("no median.point_estimate"))?;
    ensure!(m.is_finite() && m >= 0.0, "median {m} is not a duration");
    Ok(m)
}

// ---- the report section ---------------------------------------------------------------

/// Native criterion groups (`policy-compiler/benches/scale.rs`): (group, label).
pub const NATIVE_GROUPS: [(&str, &str); 3] = [
    ("scale_route_by_id", "route_by_id"),
    ("scale_find_route", "find_route"),
    ("scale_find_route_evaluate", "find_route + evaluate"),
];
/// Wasm criterion groups (`tests/wasm-host/benches/wasm_scale.rs`): (group, label).
pub const WASM_GROUPS: [(&str, &str); 2] = [
    ("wasm_scale_named", "request, route named by Envoy"),
    ("wasm_scale_unnamed", "request, find_route in the VM"),
];
/// Probes of [`policy_compiler::testing::probes`].
pub const PROBES: [&str; 3] = ["early", "late", "missing"];
/// Growth goal: cost at 10 000 routes ÷ cost at 10.
pub const GROWTH_GOAL: f64 = 2.0;
/// Native evaluation goal on the seed config, ns.
pub const SEED_EVAL_GOAL_NS: f64 = 1_000.0;

/// Everything the scale scenario measured.
#[derive(Clone, Debug, Default)]
pub struct Section {
    /// Criterion medians (ns) by full id.
    pub medians: BTreeMap<String, f64>,
    /// Memory figures, or why they are missing.
    pub memory: Option<Memory>,
    /// Why `memory` is `None`.
    pub memory_error: Option<String>,
    /// The wasm bench's interleaved growth measurement, if it ran.
    pub interleaved: Option<Interleaved>,
    /// The native bench's interleaved growth measurement, if it ran.
    pub native_interleaved: Option<Interleaved>,
}

/// A duration in ns, human-scaled.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 10.0 * 1024.0 {
        format!("{:.0} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

impl Section {
    /// A median, ns.
    pub fn median(&self, id: &str) -> Option<f64> {
        self.medians.get(id).copied()
    }

    /// Median of `group/probe/n`.
    pub fn at(&self, group: &str, probe: &str, n: usize) -> Option<f64> {
        self.median(&format!("{group}/{probe}/{n}"))
    }

    /// Cost at 10 000 routes ÷ cost at 10, for one group and probe.
    pub fn growth(&self, group: &str, probe: &str) -> Option<f64> {
        let (first, last) = (SIZES.first()?, SIZES.last()?);
        Some(self.at(group, probe, *last)? / self.at(group, probe, *first)?)
    }

    /// Like [`Section::growth`] after subtracting the host's floor ([`FLOOR_ID`]) from both
    /// figures: the growth of the filter's own work. `None` without a floor, or when the
    /// floor is not below both figures (then the subtraction means nothing).
    pub fn net_growth(&self, group: &str, probe: &str) -> Option<f64> {
        let floor = self.median(FLOOR_ID)?;
        let (first, last) = (SIZES.first()?, SIZES.last()?);
        let a = self.at(group, probe, *first)? - floor;
        let b = self.at(group, probe, *last)? - floor;
        (a > 0.0 && b > 0.0).then_some(b / a)
    }

    /// The largest growth over `groups` and every probe, with where it was; `None` when
    /// any of them was not measured (a partial figure would flatter).
    pub fn worst_growth(&self, groups: &[&str]) -> Option<(f64, String)> {
        self.worst_by(groups, Section::growth)
    }

    fn worst_by(
        &self,
        groups: &[&str],
        f: impl Fn(&Section, &str, &str) -> Option<f64>,
    ) -> Option<(f64, String)> {
        let mut worst: Option<(f64, String)> = None;
        for g in groups {
            for p in PROBES {
                let r = f(self, g, p)?;
                if worst.as_ref().is_none_or(|(w, _)| r > *w) {
                    worst = Some((r, format!("{g}/{p}")));
                }
            }
        }
        worst
    }

    /// Bytes of worker memory per cached session: linear-memory growth from the first to
    /// the last session count, divided by the sessions added.
    pub fn bytes_per_session(&self) -> Option<f64> {
        let m = self.memory.as_ref()?;
        let (a, b) = (m.sessions.first()?, m.sessions.last()?);
        let n = b.sessions.checked_sub(a.sessions).filter(|&n| n > 0)?;
        Some((b.linear_memory_bytes as f64 - a.linear_memory_bytes as f64) / n as f64)
    }

    /// Envoy shared-data bytes per session (keys + values).
    pub fn shared_bytes_per_session(&self) -> Option<f64> {
        let m = self.memory.as_ref()?;
        let (a, b) = (m.sessions.first()?, m.sessions.last()?);
        let n = b.sessions.checked_sub(a.sessions).filter(|&n| n > 0)?;
        Some((b.shared_data_bytes as f64 - a.shared_data_bytes as f64) / n as f64)
    }

    /// Headline rows: (what, value, goal, met).
    pub fn headline(&self) -> Vec<(String, String, String, Option<bool>)> {
        let mut rows = Vec::new();
        let not = || "not measured".to_owned();
        // Prefer interleaved rounds (ratios per round, robust to load bursts from other
        // processes) over ratios of criterion medians measured minutes apart.
        let worst_in = |i: Option<&Interleaved>,
                        modes: &[&str],
                        f: &dyn Fn(&GrowthRow) -> Option<f64>|
         -> Option<(f64, String)> {
            let mut w: Option<(f64, String)> = None;
            let mut any = false;
            for r in i?.rows.iter().filter(|r| modes.contains(&r.mode.as_str())) {
                any = true;
                let x = f(r)?;
                if w.as_ref().is_none_or(|(y, _)| x > *y) {
                    w = Some((x, format!("{}/{}", r.mode, r.probe)));
                }
            }
            w.filter(|_| any)
        };
        let pick = |what: &str, inter: Option<(f64, String)>, crit: Option<(f64, String)>| {
            let (w, how) = match inter {
                Some(w) => (Some(w), "median of per-round ratios"),
                None => (crit, "ratio of criterion medians"),
            };
            match w {
                Some((r, at)) => (
                    what.to_owned(),
                    format!("{r:.2}× (worst: {at}; {how})"),
                    format!("< {GROWTH_GOAL}×"),
                    Some(r < GROWTH_GOAL),
                ),
                None => (what.to_owned(), not(), format!("< {GROWTH_GOAL}×"), None),
            }
        };
        let ratio = |r: &GrowthRow| Some(r.ratio.0);
        let native = self.native_interleaved.as_ref();
        rows.push(pick(
            "Route lookup, 10 → 10 000 routes (native; route_by_id and find_route, early/late/missing)",
            worst_in(native, &["route_by_id", "find_route"], &ratio),
            self.worst_growth(&["scale_route_by_id", "scale_find_route"]),
        ));
        rows.push(pick(
            "Lookup + evaluation, 10 → 10 000 routes (native)",
            worst_in(native, &["find_route_evaluate"], &ratio),
            self.worst_growth(&["scale_find_route_evaluate"]),
        ));
        let wasm = ["wasm_scale_named", "wasm_scale_unnamed"];
        let vm = self.interleaved.as_ref();
        rows.push(pick(
            "Whole request in filter.wasm, 10 → 10 000 routes (wasmtime; named and find_route)",
            worst_in(vm, &["named", "unnamed"], &ratio),
            self.worst_growth(&wasm),
        ));
        // The same without the host's floor: the filter's own work, the stricter figure.
        rows.push(pick(
            "Filter's own work per request (whole request − no-op floor), 10 → 10 000 routes",
            worst_in(vm, &["named", "unnamed"], &|r: &GrowthRow| r.net_ratio),
            self.worst_by(&wasm, Section::net_growth),
        ));
        rows.push(match self.median("scale_seed_evaluate/admin-allow") {
            Some(ns) => (
                "Policy evaluation, seed config `admin` route (native)".to_owned(),
                fmt_ns(ns),
                "< 1 µs".to_owned(),
                Some(ns < SEED_EVAL_GOAL_NS),
            ),
            None => (
                "Policy evaluation, seed config `admin` route (native)".to_owned(),
                not(),
                "< 1 µs".to_owned(),
                None,
            ),
        });
        rows.push((
            "Compile a 10 000-route config (YAML → Engine)".to_owned(),
            self.median("scale_compile/10000").map_or_else(not, fmt_ns),
            "—".to_owned(),
            None,
        ));
        let per = self.bytes_per_session();
        rows.push((
            "Filter memory per cached session (one worker)".to_owned(),
            match (per, self.shared_bytes_per_session()) {
                (Some(p), Some(s)) => {
                    format!("{p:.0} B (+ {s:.0} B Envoy shared data per process)")
                }
                _ => not(),
            },
            "—".to_owned(),
            None,
        ));
        rows.push((
            format!("Session cache bound per worker ({FILTER_SESSION_CACHE_SIZE} sessions)"),
            per.map_or_else(not, |p| {
                format!("≈ {}", fmt_bytes(p * FILTER_SESSION_CACHE_SIZE as f64))
            }),
            "bounded".to_owned(),
            None,
        ));
        rows
    }

    /// The Markdown section for the report.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Scale\n");
        let _ = writeln!(s, "| what | value | goal | met |\n|---|---|---|---|");
        for (what, value, goal, met) in self.headline() {
            let met = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            let _ = writeln!(s, "| {what} | {value} | {goal} | {met} |");
        }
        let cell = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), fmt_ns);
        let table = |s: &mut String, title: &str, groups: &[(&str, &str)]| {
            let _ = writeln!(
                s,
                "\n{title} (criterion medians)\n\n| bench | probe | 10 routes | 1 000 | 10 000 | × 10→10 000 |\n|---|---|---:|---:|---:|---:|"
            );
            for (g, label) in groups {
                for p in PROBES {
                    let cells: Vec<String> =
                        SIZES.iter().map(|&n| cell(self.at(g, p, n))).collect();
                    let growth = self
                        .growth(g, p)
                        .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
                    let _ = writeln!(s, "| {label} | {p} | {} | {growth} |", cells.join(" | "));
                }
            }
        };
        table(
            &mut s,
            "Native (`policy-compiler/benches/scale.rs`)",
            &NATIVE_GROUPS,
        );
        table(
            &mut s,
            "In `filter.wasm` on wasmtime, one whole request incl. the host's own bookkeeping (`tests/wasm-host/benches/wasm_scale.rs`)",
            &WASM_GROUPS,
        );
        let _ = writeln!(
            s,
            "\nHost floor (the no-op module, same request, same host): {}.",
            self.median(FLOOR_ID)
                .map_or_else(|| "not measured".to_owned(), fmt_ns)
        );
        let inter = |s: &mut String, title: &str, i: &Interleaved| {
            let _ = writeln!(
                s,
                "\n{title}, interleaved: {} rounds × {} per route count, order rotated each round{}\n\n| mode | probe | 10 routes | 1 000 | 10 000 | × 10→10 000 per round: median (min–max) | × net of floor |\n|---|---|---:|---:|---:|---:|---:|",
                i.rounds,
                i.requests,
                i.floor_ns.map_or_else(String::new, |f| format!(
                    "; no-op floor {} per request",
                    fmt_ns(f)
                ))
            );
            for r in &i.rows {
                let cells: Vec<String> = r.per_request_ns.iter().map(|(_, t)| fmt_ns(*t)).collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.2}× ({:.2}–{:.2}) | {} |",
                    r.mode,
                    r.probe,
                    cells.join(" | "),
                    r.ratio.0,
                    r.ratio.1,
                    r.ratio.2,
                    r.net_ratio
                        .map_or_else(|| "—".to_owned(), |x| format!("{x:.2}×"))
                );
            }
        };
        if let Some(i) = &self.native_interleaved {
            inter(&mut s, "Native", i);
        }
        if let Some(i) = &self.interleaved {
            inter(&mut s, "In `filter.wasm` (whole request)", i);
        }
        match (&self.memory, &self.memory_error) {
            (Some(m), _) => {
                let _ = writeln!(
                    s,
                    "\nFilter memory (`filter.wasm` {} bytes, one worker VM, 10-route bundle; linear memory = heap high-water mark)\n\n| sessions cached | linear memory | Envoy shared data |\n|---:|---:|---:|",
                    m.wasm_bytes
                );
                for p in &m.sessions {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} |",
                        p.sessions,
                        fmt_bytes(p.linear_memory_bytes as f64),
                        fmt_bytes(p.shared_data_bytes as f64)
                    );
                }
                let _ = writeln!(
                    s,
                    "\n| routes | bundle | linear memory of a configured VM |\n|---:|---:|---:|"
                );
                for (n, b, mem) in &m.bundles {
                    let _ = writeln!(
                        s,
                        "| {n} | {} | {} |",
                        fmt_bytes(*b as f64),
                        fmt_bytes(*mem as f64)
                    );
                }
            }
            (None, Some(e)) => {
                let _ = writeln!(s, "\nFilter memory: not measured ({e}).");
            }
            (None, None) => {
                let _ = writeln!(s, "\nFilter memory: not measured.");
            }
        }
        s
    }
}

/// Reads the criterion results of both scale benches under `target_dir/criterion` and
/// measures the filter's memory (`$PORTCULLIS_WASM` or the release `filter.wasm`). A memory
/// failure is recorded in the section, not fatal; unreadable criterion files are.
pub fn collect(target_dir: &Path) -> Result<Section> {
    let all = criterion_medians(&target_dir.join("criterion"))?;
    let medians = all
        .into_iter()
        .filter(|(k, _)| k.starts_with("scale_") || k.starts_with("wasm_scale_"))
        .collect();
    let (memory, memory_error) = match measure_memory(&crate::wasm_path()) {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let read = |file: &str| -> Result<Option<Interleaved>> {
        match std::fs::read_to_string(target_dir.join(file)) {
            Ok(text) => Ok(Some(
                Interleaved::from_json(&text).with_context(|| file.to_owned())?,
            )),
            Err(_) => Ok(None),
        }
    };
    let interleaved = read(INTERLEAVED_FILE)?;
    let native_interleaved = read(NATIVE_INTERLEAVED_FILE)?;
    Ok(Section {
        medians,
        memory,
        memory_error,
        interleaved,
        native_interleaved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BENCHMARK_JSON: &str = r#"{"group_id":"scale_find_route","function_id":"late","value_str":"10000","throughput":null,"full_id":"scale_find_route/late/10000","directory_name":"scale_find_route/late/10000","title":"scale_find_route/late/10000"}"#;
    const ESTIMATES_JSON: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":260.1,"upper_bound":275.0},"point_estimate":266.5,"standard_error":3.9},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":255.0,"upper_bound":270.2},"point_estimate":262.25,"standard_error":4.1},"median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":1.5,"standard_error":0.2},"slope":null,"std_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":1.5,"standard_error":0.2}}"#;

    #[test]
    fn parses_criterion_files() {
        assert_eq!(
            parse_full_id(BENCHMARK_JSON).unwrap(),
            "scale_find_route/late/10000"
        );
        assert_eq!(parse_median(ESTIMATES_JSON).unwrap(), 262.25);
        assert!(parse_median(r#"{"mean":{"point_estimate":1.0}}"#).is_err());
        assert!(parse_median(r#"{"median":{"point_estimate":-1.0}}"#).is_err());
        assert!(parse_full_id("{}").is_err());
        assert!(parse_median("not json").is_err());
    }

    #[test]
    fn walks_a_criterion_tree() {
        let dir = std::env::temp_dir().join(format!("scale-criterion-{}", std::process::id()));
        let new = dir.join("scale_find_route/late/10000/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(new.join("benchmark.json"), BENCHMARK_JSON).unwrap();
        std::fs::write(new.join("estimates.json"), ESTIMATES_JSON).unwrap();
        // `base` (the previous run) and `report` are not read.
        let base = dir.join("scale_find_route/late/10000/base");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("estimates.json"), "garbage").unwrap();
        let m = criterion_medians(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m["scale_find_route/late/10000"], 262.25);
        // A missing directory is simply empty.
        assert!(criterion_medians(&dir).unwrap().is_empty());
    }

    fn section(growth: f64) -> Section {
        let mut medians = BTreeMap::new();
        for (g, _) in NATIVE_GROUPS.iter().chain(&WASM_GROUPS) {
            for p in PROBES {
                medians.insert(format!("{g}/{p}/10"), 100.0);
                medians.insert(format!("{g}/{p}/1000"), 110.0);
                medians.insert(format!("{g}/{p}/10000"), 100.0 * growth);
            }
        }
        medians.insert("scale_seed_evaluate/admin-allow".into(), 40.0);
        medians.insert("scale_compile/10000".into(), 2.3e8);
        Section {
            medians,
            memory: Some(Memory {
                sessions: vec![
                    MemoryPoint {
                        sessions: 0,
                        linear_memory_bytes: 1_000_000,
                        shared_data_bytes: 0,
                    },
                    MemoryPoint {
                        sessions: 10_000,
                        linear_memory_bytes: 11_000_000,
                        shared_data_bytes: 9_000_000,
                    },
                ],
                bundles: vec![(10, 2_000, 1_100_000)],
                wasm_bytes: 500_000,
            }),
            memory_error: None,
            interleaved: None,
            native_interleaved: None,
        }
    }

    #[test]
    fn headline_computes_growth_goals_and_memory() {
        let s = section(1.5);
        let h = s.headline();
        assert_eq!(h[0].3, Some(true));
        assert!(h[0].1.starts_with("1.50×"), "{}", h[0].1);
        assert_eq!(h[3].1, "not measured", "no floor in this section");
        assert_eq!(h[4].1, "40 ns");
        assert_eq!(h[4].3, Some(true));
        assert_eq!(h[5].1, "230.0 ms");
        assert_eq!(s.bytes_per_session(), Some(1000.0));
        assert_eq!(s.shared_bytes_per_session(), Some(900.0));
        assert!(h[6].1.starts_with("1000 B"), "{}", h[6].1);
        assert_eq!(h[7].1, "≈ 9.5 MiB");

        let slow = section(2.5).headline();
        assert_eq!(slow[0].3, Some(false));
        assert_eq!(slow[2].3, Some(false));
    }

    #[test]
    fn net_growth_subtracts_the_host_floor() {
        let mut s = section(1.5);
        // 100 ns → 150 ns with a 50 ns floor: the filter's share went 50 → 100 ns.
        s.medians.insert(FLOOR_ID.into(), 50.0);
        assert_eq!(s.net_growth("wasm_scale_named", "late"), Some(2.0));
        let h = s.headline();
        assert_eq!(h[2].3, Some(true));
        assert_eq!(h[3].3, Some(false));
        assert!(h[3].1.starts_with("2.00×"), "{}", h[3].1);
        // A floor above a figure makes the subtraction meaningless.
        s.medians.insert(FLOOR_ID.into(), 120.0);
        assert_eq!(s.net_growth("wasm_scale_named", "late"), None);
        assert!(
            s.markdown()
                .contains("Host floor (the no-op module, same request, same host): 120 ns.")
        );
    }

    #[test]
    fn missing_numbers_are_reported_as_missing_never_as_met() {
        let mut s = section(1.0);
        s.medians.remove("wasm_scale_unnamed/missing/10000");
        s.medians.remove("scale_seed_evaluate/admin-allow");
        s.memory = None;
        s.memory_error = Some("no filter.wasm".into());
        let h = s.headline();
        assert_eq!(h[2].3, None);
        assert_eq!(h[2].1, "not measured");
        assert_eq!(h[4].3, None);
        assert_eq!(h[6].1, "not measured");
        let md = s.markdown();
        assert!(md.contains("not measured (no filter.wasm)"), "{md}");
        assert!(
            md.contains("| request, find_route in the VM | missing | 100 ns | 110 ns | — | — |"),
            "{md}"
        );
    }

    fn interleaved() -> Interleaved {
        let row = |mode: &str, probe: &str, ratio: f64, net: Option<f64>| GrowthRow {
            mode: mode.into(),
            probe: probe.into(),
            per_request_ns: vec![(10, 5000.0), (1000, 5100.0), (10000, 5000.0 * ratio)],
            // Dyadic values: they survive the JSON round trip exactly.
            ratio: (ratio, ratio - 0.0625, ratio + 0.25),
            net_ratio: net,
        };
        Interleaved {
            rounds: 21,
            requests: 1000,
            floor_ns: Some(2000.0),
            rows: vec![
                row("named", "early", 1.125, Some(1.25)),
                row("unnamed", "missing", 1.25, Some(2.5)),
            ],
        }
    }

    #[test]
    fn interleaved_round_trips_and_drives_the_wasm_headline() {
        let i = interleaved();
        assert_eq!(Interleaved::from_json(&i.to_json()).unwrap(), i);
        assert!(Interleaved::from_json(r#"{"rounds":1}"#).is_err());
        assert!(Interleaved::from_json(r#"{"rounds":1,"requests":1,"rows":[{"mode":"a","probe":"b","per_request_ns":[],"ratio":[1,2]}]}"#).is_err());
        // Criterion ratios say 3× here; the interleaved rounds win.
        let mut s = section(3.0);
        s.interleaved = Some(i);
        let h = s.headline();
        assert!(
            h[2].1
                .starts_with("1.25× (worst: unnamed/missing; median of per-round"),
            "{}",
            h[2].1
        );
        assert_eq!(h[2].3, Some(true));
        assert!(h[3].1.starts_with("2.50×"), "{}", h[3].1);
        assert_eq!(h[3].3, Some(false));
        let md = s.markdown();
        assert!(
            md.contains(
                "| unnamed | missing | 5.00 µs | 5.10 µs | 6.25 µs | 1.25× (1.19–1.50) | 2.50× |"
            ),
            "{md}"
        );
    }

    #[test]
    fn native_interleaved_drives_the_native_headline() {
        let mut s = section(3.0);
        let mut i = interleaved();
        i.floor_ns = None;
        i.rows[0].mode = "route_by_id".into();
        i.rows[1].mode = "find_route_evaluate".into();
        s.native_interleaved = Some(i);
        let h = s.headline();
        assert!(
            h[0].1
                .starts_with("1.12× (worst: route_by_id/early; median"),
            "{}",
            h[0].1
        );
        assert_eq!(h[0].3, Some(true));
        assert!(
            h[1].1
                .starts_with("1.25× (worst: find_route_evaluate/missing"),
            "{}",
            h[1].1
        );
        // The wasm rows still come from criterion (3×: not met).
        assert_eq!(h[2].3, Some(false));
        assert!(
            s.markdown()
                .contains("Native, interleaved: 21 rounds × 1000 per route count")
        );
    }

    #[test]
    fn cache_bounds_match_the_filters_defaults() {
        // The filter is a wasm-only crate this host cannot link: compare with its source.
        let cfg = include_str!("../../../filter/src/config.rs");
        assert!(cfg.contains("pub const DEFAULT_SESSION_CACHE_SIZE: usize = 10_000;"));
        assert_eq!(FILTER_SESSION_CACHE_SIZE, 10_000);
        assert!(cfg.contains("pub const DEFAULT_NEGATIVE_CACHE_SIZE: usize = 4_096;"));
        assert_eq!(FILTER_NEGATIVE_CACHE_SIZE, 4_096);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn identity_jwt_is_realistically_sized() {
        let j = identity_jwt(
            &fixtures::session_id(1),
            "user-000001",
            "user1@example.com",
            "svc-00000.example.com",
            1_800_000_000,
        );
        assert_eq!(j.split('.').count(), 3);
        assert!((450..900).contains(&j.len()), "{}", j.len());
    }
}
