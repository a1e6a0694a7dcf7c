//! `make bench`: where Portcullis stands against the other ways to put authorization in
//! front of an Envoy upstream — issue 7's scenarios, measured in one interleaved run on
//! loopback, every headline figure a ratio against bare Envoy of the same round.
//!
//! 1. bare Envoy (no auth): the physical limit;
//! 2. Envoy + the Portcullis filter, cached session, the seed config's `admin` policy
//!    (domain + group claim), identity JWT on — the headline;
//! 3. Envoy + `ext_authz` (HTTP and gRPC) calling the sidecar (same evaluator, same
//!    session store);
//! 4. Envoy's native `jwt_authn` verifying an ES256 bearer token;
//! 5. the filter's cache-miss path (first request of fresh sessions: a sidecar lookup);
//! 6. revocation: from a sign-out / group removal committed in the sidecar to the first
//!    denied request on every worker;
//!
//! plus the no-op wasm module (the V8 floor) as a reference row, and the sidecar's memory
//! per 100 000 sessions (memory and Redis databroker).
//!
//! The sidecar is real: `portcullis-bench sidecar-child` (this binary, re-executed) runs
//! the `sidecar` library seeded with sessions ([`child`]). Envoys (`--concurrency 1`) and
//! the sidecar are pinned to CPU 0, wrk and this harness to CPU 1. See docs/benchmarks.md.
//!
//! Usage: `portcullis-bench [--quick | --smoke] [--out DIR]`. Full runs write
//! `bench/results/<date>.md` and `.svg`; `--quick` (≈1 min) and `--smoke` (the test's
//! run, seconds) write to `target/bench/` (or `--out`), never over committed results.

mod child;
mod config;
mod layout;
mod openloop;
mod report;
mod revocation;
mod scale;
mod svg;
mod wrk;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use child::SeededSidecar;
use config::{ADMIN_HOST, ADMIN_PATH, AUTHENTICATE_HOST, BenchConfig};
use layout::{ExtAuthz, Filters, SEEN_EMAIL_HEADER, SEEN_JWT_HEADER};
use proxy_wasm_test_host::envoy::{Envoy, envoy_path};
use proxy_wasm_test_host::wasm_path;
use report::{ClosedRun, MemoryRow, Meta, OpenRun, Results, RevocationRow, ScenarioRow};
use revocation::Revocation;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// CPU for Envoy (and the sidecar) and CPU for the load generators when pinning.
const SERVER_CPU: u32 = 0;
const LOAD_CPU: u32 = 1;

/// How much to measure.
#[derive(Debug, Clone)]
struct Params {
    mode: &'static str,
    rounds: u64,
    seconds: u64,
    open_seconds: u64,
    warmup_seconds: u64,
    connections: u32,
    open_connections: u32,
    /// Fresh sessions per cache-miss run.
    miss_per_run: usize,
    /// Sessions seeded into the main sidecar (at least what the scenarios use).
    sessions: usize,
    /// Revocation trials per kind.
    trials: usize,
    /// Sessions seeded into the Redis-backed sidecar for the memory figure.
    redis_sessions: usize,
}

impl Params {
    fn for_mode(mode: &str) -> Result<Params> {
        let mut p = match mode {
            "full" => Params {
                mode: "full",
                rounds: 5,
                seconds: 6,
                open_seconds: 5,
                warmup_seconds: 2,
                connections: 16,
                open_connections: 32,
                miss_per_run: 12_000,
                sessions: 100_000,
                trials: 100,
                redis_sessions: 100_000,
            },
            "quick" => Params {
                mode: "quick",
                rounds: 2,
                seconds: 2,
                open_seconds: 2,
                warmup_seconds: 1,
                connections: 16,
                open_connections: 32,
                miss_per_run: 2_000,
                sessions: 10_000,
                trials: 10,
                redis_sessions: 5_000,
            },
            "smoke" => Params {
                mode: "smoke",
                rounds: 1,
                seconds: 1,
                open_seconds: 1,
                warmup_seconds: 1,
                connections: 8,
                open_connections: 16,
                miss_per_run: 300,
                sessions: 1_000,
                trials: 3,
                redis_sessions: 300,
            },
            other => bail!("unknown mode {other}"),
        };
        p.rounds = env_u64("BENCH_ROUNDS", p.rounds)?.max(1);
        p.seconds = env_u64("BENCH_SECONDS", p.seconds)?.max(1);
        p.connections = u32::try_from(env_u64("BENCH_CONNECTIONS", p.connections.into())?.max(1))?;
        p.trials = usize::try_from(env_u64("BENCH_TRIALS", p.trials as u64)?.max(1))?;
        let needed = FIRST_POOL_SESSION
            + REVOCATION_VIAS * (2 * p.trials + 1)
            + (usize::try_from(p.rounds)? + 1) * (p.miss_per_run + 2 * p.connections as usize);
        p.sessions = p.sessions.max(needed);
        Ok(p)
    }
}

/// Session 0 is the cached session of scenarios 1–4; 1 the group-removal check of
/// scenario 2; scenario 6's sessions and the cache-miss pool follow.
const FIRST_POOL_SESSION: usize = 2;

/// Scenario 6 runs through the filter and through ext_authz.
const REVOCATION_VIAS: usize = 2;

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn command_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn command_text(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_owned()
        })
        .unwrap_or_default()
}

