//! Aggregating the runs into the results file: goals (ratios of this run) first, then the
//! absolute figures, every run, and the machine.

use crate::openloop::{OpenSample, percentile};
use crate::wrk::Sample;
use std::fmt::Write as _;

/// One scenario row.
#[derive(Debug, Clone)]
pub struct ScenarioRow {
    /// Scenario number of the issue (`1` … `5`) or `ref` for the no-op reference.
    pub id: &'static str,
    /// Label.
    pub name: &'static str,
    /// What a request exercises.
    pub what: &'static str,
}

impl ScenarioRow {
    /// A row.
    pub fn new(id: &'static str, name: &'static str, what: &'static str) -> ScenarioRow {
        ScenarioRow { id, name, what }
    }
}

/// One closed-loop (wrk) run.
#[derive(Debug, Clone, Copy)]
pub struct ClosedRun {
    /// Round (0-based).
    pub round: u64,
    /// Index into the rows; 0 is bare Envoy.
    pub config: usize,
    /// What wrk measured.
    pub sample: Sample,
    /// Envoy + sidecar user+system CPU time during the run.
    pub cpu_us: u64,
    /// Session lookups the sidecar served during the run.
    pub lookups: u64,
}

impl ClosedRun {
    /// CPU per request, µs.
    pub fn cpu_per_request_us(&self) -> f64 {
        self.cpu_us as f64 / self.sample.requests.max(1) as f64
    }

    /// Requests per CPU-second (Envoy + sidecar).
    pub fn per_cpu_second(&self) -> f64 {
        self.sample.requests as f64 * 1e6 / self.cpu_us.max(1) as f64
    }
}

/// One open-loop run.
#[derive(Debug, Clone, Copy)]
pub struct OpenRun {
    /// Round (0-based).
    pub round: u64,
    /// Index into the rows.
    pub config: usize,
    /// What the generator measured.
    pub sample: OpenSample,
}

/// Scenario 6, one kind of change.
#[derive(Debug, Clone)]
pub struct RevocationRow {
    /// What enforces it: `filter` / `ext_authz HTTP`.
    pub via: &'static str,
    /// `sign-out` / `group removal`.
    pub kind: &'static str,
    /// Status of a denied request.
    pub denied: u16,
    /// Commit → denied on every worker, per trial, µs.
    pub micros: Vec<u64>,
}

/// Sidecar memory with one databroker.
#[derive(Debug, Clone)]
pub struct MemoryRow {
    /// `memory` / `redis`.
    pub backend: &'static str,
    /// Sessions seeded.
    pub sessions: u64,
    /// Sidecar RSS before seeding, KiB.
    pub sidecar_kb_before: u64,
    /// Sidecar RSS after seeding, KiB.
    pub sidecar_kb_after: u64,
    /// Redis `used_memory` before, bytes.
    pub redis_bytes_before: Option<u64>,
    /// Redis `used_memory` after, bytes.
    pub redis_bytes_after: Option<u64>,
    /// Seeding time.
    pub seed_ms: u64,
}

/// Facts about the run.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// `full`, `quick`, `smoke`.
    pub mode: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// When it finished.
    pub finished: String,
    /// Wall time of the whole run.
    pub elapsed_s: u64,
    /// Rounds.
    pub rounds: u64,
    /// Seconds per closed-loop run.
    pub seconds: u64,
    /// Seconds per open-loop run.
    pub open_seconds: u64,
    /// wrk connections.
    pub connections: u32,
    /// Open-loop connections.
    pub open_connections: u32,
    /// Fresh sessions per cache-miss run.
    pub miss_per_run: u64,
    /// Envoy/sidecar on CPU 0, load on CPU 1.
    pub pinned: bool,
    /// CPUs visible.
    pub cores: usize,
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// `envoy --version`.
    pub envoy_version: String,
    /// `wrk --version`.
    pub wrk_version: String,
    /// `redis-server --version`.
    pub redis_version: String,
    /// filter.wasm size.
    pub wasm_bytes: u64,
    /// `/proc/loadavg` before.
    pub load_before: String,
    /// `/proc/loadavg` after.
    pub load_after: String,
    /// The open-loop rate (half of bare Envoy's closed-loop req/s).
    pub half_rate: f64,
}

