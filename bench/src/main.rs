//! `make bench`: what the Portcullis filter costs inside real Envoy, measured against bare
//! Envoy in the same run.
//!
//! Envoys (`--concurrency 1`, pinned to CPU 0) with the same listener and route layout:
//! one without any wasm filter, one with the release `filter.wasm`, one with a no-op
//! module. `wrk` (pinned to CPU 1, 16 keep-alive connections) loads the configurations in
//! interleaved rounds, because back-to-back runs of one configuration differ by about ±10 %
//! on this machine:
//!
//! - **bare**: bare Envoy, the same request as *cache hit* (host `app`, session cookie);
//! - **no-op wasm**: a proxy-wasm filter that continues every request (`bench/noop-filter`,
//!   when built): what Envoy's V8 wasm machinery costs by itself;
//! - **public**: the filter on a public route (the floor of the filter);
//! - **cache hit**: the filter on a protected route with a valid session already cached
//!   (cookie open, worker-cache hit, evaluation, identity headers added).
//!
//! The session is real for the filter: the fake sidecar of the filter's Envoy tests answers
//! the one miss, and the cookie is sealed with the plugin's `cookie_secret`. Everything runs
//! on loopback; Envoys and the sidecar are children/threads dropped at the end.
//!
//! Settings (environment): `BENCH_ROUNDS` (5), `BENCH_SECONDS` (6 per run),
//! `BENCH_CONNECTIONS` (16), `BENCH_REPORT` (`target/bench/report.md`), `BENCH_NO_PIN`
//! (set: no `taskset`). Envoy: `$PORTCULLIS_ENVOY`; module: `$PORTCULLIS_WASM`; no-op
//! module: `$BENCH_NOOP_WASM`, else `target/wasm32-wasip1/release/portcullis_bench_noop.wasm`
//! (skipped with a note when missing).

mod layout;
mod report;
mod wrk;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use proxy_wasm_test_host::envoy::{Envoy, envoy_path};
use proxy_wasm_test_host::fixtures::{self, User};
use proxy_wasm_test_host::sidecar::FakeSidecar;
use proxy_wasm_test_host::wasm_path;
use report::{Config, Run};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// CPU for Envoy and CPU for wrk when pinning.
const ENVOY_CPU: u32 = 0;
const WRK_CPU: u32 = 1;

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

/// Pin every thread of `pid` (threads started later inherit it).
fn pin(pid: u32, cpu: u32) -> Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()?;
    ensure!(
        out.status.success(),
        "taskset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A loopback port nobody listens on right now (for the upstream listener, which the
/// bootstrap must name before Envoy starts).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_envoy(filter: Option<&layout::Filter<'_>>, sidecar: &FakeSidecar) -> Result<Envoy> {
    let yaml = layout::bootstrap(filter, free_port()?, sidecar.addr());
    Envoy::start_bootstrap(&yaml, 1)
}