/// User + system CPU time of a process (all threads), in microseconds.
fn cpu_time_us(pid: u32, ticks_per_s: u64) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || -> Result<u64> {
        Ok(fields
            .next()
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    let ticks = next()? + next()?;
    Ok(ticks * 1_000_000 / ticks_per_s.max(1))
}

/// Nice value of everything measured (Envoys, the sidecar child, wrk, this harness) unless
/// `BENCH_NO_BOOST` is set: on a shared machine, other processes' compile jobs then take
/// the cores from them far less often (CFS weight ×~10 over nice 0), which is most of the
/// tail latency otherwise. Needs root (or CAP_SYS_NICE); without it nothing changes.
const BOOST_NICE: &str = "-10";

fn boost_enabled() -> bool {
    std::env::var_os("BENCH_NO_BOOST").is_none()
}

/// Pin every thread of `pid` (threads started later inherit it) to `cpus` (`0`, `0,1`),
/// and give each the [`BOOST_NICE`] priority (nice is per thread on Linux).
fn pin(pid: u32, cpus: &str) -> Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()?;
    ensure!(
        out.status.success(),
        "taskset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if boost_enabled() {
        let tids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        // Best effort: an unprivileged run keeps nice 0 (the results file says whether).
        let _ = Command::new("renice")
            .args(["-n", BOOST_NICE, "-p"])
            .args(&tids)
            .output();
    }
    Ok(())
}

/// Whether this process runs boosted (its nice value is negative).
fn boosted() -> bool {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(16)?.parse::<i64>().ok())
        })
        .is_some_and(|nice| nice < 0)
}

/// A loopback port nobody listens on right now (for the upstream listener, which the
/// bootstrap must name before Envoy starts).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a configuration is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoadKind {
    /// The same request every time (cached session / bearer token).
    Static,
    /// A fresh session per request (scenario 5).
    Miss,
}

/// One measured configuration.
struct Cfg {
    row: ScenarioRow,
    envoy: usize,
    kind: LoadKind,
    /// The request's headers (`Host` and the credential this configuration reads).
    headers: Vec<(String, String)>,
}

/// Everything a measured run needs.
struct Bench<'a> {
    p: &'a Params,
    envoys: Vec<Envoy>,
    cfgs: Vec<Cfg>,
    sidecar: SeededSidecar,
    pinned: bool,
    ticks_per_s: u64,
    done_lua: PathBuf,
    next_miss: usize,
}

impl Bench<'_> {
    fn headers(&self, i: usize) -> Result<&[(String, String)]> {
        Ok(&self
            .cfgs
            .get(i)
            .ok_or_else(|| anyhow!("no config {i}"))?
            .headers)
    }

    fn envoy(&self, i: usize) -> Result<&Envoy> {
        let c = self.cfgs.get(i).ok_or_else(|| anyhow!("no config {i}"))?;
        self.envoys
            .get(c.envoy)
            .ok_or_else(|| anyhow!("no envoy {}", c.envoy))
    }

    /// One request per fresh session for a cache-miss run.
    fn miss_requests(&mut self, i: usize, count: usize) -> Result<Vec<Vec<u8>>> {
        let headers = self.headers(i)?.to_vec();
        let slice = self
            .sidecar
            .sessions
            .get(self.next_miss..self.next_miss + count)
            .ok_or_else(|| anyhow!("out of fresh sessions for the cache-miss scenario"))?;
        self.next_miss += count;
        Ok(slice
            .iter()
            .map(|s| openloop::request_bytes(ADMIN_PATH, &with_cookie(&headers, &s.cookie)))
            .collect())
    }

    /// One closed-loop (wrk) run of configuration `i`.
    fn closed(&mut self, i: usize, round: u64, seconds: u64, count: bool) -> Result<ClosedRun> {
        let kind = self.cfgs.get(i).map(|c| c.kind).unwrap_or(LoadKind::Static);
        let miss = match kind {
            LoadKind::Static => None,
            LoadKind::Miss => Some(self.miss_requests(
                i,
                if count {
                    self.p.miss_per_run
                } else {
                    self.p.miss_per_run / 4 + 1
                },
            )?),
        };
        let (envoy_pid, addr) = {
            let e = self.envoy(i)?;
            (e.pid(), e.addr)
        };
        let sidecar_pid = self.sidecar.pid();
        let lookups_before = self.sidecar.lookups()?;
        let cpu_before =
            cpu_time_us(envoy_pid, self.ticks_per_s)? + cpu_time_us(sidecar_pid, self.ticks_per_s)?;
        let sample = match miss {
            Some(requests) => openloop::each_once(addr, requests, self.p.connections)?,
            None => wrk::run(&wrk::Load {
                addr,
                path: ADMIN_PATH,
                headers: self.headers(i)?,
                connections: self.p.connections,
                duration: Duration::from_secs(seconds),
                cpu: self.pinned.then_some(LOAD_CPU),
                nice: boost_enabled().then_some(BOOST_NICE),
                script: &self.done_lua,
            })?,
        };
        let cpu_us = (cpu_time_us(envoy_pid, self.ticks_per_s)?
            + cpu_time_us(sidecar_pid, self.ticks_per_s)?)
        .saturating_sub(cpu_before);
        let lookups = self.sidecar.lookups()?.saturating_sub(lookups_before);
        let name = self.cfgs.get(i).map_or("?", |c| c.row.name);
        if sample.non200 > 0 || sample.status_errors > 0 || sample.socket_errors > 0 {
            bail!(
                "{name}: {} answers were not 200 ({} ≥ 400, {} socket errors) — not the path being measured:\n{}",
                sample.non200,
                sample.status_errors,
                sample.socket_errors,
                self.envoy(i)?.log_tail()
            );
        }
        Ok(ClosedRun {
            round,
            config: i,
            sample,
            cpu_us,
            lookups,
        })
    }

    fn open(&self, i: usize, round: u64, rate: f64) -> Result<OpenRun> {
        let envoy = self.envoy(i)?;
        let request = openloop::request_bytes(ADMIN_PATH, self.headers(i)?);
        let sample = openloop::run(
            envoy.addr,
            &request,
            self.p.open_connections,
            rate,
            Duration::from_secs(self.p.open_seconds),
        )?;
        if sample.non200 > 0 || sample.errors > 0 {
            bail!(
                "open loop on {}: {} answers not 200, {} connection errors",
                self.cfgs.get(i).map_or("?", |c| c.row.name),
                sample.non200,
                sample.errors
            );
        }
        Ok(OpenRun {
            round,
            config: i,
            sample,
        })
    }
}