/// Everything the report is made of.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Measured configurations; index 0 is bare Envoy.
    pub rows: Vec<ScenarioRow>,
    /// Closed-loop runs.
    pub closed: Vec<ClosedRun>,
    /// Open-loop runs.
    pub open: Vec<OpenRun>,
    /// (id, name, why) of scenarios not measured.
    pub not_measured: Vec<(String, String, String)>,
    /// Scenario 6.
    pub revocations: Vec<RevocationRow>,
    /// Sidecar memory.
    pub memory: Vec<MemoryRow>,
    /// Checks that passed.
    pub checks: Vec<String>,
    /// Notes (skipped parts).
    pub notes: Vec<String>,
    /// The machine and the run.
    pub meta: Meta,
}

/// Median (upper median for even counts); 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Median and range over rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub lo: f64,
    /// Largest.
    pub hi: f64,
}

impl Spread {
    /// Of some values; `None` for none.
    pub fn of(v: &[f64]) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(*x), hi.max(*x))
            });
        Some(Spread {
            median: median(v.to_vec()),
            lo,
            hi,
        })
    }

    fn ratio(&self) -> String {
        format!("{:.2}× ({:.2}–{:.2})", self.median, self.lo, self.hi)
    }

    fn micros(&self) -> String {
        format!("{:+.0} ({:+.0} to {:+.0})", self.median, self.lo, self.hi)
    }
}

/// Per-round values `f(a) / f(b)` for configurations `a` and `b` (by row id).
pub fn per_round_ratio(r: &Results, a: &str, b: &str, f: fn(&ClosedRun) -> f64) -> Vec<f64> {
    let (Some(ia), Some(ib)) = (index(r, a), index(r, b)) else {
        return Vec::new();
    };
    r.closed
        .iter()
        .filter(|x| x.config == ia)
        .filter_map(|x| {
            let y = r
                .closed
                .iter()
                .find(|y| y.config == ib && y.round == x.round)?;
            let d = f(y);
            (d > 0.0).then(|| f(x) / d)
        })
        .collect()
}

/// Per-round open-loop p99 of `a` minus that of `b`, µs.
pub fn per_round_added_p99(r: &Results, a: usize, b: usize) -> Vec<f64> {
    r.open
        .iter()
        .filter(|x| x.config == a)
        .filter_map(|x| {
            let y = r
                .open
                .iter()
                .find(|y| y.config == b && y.round == x.round)?;
            Some(x.sample.p99_us as f64 - y.sample.p99_us as f64)
        })
        .collect()
}

fn index(r: &Results, id: &str) -> Option<usize> {
    r.rows.iter().position(|row| row.id == id)
}

/// One configuration summarised over rounds.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Row.
    pub row: ScenarioRow,
    /// Closed-loop req/s (medians and range).
    pub rps: Spread,
    /// Per-round req/s ratio vs bare.
    pub rps_ratio: Option<Spread>,
    /// Closed-loop p50 (median over rounds).
    pub p50: f64,
    /// Closed-loop p99 (median over rounds).
    pub p99: f64,
    /// CPU µs per request (Envoy + sidecar).
    pub cpu_per_req: f64,
    /// Per-round bare CPU/req ÷ this CPU/req.
    pub cpu_ratio: Option<Spread>,
    /// Requests per CPU-second.
    pub per_cpu: f64,
    /// Sidecar lookups per request.
    pub lookups_per_req: f64,
    /// Open loop, if measured.
    pub open: Option<OpenSummary>,
}