/// Check that each configuration exercises the path it claims before measuring it.
fn verify(bare: &Envoy, filtered: &Envoy, cookie: &str, sidecar: &FakeSidecar) -> Result<()> {
    let seen = |r: &proxy_wasm_test_host::http::Response| {
        r.header(layout::SEEN_EMAIL_HEADER).unwrap_or("").to_owned()
    };
    let r = bare.get("app.example.com", "/", &[("cookie", cookie)])?;
    ensure!(r.status == 200, "bare Envoy answered {}", r.status);
    // The filter is really there: no cookie on a protected route → sign-in.
    let r = filtered.get("app.example.com", "/", &[])?;
    ensure!(
        r.status == 302,
        "filter without cookie answered {} (expected a sign-in redirect):\n{}",
        r.status,
        filtered.log_tail()
    );
    let r = filtered.get("public.example.com", "/", &[("cookie", cookie)])?;
    ensure!(r.status == 200, "public route answered {}", r.status);
    // The one miss: the fake sidecar answers, the filter caches, the upstream sees identity.
    for attempt in ["miss", "hit"] {
        let r = filtered.get("app.example.com", "/", &[("cookie", cookie)])?;
        ensure!(
            r.status == 200 && seen(&r) == "bob@example.com",
            "protected route ({attempt}) answered {} with identity {:?}:\n{}",
            r.status,
            seen(&r),
            filtered.log_tail()
        );
    }
    let lookups = sidecar.session_lookups().len();
    ensure!(
        lookups == 1,
        "expected exactly one session lookup (the miss), the sidecar saw {lookups}"
    );
    Ok(())
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

fn main() -> Result<()> {
    let rounds = env_u64("BENCH_ROUNDS", 5)?.max(1);
    let seconds = env_u64("BENCH_SECONDS", 6)?.max(1);
    let connections = u32::try_from(env_u64("BENCH_CONNECTIONS", 16)?.max(1))?;
    let report_path = std::env::var_os("BENCH_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/bench/report.md"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("done.lua");

    ensure!(
        command_ok("wrk", &["--version"]) || command_text("wrk", &["--version"]).contains("wrk"),
        "wrk not found (apt-get install wrk; `make bench` installs it)"
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

    // The session: real bundle, real sealed cookie, fake sidecar answering the one miss.
    let (bundle, version) = fixtures::bundle(&fixtures::config_yaml(None))?;
    let sidecar = FakeSidecar::start(bundle.clone(), &version)?;
    let sid = fixtures::session_id(1);
    sidecar.put_session(&sid, User::new("bob@example.com", &["staff"]));
    let cookie = fixtures::cookie_header(&sid, now_s())?;
    let plugin_config = fixtures::plugin_config("portcullis-sidecar", Some(&bundle), "");
    let wasm_str = wasm.display().to_string();
    let filter = layout::Filter {
        wasm: &wasm_str,
        plugin_config: &plugin_config,
    };

    let noop_wasm = std::env::var_os("BENCH_NOOP_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join("target/wasm32-wasip1/release/portcullis_bench_noop.wasm")
        });
    let noop_str = noop_wasm.display().to_string();

    let bare = start_envoy(None, &sidecar).context("starting bare Envoy")?;
    let filtered = start_envoy(Some(&filter), &sidecar).context("starting Envoy + filter")?;
    let noop = if noop_wasm.is_file() {
        let f = layout::Filter {
            wasm: &noop_str,
            plugin_config: "",
        };
        Some(start_envoy(Some(&f), &sidecar).context("starting Envoy + no-op wasm")?)
    } else {
        eprintln!(
            "bench: {} missing (cargo build --release --target wasm32-wasip1 -p portcullis-bench-noop): no-op wasm floor skipped",
            noop_wasm.display()
        );
        None
    };
    if pinned {
        for envoy in [Some(&bare), Some(&filtered), noop.as_ref()]
            .into_iter()
            .flatten()
        {
            pin(envoy.pid(), ENVOY_CPU)?;
        }
    }
    verify(&bare, &filtered, &cookie, &sidecar)?;
    if let Some(n) = &noop {
        let r = n.get("app.example.com", "/", &[("cookie", &cookie)])?;
        ensure!(r.status == 200, "Envoy + no-op wasm answered {}", r.status);
    }

    // (configuration, its Envoy); the first is the baseline.
    let mut configs = vec![(
        Config {
            name: "bare Envoy",
            what: "no wasm filter; same request as cache hit",
            host: "app.example.com",
        },
        &bare,
    )];
    if let Some(n) = &noop {
        configs.push((
            Config {
                name: "no-op wasm filter",
                what: "continues every request: the V8 wasm floor",
                host: "app.example.com",
            },
            n,
        ));
    }
    configs.push((
        Config {
            name: "filter, public route",
            what: "strip headers, route by name, public → continue",
            host: "public.example.com",
        },
        &filtered,
    ));
    configs.push((
        Config {
            name: "filter, cache hit",
            what: "protected route: cookie open, worker-cache hit, evaluate, identity headers",
            host: "app.example.com",
        },
        &filtered,
    ));
    let load = |i: usize, duration: Duration| -> Result<(wrk::Sample, u64)> {
        let (config, envoy) = configs
            .get(i)
            .ok_or_else(|| anyhow!("no configuration {i}"))?;
        let host = config.host;
        let before = cpu_time_us(envoy.pid(), ticks_per_s)?;
        let sample = wrk::run(&wrk::Load {
            addr: envoy.addr,
            host,
            cookie: &cookie,
            connections,
            duration,
            cpu: pinned.then_some(WRK_CPU),
            script: &script,
        })?;
        let cpu = cpu_time_us(envoy.pid(), ticks_per_s)?.saturating_sub(before);
        if sample.status_errors > 0 {
            bail!(
                "{host}: {} answers were not 2xx/3xx — not the path being measured:\n{}",
                sample.status_errors,
                envoy.log_tail()
            );
        }
        Ok((sample, cpu))
    };

    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "bench: {rounds} rounds × {} configurations × {seconds}s, {connections} connections, pinned: {pinned}",
        configs.len()
    );
    // Warm-up: connections, V8 tiers, caches.
    for i in 0..configs.len() {
        load(i, Duration::from_secs(2))?;
    }
    let lookups_before = sidecar.session_lookups().len();
    let mut runs = Vec::new();
    for round in 0..rounds {
        // Rotate the order each round so no configuration always runs first or last.
        for k in 0..configs.len() {
            let i = (k + usize::try_from(round)?) % configs.len();
            let (sample, cpu_us) = load(i, Duration::from_secs(seconds))?;
            eprintln!(
                "round {} {:<22} {:>9.0} req/s  p50 {:>5} µs  p99 {:>5} µs  Envoy CPU {:>5.1} µs/req",
                round + 1,
                configs.get(i).map_or("", |c| c.0.name),
                sample.rps(),
                sample.p50_us,
                sample.p99_us,
                cpu_us as f64 / sample.requests.max(1) as f64
            );
            runs.push(Run {
                round,
                config: i,
                sample,
                envoy_cpu_us: cpu_us,
            });
        }
    }
    let lookups_during = sidecar
        .session_lookups()
        .len()
        .saturating_sub(lookups_before);
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let meta = report::Meta {
        finished: command_text("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        rounds,
        seconds,
        connections,
        pinned,
        cores,
        envoy_version: {
            let v = command_text(&envoy_path().display().to_string(), &["--version"]);
            // `<path>  version: <sha>/<version>/...`: keep what follows `version: `.
            v.split_once("version: ")
                .map_or(v.clone(), |(_, rest)| rest.to_owned())
        },
        wrk_version: command_text("wrk", &["--version"])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        wasm_bytes: std::fs::metadata(&wasm).map_or(0, |m| m.len()),
        load_before: load_before.trim().to_owned(),
        load_after: load_after.trim().to_owned(),
        sidecar_lookups_during: lookups_during,
    };
    let configs: Vec<Config> = configs.into_iter().map(|(c, _)| c).collect();
    let text = report::markdown(&configs, &runs, &meta);
    println!("{text}");
    if let Some(dir) = report_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&report_path, &text)
        .with_context(|| format!("writing {}", report_path.display()))?;
    eprintln!("report written to {}", report_path.display());
    Ok(())
}