/// The request of the cookie-based configurations (bare Envoy, no-op wasm, the filter,
/// ext_authz): `GET /admin` on the demo's admin host with the session cookie.
fn cookie_headers(cookie: &str) -> Vec<(String, String)> {
    vec![
        ("Host".to_owned(), ADMIN_HOST.to_owned()),
        ("Cookie".to_owned(), cookie.to_owned()),
    ]
}

/// The same request for `jwt_authn`: the credential is a bearer token instead.
fn bearer_headers(token: &str) -> Vec<(String, String)> {
    vec![
        ("Host".to_owned(), ADMIN_HOST.to_owned()),
        ("Authorization".to_owned(), format!("Bearer {token}")),
    ]
}

/// `headers` with the `Cookie` replaced.
fn with_cookie(headers: &[(String, String)], cookie: &str) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let v = if k == "Cookie" { cookie } else { v.as_str() };
            (k.clone(), v.to_owned())
        })
        .collect()
}

/// A pre-signed ES256 token for `jwt_authn` (the sidecar's signer, a key made for this
/// run) and the JWKS that verifies it.
fn jwt_material() -> Result<(String, String)> {
    let signer = sidecar::jwt::JwtSigner::new(None, AUTHENTICATE_HOST, &[])?;
    let now = i64::try_from(now_s())?;
    let mut payload = serde_json::Map::new();
    payload.insert("iss".into(), AUTHENTICATE_HOST.into());
    payload.insert("aud".into(), ADMIN_HOST.into());
    payload.insert("sub".into(), "bench-user-0000000".into());
    payload.insert("email".into(), child::user_email(0).into());
    payload.insert("groups".into(), serde_json::json!(child::GROUPS));
    payload.insert("iat".into(), now.into());
    payload.insert("exp".into(), (now + 3 * 3600).into());
    let token = signer.sign_payload(&payload)?;
    use sidecar::idp::IdentitySigner as _;
    Ok((token, signer.jwks().to_string()))
}

fn start_envoy(
    filters: &Filters<'_>,
    cfg: &BenchConfig,
    sidecar: &SeededSidecar,
    workers: u32,
) -> Result<Envoy> {
    let yaml = layout::bootstrap(filters, &cfg.hosts, free_port()?, sidecar.api);
    Envoy::start_bootstrap(&yaml, workers)
}

/// Scenario 6 through `filters` (an Envoy with 2 workers whose sidecar cluster is
/// `replica`, else `sidecar`): one settling trial, then `trials` sign-outs and `trials`
/// group removals committed through `sidecar`, on its sessions `*next…`.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per databroker; all distinct"
)]
fn revocations_through(
    via: &'static str,
    filters: &Filters<'_>,
    cfg: &BenchConfig,
    sidecar: &mut SeededSidecar,
    replica: Option<&SeededSidecar>,
    next: &mut usize,
    warm: &[u8],
    trials: usize,
    pinned: bool,
) -> Result<Vec<RevocationRow>> {
    let yaml = layout::bootstrap(
        filters,
        &cfg.hosts,
        free_port()?,
        replica.map_or(sidecar.api, |r| r.api),
    );
    let envoy = Envoy::start_bootstrap(&yaml, 2)
        .with_context(|| format!("starting Envoy + {via} (2 workers)"))?;
    if pinned {
        pin(envoy.pid(), "0,1")?;
    }
    let mut conns = revocation::connections_per_worker(&envoy, warm)?;
    let mut take = |sidecar: &SeededSidecar| {
        let s = sidecar.sessions.get(*next).cloned();
        *next += 1;
        s.ok_or_else(|| anyhow!("out of sessions for scenario 6"))
    };
    // A fresh Envoy's workers start their change-stream long polls over their first ticks:
    // one uncounted trial and a second of settling, so trials measure the steady state.
    let settle = take(sidecar)?;
    revocation::trial(
        &mut conns,
        sidecar,
        &settle,
        ADMIN_HOST,
        ADMIN_PATH,
        Revocation::SignOut,
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let mut rows = Vec::new();
    for kind in [Revocation::SignOut, Revocation::DropGroup] {
        let mut times = Vec::new();
        for _ in 0..trials {
            let s = take(sidecar)?;
            times.push(revocation::trial(
                &mut conns, sidecar, &s, ADMIN_HOST, ADMIN_PATH, kind,
            )?);
        }
        eprintln!(
            "bench: {via}: {} → denied on both workers, {} trials: max {} µs",
            kind.name(),
            times.len(),
            times.iter().max().copied().unwrap_or(0)
        );
        rows.push(RevocationRow {
            via,
            kind: kind.name(),
            denied: kind.denied_status(),
            micros: times,
        });
    }
    Ok(rows)
}

/// Record a passed check (and print it).
fn passed(checks: &mut Vec<String>, text: String) {
    eprintln!("check passed: {text}");
    checks.push(text);
}

fn seen(r: &proxy_wasm_test_host::http::Response, header: &str) -> String {
    r.header(header).unwrap_or("").to_owned()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `INFO memory`'s `used_memory` of the Redis on `port`.
fn redis_used_memory(port: u16) -> Result<u64> {
    use std::io::{BufRead as _, Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"INFO memory\r\n")?;
    // A RESP bulk string: `$<length>\r\n<bytes>\r\n`.
    let mut r = std::io::BufReader::new(s);
    let mut head = String::new();
    r.read_line(&mut head)?;
    let len: usize = head
        .trim()
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("Redis answered {head:?}"))?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    parse_used_memory(&String::from_utf8_lossy(&body))
}

fn parse_used_memory(info: &str) -> Result<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no used_memory in Redis INFO"))
}