/// Open-loop figures of one configuration.
#[derive(Debug, Clone, Copy)]
pub struct OpenSummary {
    /// Achieved rate (median).
    pub achieved: f64,
    /// p50 (median over rounds).
    pub p50: f64,
    /// p99 (median over rounds).
    pub p99: f64,
    /// p99.9 (median over rounds).
    pub p999: f64,
    /// Per-round p99 − bare's p99.
    pub added_p99: Option<Spread>,
    /// Kept up with the schedule in every round.
    pub kept_up: bool,
}

/// Summaries of every measured configuration, in row order.
pub fn summarize(r: &Results) -> Vec<Summary> {
    r.rows
        .iter()
        .enumerate()
        .filter_map(|(i, row)| {
            let mine: Vec<&ClosedRun> = r.closed.iter().filter(|x| x.config == i).collect();
            let rps = Spread::of(&mine.iter().map(|x| x.sample.rps()).collect::<Vec<_>>())?;
            let base = r.rows.first().map_or("1", |b| b.id);
            let rps_ratio = (i != 0)
                .then(|| Spread::of(&per_round_ratio(r, row.id, base, |x| x.sample.rps())))
                .flatten();
            let cpu_ratio = (i != 0)
                .then(|| {
                    Spread::of(&per_round_ratio(r, base, row.id, |x| {
                        x.cpu_per_request_us()
                    }))
                })
                .flatten();
            let requests: u64 = mine.iter().map(|x| x.sample.requests).sum();
            let lookups: u64 = mine.iter().map(|x| x.lookups).sum();
            let opens: Vec<&OpenRun> = r.open.iter().filter(|x| x.config == i).collect();
            let open = (!opens.is_empty()).then(|| OpenSummary {
                achieved: median(opens.iter().map(|x| x.sample.rps()).collect()),
                p50: median(opens.iter().map(|x| x.sample.p50_us as f64).collect()),
                p99: median(opens.iter().map(|x| x.sample.p99_us as f64).collect()),
                p999: median(opens.iter().map(|x| x.sample.p999_us as f64).collect()),
                added_p99: (i != 0)
                    .then(|| Spread::of(&per_round_added_p99(r, i, 0)))
                    .flatten(),
                kept_up: opens.iter().all(|x| x.sample.kept_up()),
            });
            Some(Summary {
                row: row.clone(),
                rps,
                rps_ratio,
                p50: median(mine.iter().map(|x| x.sample.p50_us as f64).collect()),
                p99: median(mine.iter().map(|x| x.sample.p99_us as f64).collect()),
                cpu_per_req: median(mine.iter().map(|x| x.cpu_per_request_us()).collect()),
                cpu_ratio,
                per_cpu: median(mine.iter().map(|x| x.per_cpu_second()).collect()),
                lookups_per_req: lookups as f64 / requests.max(1) as f64,
                open,
            })
        })
        .collect()
}

/// p50, p99, max of revocation times (µs).
pub fn revocation_stats(micros: &[u64]) -> (u64, u64, u64) {
    let mut v = micros.to_vec();
    v.sort_unstable();
    (
        percentile(&v, 50.0),
        percentile(&v, 99.0),
        v.last().copied().unwrap_or(0),
    )
}

/// One goal of the issue, evaluated on this run.
#[derive(Debug, Clone)]
pub struct Goal {
    /// What is compared.
    pub what: String,
    /// The measured value, formatted; `None` = not measured.
    pub measured: Option<String>,
    /// The target, formatted.
    pub target: String,
    /// Met?
    pub met: Option<bool>,
}

/// The goals on this run's numbers.
pub fn goals(r: &Results, s: &[Summary]) -> Vec<Goal> {
    let by = |id: &str| s.iter().find(|x| x.row.id == id);
    let mut out = Vec::new();
    let ratio_goal = |what: &str, v: Vec<f64>, min: f64, target: &str| {
        let sp = Spread::of(&v);
        Goal {
            what: what.to_owned(),
            measured: sp.map(|x| x.ratio()),
            target: target.to_owned(),
            met: sp.map(|x| x.median >= min),
        }
    };
    out.push(ratio_goal(
        "2 ÷ 1 requests/s (filter, cache hit ÷ bare Envoy)",
        per_round_ratio(r, "2", "1", |x| x.sample.rps()),
        0.85,
        "≥ 0.85×",
    ));
    let added = by("2").and_then(|x| x.open).and_then(|o| o.added_p99);
    out.push(Goal {
        what: format!(
            "2 − 1 p99 at half load ({:.0} req/s, open loop)",
            r.meta.half_rate
        ),
        measured: added.map(|a| format!("{} µs", a.micros())),
        target: "≤ +100 µs".to_owned(),
        met: added.map(|a| a.median <= 100.0),
    });
    for (id, label) in [("3 HTTP", "HTTP"), ("3 gRPC", "gRPC")] {
        out.push(ratio_goal(
            &format!("2 ÷ 3 requests/s per CPU (ext_authz {label}; Envoy + sidecar CPU)"),
            per_round_ratio(r, "2", id, |x| x.per_cpu_second()),
            2.0,
            "≥ 2×",
        ));
    }
    out.push(ratio_goal(
        "2 ÷ 4 requests/s (filter ÷ jwt_authn)",
        per_round_ratio(r, "2", "4", |x| x.sample.rps()),
        1.0,
        "≥ 1×",
    ));
    for rv in &r.revocations {
        let (_, p99, _) = revocation_stats(&rv.micros);
        out.push(Goal {
            what: format!(
                "6 {} ({}): commit → denied on every worker, p99 of {}",
                rv.kind,
                rv.via,
                rv.micros.len()
            ),
            measured: Some(format!("{:.1} ms", p99 as f64 / 1000.0)),
            target: "≤ 1 s".to_owned(),
            met: Some(p99 <= 1_000_000),
        });
    }
    out
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// The results file (Markdown). `PLOT.svg` stands for the plot's file name.
pub fn markdown(r: &Results) -> String {
    let m = &r.meta;
    let s = summarize(r);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Portcullis benchmark — {} ({} run)\n",
        m.date, m.mode
    );
    if m.mode != "full" {
        let _ = writeln!(
            out,
            "**A `{}` run: shortened (fewer rounds, seconds, sessions, trials) — it proves the harness works; its numbers are not the benchmark.**\n",
            m.mode
        );
    }
    let _ = writeln!(
        out,
        "Issue 7's scenarios in one interleaved run: {} rounds; each round loads every configuration once (order rotated) with wrk for {} s ({} keep-alive connections, closed loop), then at **half of bare Envoy's rate** ({:.0} req/s) with an open-loop generator for {} s ({} connections). Envoys `--concurrency 1`{}. Every ratio is computed per round against the other configuration of the same round, then the median (min–max over rounds). Method and caveats: `docs/benchmarks.md`.\n",
        m.rounds,
        m.seconds,
        m.connections,
        m.half_rate,
        m.open_seconds,
        m.open_connections,
        if m.pinned {
            "; Envoy and the sidecar pinned to CPU 0, load generators to CPU 1"
        } else {
            "; **not pinned**"
        },
    );
    let _ = writeln!(out, "![requests/s and p99 per scenario](PLOT.svg)\n");

    let _ = writeln!(out, "## Goals\n");
    let _ = writeln!(out, "| goal | measured | target | |");
    let _ = writeln!(out, "|---|---:|---:|---|");
    for g in goals(r, &s) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            g.what,
            g.measured.as_deref().unwrap_or("not measured"),
            g.target,
            match g.met {
                Some(true) => "met",
                Some(false) => "**not met**",
                None => "—",
            }
        );
    }

    let _ = writeln!(out, "\n## Scenarios (closed loop: maximum throughput)\n");
    let _ = writeln!(
        out,
        "| # | configuration | req/s | × bare req/s | p50 µs | p99 µs | CPU µs/req | × bare by CPU | req per CPU-second | sidecar lookups/req |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for x in &s {
        let _ = writeln!(
            out,
            "| {} | {} — {} | {:.0} | {} | {:.0} | {:.0} | {:.1} | {} | {:.0} | {:.3} |",
            x.row.id,
            x.row.name,
            x.row.what,
            x.rps.median,
            x.rps_ratio.map_or("1.00×".to_owned(), |v| v.ratio()),
            x.p50,
            x.p99,
            x.cpu_per_req,
            x.cpu_ratio.map_or("1.00×".to_owned(), |v| v.ratio()),
            x.per_cpu,
            x.lookups_per_req
        );
    }
    for (id, name, why) in &r.not_measured {
        let _ = writeln!(out, "| {id} | {name} | {why} | | | | | | | |");
    }
    let _ = writeln!(
        out,
        "\nCPU = Envoy's + the sidecar's user+system time (`/proc/<pid>/stat`) per request; \"× bare by CPU\" = bare's CPU/req ÷ this CPU/req (the throughput ratio with a core to itself, steadier than req/s when other processes share the core); \"req per CPU-second\" = requests ÷ (Envoy + sidecar) CPU seconds. Scenario 5 runs {} fresh sessions per round (each seen once) and stops.\n",
        m.miss_per_run
    );

    let _ = writeln!(
        out,
        "## At half load ({:.0} req/s, open loop; latency from the scheduled send time)\n",
        m.half_rate
    );
    let _ = writeln!(
        out,
        "| # | configuration | achieved req/s | p50 µs | p99 µs | p99.9 µs | added p99 vs bare µs |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for x in &s {
        if let Some(o) = x.open {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0}{} | {:.0} | {:.0} | {:.0} | {} |",
                x.row.id,
                x.row.name,
                o.achieved,
                if o.kept_up { "" } else { " (fell behind)" },
                o.p50,
                o.p99,
                o.p999,
                o.added_p99.map_or("—".to_owned(), |a| a.micros())
            );
        }
    }

    let _ = writeln!(out, "\n## Revocation (scenario 6: Envoy with 2 workers)\n");
    let _ = writeln!(
        out,
        "| change | via | trials | denied with | p50 ms | p99 ms | max ms |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for rv in &r.revocations {
        let (p50, p99, max) = revocation_stats(&rv.micros);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            rv.kind,
            rv.via,
            rv.micros.len(),
            rv.denied,
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            max as f64 / 1000.0
        );
    }
    let _ = writeln!(
        out,
        "\nTime from the sidecar's databroker commit (sign-out: the session deleted; group removal: `admins` removed from the session's user info, as the identity manager does) to the first denied request on *each* of Envoy's 2 workers (one keep-alive connection per worker, polled back to back), the later of the two.\n"
    );

    let _ = writeln!(out, "## Sidecar memory\n");
    let _ = writeln!(
        out,
        "| databroker | sessions | sidecar RSS before → after | sidecar per 100 000 sessions | Redis used_memory before → after | Redis per 100 000 sessions | seeding |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for mrow in &r.memory {
        let per = |delta: f64| delta * 100_000.0 / mrow.sessions.max(1) as f64;
        let side = mrow.sidecar_kb_after.saturating_sub(mrow.sidecar_kb_before) as f64;
        let redis = match (mrow.redis_bytes_before, mrow.redis_bytes_after) {
            (Some(b), Some(a)) => (
                format!("{} → {}", mib(b as f64 / 1024.0), mib(a as f64 / 1024.0)),
                mib(per(a.saturating_sub(b) as f64 / 1024.0)),
            ),
            _ => ("—".to_owned(), "—".to_owned()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} → {} | {} | {} | {} | {:.1} s |",
            mrow.backend,
            mrow.sessions,
            mib(mrow.sidecar_kb_before as f64),
            mib(mrow.sidecar_kb_after as f64),
            mib(per(side)),
            redis.0,
            redis.1,
            mrow.seed_ms as f64 / 1000.0
        );
    }
    let _ = writeln!(
        out,
        "\nEach session a distinct user (a user record too), created with `SessionService::create_session` as the login callback does; ID token of a realistic size (~1 KB). Per 100 000 = the increase scaled linearly{}.\n",
        if r.memory.iter().any(|x| x.sessions < 100_000) {
            " (**fewer sessions were seeded in this run**)"
        } else {
            ""
        }
    );

    let _ = writeln!(out, "## Checks (all passed: the run aborts otherwise)\n");
    for c in &r.checks {
        let _ = writeln!(out, "- passed: {c}");
    }
    let _ = writeln!(
        out,
        "- while measuring: every answer of every run was 200 (wrk's Lua hook and the open-loop generator count the others; any aborts the run)"
    );
    for n in &r.notes {
        let _ = writeln!(out, "- note: {n}");
    }

    let _ = writeln!(out, "\n## Every run\n");
    let _ = writeln!(
        out,
        "| round | # | requests | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | CPU µs/req | lookups |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for x in &r.closed {
        let q = &x.sample;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.1} | {} |",
            x.round + 1,
            r.rows.get(x.config).map_or("?", |c| c.id),
            q.requests,
            q.rps(),
            q.p50_us,
            q.p90_us,
            q.p99_us,
            q.p999_us,
            q.max_us,
            x.cpu_per_request_us(),
            x.lookups
        );
    }
    let _ = writeln!(
        out,
        "\n| round | # (open loop) | requests | achieved req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for x in &r.open {
        let q = &x.sample;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            x.round + 1,
            r.rows.get(x.config).map_or("?", |c| c.id),
            q.completed,
            q.rps(),
            q.p50_us,
            q.p90_us,
            q.p99_us,
            q.p999_us,
            q.max_us
        );
    }

    let _ = writeln!(out, "\n## Machine\n");
    let _ = writeln!(out, "- CPU: {} ({} CPUs visible)", m.cpu_model, m.cores);
    let _ = writeln!(
        out,
        "- load average before: `{}`, after: `{}`",
        m.load_before, m.load_after
    );
    let _ = writeln!(out, "- Envoy: `{}`", m.envoy_version);
    let _ = writeln!(out, "- wrk: `{}`", m.wrk_version);
    let _ = writeln!(out, "- Redis: `{}`", m.redis_version);
    let _ = writeln!(out, "- filter.wasm: {} bytes", m.wasm_bytes);
    let _ = writeln!(out, "- finished {} after {} s", m.finished, m.elapsed_s);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn closed(round: u64, config: usize, requests: u64, cpu: u64) -> ClosedRun {
        ClosedRun {
            round,
            config,
            sample: Sample {
                requests,
                duration_us: 1_000_000,
                p50_us: 100,
                p99_us: 300,
                ..Default::default()
            },
            cpu_us: cpu,
            lookups: 0,
        }
    }

    fn open(round: u64, config: usize, p99: u64) -> OpenRun {
        OpenRun {
            round,
            config,
            sample: OpenSample {
                target_rps: 100.0,
                completed: 100,
                duration_us: 1_000_000,
                p99_us: p99,
                ..Default::default()
            },
        }
    }

    pub(crate) fn results() -> Results {
        Results {
            rows: vec![
                ScenarioRow::new("1", "bare", "b"),
                ScenarioRow::new("2", "filter", "f"),
                ScenarioRow::new("4", "jwt", "j"),
            ],
            // Round 1 is twice as fast overall; the per-round ratio is 0.5 both times.
            closed: vec![
                closed(0, 0, 1000, 10_000),
                closed(0, 1, 500, 10_000),
                closed(0, 2, 250, 10_000),
                closed(1, 0, 2000, 20_000),
                closed(1, 1, 1000, 20_000),
                closed(1, 2, 500, 20_000),
            ],
            open: vec![
                open(0, 0, 200),
                open(0, 1, 260),
                open(1, 0, 1000),
                open(1, 1, 1150),
            ],
            not_measured: vec![("3".into(), "ext_authz".into(), "not measured: x".into())],
            revocations: vec![RevocationRow {
                via: "filter",
                kind: "sign-out",
                denied: 302,
                micros: (1..=100).map(|i| i * 1000).collect(),
            }],
            memory: vec![MemoryRow {
                backend: "memory",
                sessions: 1000,
                sidecar_kb_before: 10_240,
                sidecar_kb_after: 11_264,
                redis_bytes_before: None,
                redis_bytes_after: None,
                seed_ms: 100,
            }],
            checks: vec!["2 filter: 302 without cookie".into()],
            notes: vec![],
            meta: Meta {
                mode: "smoke".into(),
                half_rate: 750.0,
                ..Default::default()
            },
        }
    }

    #[test]
    fn median_is_the_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn ratios_are_against_the_same_round() {
        let r = results();
        assert_eq!(
            per_round_ratio(&r, "2", "1", |x| x.sample.rps()),
            vec![0.5, 0.5]
        );
        assert_eq!(
            per_round_ratio(&r, "2", "4", |x| x.sample.rps()),
            vec![2.0, 2.0]
        );
        assert!(per_round_ratio(&r, "2", "3 HTTP", |x| x.sample.rps()).is_empty());
        // Added p99: 60 in round 0, 150 in round 1 (never a difference across rounds).
        assert_eq!(per_round_added_p99(&r, 1, 0), vec![60.0, 150.0]);
        let s = summarize(&r);
        let f = &s[1];
        assert_eq!(f.rps_ratio.unwrap().median, 0.5);
        // 10 µs/req bare, 20 µs/req with the filter: half the throughput per core.
        assert_eq!(f.cpu_per_req, 20.0);
        assert_eq!(f.cpu_ratio.unwrap().median, 0.5);
        assert_eq!(f.per_cpu, 50_000.0);
        assert_eq!(f.open.unwrap().added_p99.unwrap().median, 150.0);
    }

    #[test]
    fn goals_say_met_not_met_and_not_measured() {
        let r = results();
        let g = goals(&r, &summarize(&r));
        assert_eq!(g[0].met, Some(false), "0.5 < 0.85");
        assert_eq!(g[1].met, Some(false), "+150 µs > 100");
        assert_eq!(g[2].met, None, "no ext_authz");
        assert_eq!(g[4].met, Some(true), "2 ÷ 4 = 2");
        // p99 of 1..=100 ms is 99 ms.
        assert_eq!(g[5].measured.as_deref(), Some("99.0 ms"));
        assert_eq!(g[5].met, Some(true));
    }

    #[test]
    fn markdown_has_goals_first_then_every_section() {
        let text = markdown(&results());
        let goals = text.find("## Goals").unwrap();
        let scen = text.find("## Scenarios").unwrap();
        assert!(goals < scen);
        assert!(
            text.contains("| 2 | filter — f | 1000 | 0.50× (0.50–0.50) |"),
            "{text}"
        );
        assert!(text.contains("| 3 | ext_authz | not measured: x |"));
        assert!(text.contains("| sign-out | filter | 100 | 302 | 50.00 | 99.00 | 100.00 |"));
        // 1 MiB for 1000 sessions = 100 MiB per 100 000.
        assert!(text.contains("| 100.0 MiB |"), "{text}");
        assert!(text.contains("fewer sessions were seeded"));
        assert!(text.contains("- passed: 2 filter: 302 without cookie"));
        assert!(text.contains("not the benchmark"));
    }
}