/// A `redis-server` child on a free loopback port (no persistence), killed on drop.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    fn start(dir: &Path) -> Result<Redis> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        let r = Redis { child, port };
        for _ in 0..200 {
            if redis_used_memory(port).is_ok() {
                return Ok(r);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!("redis-server did not come up on port {port}")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("sidecar-child") {
        return child::child_main(args.get(1..).unwrap_or_default());
    }
    let mut mode = "full";
    let mut out_dir: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => mode = "quick",
            "--smoke" => mode = "smoke",
            "--out" => out_dir = it.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("usage: portcullis-bench [--quick | --smoke] [--out DIR]");
                return Ok(());
            }
            other => bail!(
                "unknown argument {other:?} (usage: portcullis-bench [--quick | --smoke] [--out DIR])"
            ),
        }
    }
    let p = Params::for_mode(mode)?;
    let out_dir = out_dir.unwrap_or_else(|| {
        if mode == "full" {
            workspace_root().join("bench/results")
        } else {
            workspace_root().join("target/bench")
        }
    });
    run(&p, &out_dir)
}

fn run(p: &Params, out_dir: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    ensure!(
        command_text("wrk", &["--version"]).contains("wrk"),
        "wrk not found (apt-get install wrk; `make deps-system` installs it)"
    );
    let wasm = wasm_path();
    ensure!(
        wasm.is_file(),
        "{} missing: run `make wasm`",
        wasm.display()
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = std::env::var_os("BENCH_NO_PIN").is_none()
        && cores >= 2
        && command_ok("taskset", &["-c", "0", "true"]);
    let ticks_per_s = command_text("getconf", &["CLK_TCK"]).parse().unwrap_or(100);
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let dir = TempDir::new()?;
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    if pinned {
        // This harness (and the open-loop generator's threads) on the load core; children
        // inherit it until pinned elsewhere.
        pin(std::process::id(), &LOAD_CPU.to_string())?;
        if boosted() {
            notes.push(format!("Envoys, the sidecar child, wrk and the harness (open-loop generator) ran at nice {BOOST_NICE} (`BENCH_NO_BOOST=1`: nice 0); with scheduler autogroups this only orders them among themselves, other sessions' processes do not yield to them"));
        }
    }

    // ---- the seeded sidecar ------------------------------------------------------------
    let cfg = config::demo_based(None)?;
    eprintln!(
        "bench ({}): seeding {} sessions into the sidecar (memory databroker)…",
        p.mode, p.sessions
    );
    // TCP_NODELAY on the sidecar's listeners unless BENCH_SIDECAR_NODELAY=0 (see child.rs).
    let nodelay = std::env::var("BENCH_SIDECAR_NODELAY").map_or(true, |v| v != "0");
    if nodelay {
        notes.push("the sidecar child sets TCP_NODELAY on its listeners' connections, as the sidecar binary does; without it gRPC ext_authz waits ~40 ms per check (Nagle + delayed ACK). `BENCH_SIDECAR_NODELAY=0` measures without".to_owned());
    } else {
        notes.push("BENCH_SIDECAR_NODELAY=0: the sidecar child's listeners run without TCP_NODELAY, as the sidecar binary at this commit".to_owned());
    }
    let mut sidecar = SeededSidecar::start(&cfg.yaml, p.sessions, &dir.0, "memory", nodelay)?;
    if pinned {
        pin(sidecar.pid(), &SERVER_CPU.to_string())?;
    }
    eprintln!(
        "bench: seeded {} sessions in {} ms; sidecar RSS {} → {} KiB",
        p.sessions, sidecar.seed_ms, sidecar.rss_before_kb, sidecar.rss_after_kb
    );
    let memory_row = MemoryRow {
        backend: "memory",
        sessions: p.sessions as u64,
        sidecar_kb_before: sidecar.rss_before_kb,
        sidecar_kb_after: sidecar.rss_after_kb,
        redis_bytes_before: None,
        redis_bytes_after: None,
        seed_ms: sidecar.seed_ms,
    };
    let cached = sidecar
        .sessions
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no sessions"))?;
    let (token, jwks) = jwt_material()?;
    let headers = cookie_headers(&cached.cookie);
    let bearer = bearer_headers(&token);

    // ---- the Envoys ----------------------------------------------------------------------
    let wasm_str = wasm.display().to_string();
    let plugin_config = cfg.plugin_config();
    let noop_wasm = std::env::var_os("BENCH_NOOP_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join("target/wasm32-wasip1/release/portcullis_bench_noop.wasm")
        });
    let noop_str = noop_wasm.display().to_string();
    let filter = Filters::Wasm {
        wasm: &wasm_str,
        plugin_config: &plugin_config,
    };
    let mut envoys = Vec::new();
    let mut cfgs = Vec::new();
    let mut add = |envoy: Envoy, envoys: &mut Vec<Envoy>, row: ScenarioRow, kind: LoadKind| {
        envoys.push(envoy);
        // The same request everywhere except the credential: jwt_authn reads a bearer
        // token, everything else the session cookie (the others ignore it).
        let h = if row.id == "4" { &bearer } else { &headers };
        cfgs.push(Cfg {
            headers: h.clone(),
            row,
            envoy: envoys.len() - 1,
            kind,
        });
    };
    add(
        start_envoy(&Filters::None, &cfg, &sidecar, 1).context("starting bare Envoy")?,
        &mut envoys,
        ScenarioRow::new("1", "bare Envoy", "no auth: the physical limit"),
        LoadKind::Static,
    );
    if noop_wasm.is_file() {
        let f = Filters::Wasm {
            wasm: &noop_str,
            plugin_config: "",
        };
        add(
            start_envoy(&f, &cfg, &sidecar, 1).context("starting Envoy + no-op wasm")?,
            &mut envoys,
            ScenarioRow::new(
                "ref",
                "no-op wasm filter",
                "continues every request: the V8 wasm floor",
            ),
            LoadKind::Static,
        );
    } else {
        notes.push(format!(
            "no-op wasm reference not measured: {} missing (`cargo build --release --target wasm32-wasip1 -p portcullis-bench-noop`)",
            noop_wasm.display()
        ));
    }
    add(
        start_envoy(&filter, &cfg, &sidecar, 1).context("starting Envoy + filter")?,
        &mut envoys,
        ScenarioRow::new(
            "2",
            "Portcullis filter, cache hit",
            "admin policy (domain + group claim), identity JWT + claim headers",
        ),
        LoadKind::Static,
    );
    for (kind, id, name) in [
        (ExtAuthz::Http, "3 HTTP", "ext_authz HTTP → sidecar"),
        (ExtAuthz::Grpc, "3 gRPC", "ext_authz gRPC → sidecar"),
    ] {
        add(
            start_envoy(
                &layout::ext_authz(kind, sidecar.ext_authz, &cfg.api_token),
                &cfg,
                &sidecar,
                1,
            )
            .with_context(|| format!("starting Envoy + {name}"))?,
            &mut envoys,
            ScenarioRow::new(
                id,
                name,
                "the same policy decided in the sidecar (same evaluator and session store), identity headers added",
            ),
            LoadKind::Static,
        );
    }
    add(
        start_envoy(
            &Filters::JwtAuthn {
                issuer: AUTHENTICATE_HOST,
                audience: ADMIN_HOST,
                jwks: &jwks,
            },
            &cfg,
            &sidecar,
            1,
        )
        .context("starting Envoy + jwt_authn")?,
        &mut envoys,
        ScenarioRow::new(
            "4",
            "Envoy jwt_authn",
            "ES256 bearer token, inline JWKS, email claim → header (stateless)",
        ),
        LoadKind::Static,
    );
    add(
        start_envoy(&filter, &cfg, &sidecar, 1).context("starting Envoy + filter (miss)")?,
        &mut envoys,
        ScenarioRow::new(
            "5",
            "Portcullis filter, cache miss",
            "first request of a fresh session: sidecar lookup + JWT signing",
        ),
        LoadKind::Miss,
    );
    let not_measured: Vec<(&str, &str, String)> = Vec::new();
    if pinned {
        for e in &envoys {
            pin(e.pid(), &SERVER_CPU.to_string())?;
        }
    }

    // ---- checks: each configuration exercises the path it claims --------------------------
    let find = |cfgs: &[Cfg], id: &str| cfgs.iter().position(|c| c.row.id == id);
    let get_envoy = |cfgs: &[Cfg], envoys: &[Envoy], id: &str| -> Result<usize> {
        let i = find(cfgs, id).ok_or_else(|| anyhow!("no scenario {id}"))?;
        let e = cfgs
            .get(i)
            .map(|c| c.envoy)
            .ok_or_else(|| anyhow!("no scenario {id}"))?;
        ensure!(e < envoys.len(), "no envoy for {id}");
        Ok(e)
    };
    let hdrs = |h: &[(String, String)]| -> Vec<(String, String)> {
        h.iter().filter(|(k, _)| k != "Host").cloned().collect()
    };
    let get = |envoy: &Envoy, extra: &[(String, String)]| {
        let refs: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        envoy.get(ADMIN_HOST, ADMIN_PATH, &refs)
    };
    let full = hdrs(&headers);
    {
        let e = envoys
            .get(get_envoy(&cfgs, &envoys, "1")?)
            .ok_or_else(|| anyhow!("bare"))?;
        let r = get(e, &full)?;
        ensure!(r.status == 200, "bare Envoy answered {}", r.status);
        passed(&mut checks, "1 bare Envoy: 200".to_owned());
    }
    if let Ok(i) = get_envoy(&cfgs, &envoys, "ref") {
        let e = envoys.get(i).ok_or_else(|| anyhow!("noop"))?;
        let r = get(e, &full)?;
        ensure!(r.status == 200, "no-op wasm answered {}", r.status);
        passed(&mut checks, "ref no-op wasm: 200".to_owned());
    }
    {
        let e = envoys
            .get(get_envoy(&cfgs, &envoys, "2")?)
            .ok_or_else(|| anyhow!("filter"))?;
        let r = get(e, &[])?;
        ensure!(
            r.status == 302,
            "filter without cookie answered {} (expected a sign-in redirect):\n{}",
            r.status,
            e.log_tail()
        );
        passed(
            &mut checks,
            "2 filter: 302 (sign-in) without cookie".to_owned(),
        );
        let before = sidecar.lookups()?;
        for attempt in ["miss", "hit"] {
            let r = get(e, &full)?;
            ensure!(
                r.status == 200
                    && seen(&r, SEEN_EMAIL_HEADER) == child::user_email(0)
                    && seen(&r, SEEN_JWT_HEADER).starts_with("eyJ"),
                "filter with cookie ({attempt}) answered {} with identity {:?} / JWT {:?}:\n{}",
                r.status,
                seen(&r, SEEN_EMAIL_HEADER),
                seen(&r, SEEN_JWT_HEADER),
                e.log_tail()
            );
        }
        let lookups = sidecar.lookups()? - before;
        ensure!(
            lookups == 1,
            "expected one sidecar lookup (the miss), saw {lookups}"
        );
        passed(
            &mut checks,
            format!(
                "2 filter: 200 with cookie, upstream saw x-pomerium-claim-email {} and an identity JWT; one sidecar lookup for miss + hit",
                child::user_email(0)
            ),
        );
        // A session without `admins` is denied by the admin policy (the group claim counts).
        let other = sidecar
            .sessions
            .get(1)
            .cloned()
            .ok_or_else(|| anyhow!("session 1"))?;
        let h = with_cookie(&full, &other.cookie);
        let r = get(e, &h)?;
        ensure!(r.status == 200, "session 1 answered {}", r.status);
        sidecar.drop_group(&other.sid, "admins")?;
        let mut denied = false;
        // A functional check, not a timing: generous for a loaded machine.
        for _ in 0..500 {
            if get(e, &h)?.status == 403 {
                denied = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        ensure!(
            denied,
            "a session without `admins` was not denied by the admin route"
        );
        passed(
            &mut checks,
            "2 filter: 403 once `admins` is removed from a session's groups".to_owned(),
        );
    }
    for id in ["3 HTTP", "3 gRPC"] {
        let e = envoys
            .get(get_envoy(&cfgs, &envoys, id)?)
            .ok_or_else(|| anyhow!("{id}"))?;
        let r = get(e, &[])?;
        ensure!(
            r.status == 302,
            "{id} without cookie answered {} (expected a sign-in redirect):\n{}",
            r.status,
            e.log_tail()
        );
        let r = get(e, &full)?;
        ensure!(
            r.status == 200
                && seen(&r, SEEN_EMAIL_HEADER) == child::user_email(0)
                && seen(&r, SEEN_JWT_HEADER).starts_with("eyJ"),
            "{id} with cookie answered {} with identity {:?} / JWT {:?}:\n{}",
            r.status,
            seen(&r, SEEN_EMAIL_HEADER),
            seen(&r, SEEN_JWT_HEADER),
            e.log_tail()
        );
        passed(
            &mut checks,
            format!(
                "{id}: 302 (sign-in) without cookie, 200 with it and the identity JWT + email header upstream"
            ),
        );
    }
    {
        let e = envoys
            .get(get_envoy(&cfgs, &envoys, "4")?)
            .ok_or_else(|| anyhow!("jwt"))?;
        let r = get(e, &[])?;
        ensure!(
            r.status == 401,
            "jwt_authn without token answered {}",
            r.status
        );
        let r = get(e, &hdrs(&bearer))?;
        ensure!(
            r.status == 200 && seen(&r, SEEN_EMAIL_HEADER) == child::user_email(0),
            "jwt_authn with token answered {} (email {:?}):\n{}",
            r.status,
            seen(&r, SEEN_EMAIL_HEADER),
            e.log_tail()
        );
        passed(
            &mut checks,
            "4 jwt_authn: 401 without token, 200 with it and the email claim forwarded".to_owned(),
        );
    }

    let done_lua = Path::new(env!("CARGO_MANIFEST_DIR")).join("done.lua");
    let miss_start = FIRST_POOL_SESSION + REVOCATION_VIAS * (2 * p.trials + 1);
    let mut bench = Bench {
        p,
        envoys,
        cfgs,
        sidecar,
        pinned,
        ticks_per_s,
        done_lua,
        next_miss: miss_start,
    };
    {
        let i = find(&bench.cfgs, "5").ok_or_else(|| anyhow!("no scenario 5"))?;
        let probe = bench
            .sidecar
            .sessions
            .get(bench.next_miss)
            .cloned()
            .ok_or_else(|| anyhow!("probe"))?;
        bench.next_miss += 1;
        let before = bench.sidecar.lookups()?;
        let h = with_cookie(&full, &probe.cookie);
        let r = get(bench.envoy(i)?, &h)?;
        ensure!(
            r.status == 200 && seen(&r, SEEN_JWT_HEADER).starts_with("eyJ"),
            "miss probe answered {}",
            r.status
        );
        let lookups = bench.sidecar.lookups()? - before;
        ensure!(
            lookups == 1,
            "a fresh session made {lookups} sidecar lookups, expected 1"
        );
        passed(&mut checks, "5 filter: a fresh session's first request is one sidecar lookup, then 200 with identity".to_owned());
    }

    // ---- closed loop: interleaved rounds ------------------------------------------------------
    let n = bench.cfgs.len();
    eprintln!(
        "bench: {} rounds × {n} configurations × {} s (wrk, {} connections), pinned: {pinned}",
        p.rounds, p.seconds, p.connections
    );
    for i in 0..n {
        bench.closed(i, 0, p.warmup_seconds, false)?;
    }
    let mut closed_runs = Vec::new();
    for round in 0..p.rounds {
        for k in 0..n {
            let i = (k + usize::try_from(round)?) % n;
            let r = bench.closed(i, round, p.seconds, true)?;
            eprintln!(
                "round {} {:<32} {:>8.0} req/s  p50 {:>5} µs  p99 {:>6} µs  CPU {:>6.1} µs/req  lookups {}",
                round + 1,
                bench.cfgs.get(i).map_or("", |c| c.row.name),
                r.sample.rps(),
                r.sample.p50_us,
                r.sample.p99_us,
                r.cpu_us as f64 / r.sample.requests.max(1) as f64,
                r.lookups
            );
            closed_runs.push(r);
        }
    }
    // ---- open loop at half of bare Envoy's rate ----------------------------------------------
    let bare_rps = report::median(
        closed_runs
            .iter()
            .filter(|r| r.config == 0)
            .map(|r| r.sample.rps())
            .collect(),
    );
    let half = (bare_rps / 2.0).max(10.0);
    let open_cfgs: Vec<usize> = (0..n)
        .filter(|i| {
            bench
                .cfgs
                .get(*i)
                .is_some_and(|c| c.kind == LoadKind::Static)
        })
        .collect();
    eprintln!(
        "bench: open loop at {half:.0} req/s (half of bare Envoy's {bare_rps:.0}), {} rounds × {} s",
        p.rounds, p.open_seconds
    );
    let mut open_runs = Vec::new();
    for round in 0..p.rounds {
        for k in 0..open_cfgs.len() {
            let idx = (k + usize::try_from(round)?) % open_cfgs.len();
            let i = *open_cfgs.get(idx).ok_or_else(|| anyhow!("open config"))?;
            let r = bench.open(i, round, half)?;
            eprintln!(
                "open {} {:<32} {:>8.0}/{:.0} req/s  p50 {:>5} µs  p99 {:>6} µs",
                round + 1,
                bench.cfgs.get(i).map_or("", |c| c.row.name),
                r.sample.rps(),
                half,
                r.sample.p50_us,
                r.sample.p99_us
            );
            open_runs.push(r);
        }
    }

    // ---- scenario 6: revocation on 2 workers ---------------------------------------------------
    let rows: Vec<ScenarioRow> = bench.cfgs.iter().map(|c| c.row.clone()).collect();
    let Bench {
        envoys,
        mut sidecar,
        ..
    } = bench;
    drop(envoys);
    let warm = openloop::request_bytes(ADMIN_PATH, &headers);
    let mut revocations = Vec::new();
    let authz_http = layout::ext_authz(ExtAuthz::Http, sidecar.ext_authz, &cfg.api_token);
    let mut next = FIRST_POOL_SESSION;
    for (via, filters) in [("filter", &filter), ("ext_authz HTTP", &authz_http)] {
        let rows = revocations_through(
            via,
            filters,
            &cfg,
            &mut sidecar,
            None,
            &mut next,
            &warm,
            p.trials,
            pinned,
        )?;
        passed(
            &mut checks,
            format!(
                "6 revocation ({via}): every one of {} sign-outs (302) and {} group removals (403) was denied on both workers",
                p.trials, p.trials
            ),
        );
        revocations.extend(rows);
    }
    drop(sidecar);

    // ---- sidecar memory: Redis ------------------------------------------------------------------
    let mut memory = vec![memory_row];
    {
        let redis_dir = dir.0.join("redis");
        std::fs::create_dir_all(&redis_dir)?;
        let redis = Redis::start(&redis_dir)?;
        let before = redis_used_memory(redis.port)?;
        let rcfg = config::demo_based(Some(&format!("redis://127.0.0.1:{}/0", redis.port)))?;
        eprintln!(
            "bench: seeding {} sessions into a Redis-backed sidecar…",
            p.redis_sessions
        );
        let mut rs = SeededSidecar::start(&rcfg.yaml, p.redis_sessions, &dir.0, "redis", nodelay)?;
        let after = redis_used_memory(redis.port)?;
        memory.push(MemoryRow {
            backend: "redis",
            sessions: p.redis_sessions as u64,
            sidecar_kb_before: rs.rss_before_kb,
            sidecar_kb_after: rs.rss_after_kb,
            redis_bytes_before: Some(before),
            redis_bytes_after: Some(after),
            seed_ms: rs.seed_ms,
        });
        // Scenario 6 once more with the Redis databroker (this sidecar commits the change
        // itself, so its change stream wakes at once; other replicas would poll Redis).
        if pinned {
            pin(rs.pid(), &SERVER_CPU.to_string())?;
        }
        // And across replicas: the filter's sidecar is a second replica on the same Redis
        // (no sessions of its own); changes are committed through the first. The second
        // learns of them by polling Redis, then its change stream tells the filter.
        let replica = SeededSidecar::start(&rcfg.yaml, 0, &dir.0, "replica", nodelay)?;
        if pinned {
            pin(replica.pid(), &SERVER_CPU.to_string())?;
        }
        let mut next = 0;
        for (via, other) in [
            ("filter, Redis databroker", None),
            (
                "filter, Redis, change made on another replica",
                Some(&replica),
            ),
        ] {
            let rows = revocations_through(
                via, &filter, &rcfg, &mut rs, other, &mut next, &warm, p.trials, pinned,
            )?;
            passed(
                &mut checks,
                format!(
                    "6 revocation ({via}): every one of {} sign-outs (302) and {} group removals (403) was denied on both workers",
                    p.trials, p.trials
                ),
            );
            revocations.extend(rows);
        }
    }

    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let meta = Meta {
        mode: p.mode.to_owned(),
        date: command_text("date", &["-u", "+%Y-%m-%d"]),
        finished: command_text("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        elapsed_s: started.elapsed().as_secs(),
        rounds: p.rounds,
        seconds: p.seconds,
        open_seconds: p.open_seconds,
        connections: p.connections,
        open_connections: p.open_connections,
        miss_per_run: p.miss_per_run as u64,
        pinned,
        cores,
        cpu_model: cpu_model(),
        envoy_version: {
            let v = command_text(&envoy_path().display().to_string(), &["--version"]);
            v.split_once("version: ")
                .map_or(v.clone(), |(_, rest)| rest.to_owned())
        },
        wrk_version: command_text("wrk", &["--version"])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        redis_version: command_text("redis-server", &["--version"]),
        wasm_bytes: std::fs::metadata(&wasm).map_or(0, |m| m.len()),
        load_before: load_before.trim().to_owned(),
        load_after: load_after.trim().to_owned(),
        half_rate: half,
    };
    let results = Results {
        rows,
        closed: closed_runs,
        open: open_runs,
        not_measured: not_measured
            .into_iter()
            .map(|(id, name, why)| (id.to_owned(), name.to_owned(), why))
            .collect(),
        revocations,
        memory,
        checks,
        notes,
        meta,
    };
    let mut text = report::markdown(&results);
    // Scenario 7 (scale) comes from the criterion benches `make bench` ran before this
    // binary, plus the filter's memory per session measured in the wasmtime host. Not in
    // smoke runs: there the harness is a debug build and no criterion bench ran.
    if p.mode != "smoke" {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        );
        let section = scale::collect(&target_dir)?;
        let rows: String = section
            .headline()
            .into_iter()
            .map(|(what, value, goal, met)| {
                let met = match met {
                    Some(true) => "met",
                    Some(false) => "**not met**",
                    None => "",
                };
                format!("\n| 7 {what} | {value} | {goal} | {met} |")
            })
            .collect();
        if let Some(end) = text.find("\n\n## Scenarios") {
            text.insert_str(end, &rows);
        }
        text.push('\n');
        text.push_str(&section.markdown());
    }
    let plot = svg::plot(&results);
    std::fs::create_dir_all(out_dir)?;
    let stem = if p.mode == "full" {
        results.meta.date.clone()
    } else {
        format!("{}-{}", p.mode, results.meta.date)
    };
    let md = out_dir.join(format!("{stem}.md"));
    let svg_path = out_dir.join(format!("{stem}.svg"));
    std::fs::write(&md, text.replace("PLOT.svg", &format!("{stem}.svg")))
        .with_context(|| format!("writing {}", md.display()))?;
    std::fs::write(&svg_path, plot).with_context(|| format!("writing {}", svg_path.display()))?;
    println!("{}", text.replace("PLOT.svg", &format!("{stem}.svg")));
    eprintln!(
        "results: {} and {} ({} s)",
        md.display(),
        svg_path.display(),
        started.elapsed().as_secs()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_memory_from_redis_info() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n";
        assert_eq!(parse_used_memory(info).unwrap(), 1_048_576);
        assert!(parse_used_memory("# Memory\r\n").is_err());
    }

    #[test]
    fn modes_reserve_enough_sessions() {
        for mode in ["full", "quick", "smoke"] {
            let p = Params::for_mode(mode).unwrap();
            let used = FIRST_POOL_SESSION
                + REVOCATION_VIAS * (2 * p.trials + 1)
                + usize::try_from(p.rounds).unwrap() * p.miss_per_run
                + p.miss_per_run / 4
                + 2;
            assert!(p.sessions >= used, "{mode}: {} < {used}", p.sessions);
            assert!(
                p.redis_sessions > 4 * p.trials + 1,
                "{mode}: Redis revocation trials"
            );
        }
        assert!(Params::for_mode("fast").is_err());
        assert_eq!(Params::for_mode("full").unwrap().sessions, 100_000);
    }

    #[test]
    fn requests_differ_only_in_the_credential() {
        let h = cookie_headers("_pomerium=a");
        let h2 = with_cookie(&h, "_pomerium=b");
        assert_eq!(h2.len(), 2);
        assert!(h2.contains(&("Cookie".to_owned(), "_pomerium=b".to_owned())));
        assert!(h2.contains(&("Host".to_owned(), ADMIN_HOST.to_owned())));
        let b = bearer_headers("tok");
        assert_eq!(b[0], h[0], "same host");
        assert_eq!(b[1], ("Authorization".to_owned(), "Bearer tok".to_owned()));
    }
}
