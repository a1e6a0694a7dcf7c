//! Aggregating the interleaved runs into the Markdown report.

use crate::wrk::Sample;
use std::fmt::Write as _;

/// One measured configuration.
pub struct Config {
    /// Table label.
    pub name: &'static str,
    /// What the request exercises.
    pub what: &'static str,
    /// `Host` of the request.
    pub host: &'static str,
}

/// One wrk run of one configuration in one round.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Round number (0-based).
    pub round: u64,
    /// Index into the configurations; 0 is bare Envoy, the baseline.
    pub config: usize,
    /// What wrk measured.
    pub sample: Sample,
    /// Envoy's user + system CPU time during the run.
    pub envoy_cpu_us: u64,
}

impl Run {
    fn cpu_per_request_us(&self) -> f64 {
        self.envoy_cpu_us as f64 / self.sample.requests.max(1) as f64
    }
}

/// Facts about the run printed with the table.
pub struct Meta {
    /// When it finished (`date -u`).
    pub finished: String,
    /// Rounds.
    pub rounds: u64,
    /// Seconds per run.
    pub seconds: u64,
    /// wrk connections.
    pub connections: u32,
    /// Whether Envoy and wrk were pinned to separate CPUs.
    pub pinned: bool,
    /// CPUs available.
    pub cores: usize,
    /// `envoy --version`.
    pub envoy_version: String,
    /// `wrk --version`.
    pub wrk_version: String,
    /// Size of filter.wasm.
    pub wasm_bytes: u64,
    /// `/proc/loadavg` before and after.
    pub load_before: String,
    /// `/proc/loadavg` after.
    pub load_after: String,
    /// Session lookups the sidecar answered while measuring (0 = every request was a hit).
    pub sidecar_lookups_during: usize,
}

/// Median (upper median for even counts); 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

/// The Markdown report: a summary table (medians over rounds; ratios vs bare Envoy of the
/// same round) and every run.
pub fn markdown(configs: &[Config], runs: &[Run], meta: &Meta) -> String {
    let baseline = |round: u64| {
        runs.iter()
            .find(|r| r.round == round && r.config == 0)
            .copied()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Portcullis benchmark: Envoy with and without the filter\n"
    );
    let _ = writeln!(
        out,
        "{} rounds × {} configurations × {} s, interleaved (order rotated each round); wrk, 1 thread, {} keep-alive connections; Envoy `--concurrency 1`; {}; {} CPUs visible. Ratios are per round against bare Envoy of the same round, then the median (min–max over rounds). CPU = Envoy's user+system time per request (both Envoy hops: the measured listener and the `direct_response` upstream listener); \"× bare by CPU\" = bare CPU/req ÷ this CPU/req, the throughput ratio of a core Envoy had to itself — steadier than req/s when other processes share Envoy's core.\n",
        meta.rounds,
        configs.len(),
        meta.seconds,
        meta.connections,
        if meta.pinned {
            "Envoy pinned to CPU 0, wrk to CPU 1 (`taskset`)"
        } else {
            "not pinned"
        },
        meta.cores,
    );
    let _ = writeln!(
        out,
        "| configuration | req/s | × bare req/s | p50 µs | p99 µs | Envoy CPU µs/req | added vs bare µs/req | × bare by CPU |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, c) in configs.iter().enumerate() {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.config == i).collect();
        let rps = median(mine.iter().map(|r| r.sample.rps()).collect());
        let p50 = median(mine.iter().map(|r| r.sample.p50_us as f64).collect());
        let p99 = median(mine.iter().map(|r| r.sample.p99_us as f64).collect());
        let cpu = median(mine.iter().map(|r| r.cpu_per_request_us()).collect());
        let pairs: Vec<(Run, Run)> = mine
            .iter()
            .filter_map(|r| Some((**r, baseline(r.round)?)))
            .collect();
        let ratios: Vec<f64> = pairs
            .iter()
            .map(|(r, b)| r.sample.rps() / b.sample.rps().max(f64::MIN_POSITIVE))
            .collect();
        let added: Vec<f64> = pairs
            .iter()
            .map(|(r, b)| r.cpu_per_request_us() - b.cpu_per_request_us())
            .collect();
        // Requests per second one whole core would serve, relative to bare Envoy: robust to
        // other processes taking CPU time from Envoy's core, which req/s is not.
        let cpu_ratios: Vec<f64> = pairs
            .iter()
            .map(|(r, b)| b.cpu_per_request_us() / r.cpu_per_request_us().max(f64::MIN_POSITIVE))
            .collect();
        let (lo, hi) = min_max(&ratios);
        let (clo, chi) = min_max(&cpu_ratios);
        let (ratio, added, cpu_ratio) = if i == 0 {
            ("1.00×".to_owned(), "—".to_owned(), "1.00×".to_owned())
        } else {
            (
                format!("{:.2}× ({lo:.2}–{hi:.2})", median(ratios.clone())),
                format!("{:+.1}", median(added)),
                format!("{:.2}× ({clo:.2}–{chi:.2})", median(cpu_ratios.clone())),
            )
        };
        let _ = writeln!(
            out,
            "| {} — {} | {rps:.0} | {ratio} | {p50:.0} | {p99:.0} | {cpu:.1} | {added} | {cpu_ratio} |",
            c.name, c.what
        );
    }
    let _ = writeln!(
        out,
        "\nSession lookups the sidecar answered during the measured rounds: {} (0 = every protected request was a cache hit).\n",
        meta.sidecar_lookups_during
    );
    let _ = writeln!(out, "## Every run\n");
    let _ = writeln!(
        out,
        "| round | configuration | requests | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | socket errors | Envoy CPU µs/req |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let s = &r.sample;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.round + 1,
            configs.get(r.config).map_or("?", |c| c.name),
            s.requests,
            s.rps(),
            s.p50_us,
            s.p90_us,
            s.p99_us,
            s.p999_us,
            s.max_us,
            s.socket_errors,
            r.cpu_per_request_us()
        );
    }
    let _ = writeln!(out, "\n## Environment\n");
    let _ = writeln!(out, "- finished: {}", meta.finished);
    let _ = writeln!(out, "- envoy: `{}`", meta.envoy_version);
    let _ = writeln!(out, "- wrk: `{}`", meta.wrk_version);
    let _ = writeln!(out, "- filter.wasm: {} bytes", meta.wasm_bytes);
    let _ = writeln!(
        out,
        "- load average before: `{}`, after: `{}` (the machine's 2 cores are shared with other processes: compare only numbers of one run)",
        meta.load_before, meta.load_after
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: u64, config: usize, requests: u64, cpu: u64) -> Run {
        Run {
            round,
            config,
            sample: Sample {
                requests,
                duration_us: 1_000_000,
                p50_us: 100,
                p99_us: 300,
                ..Default::default()
            },
            envoy_cpu_us: cpu,
        }
    }

    #[test]
    fn median_is_the_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn ratios_are_against_bare_of_the_same_round() {
        let configs = [
            Config {
                name: "bare",
                what: "b",
                host: "h",
            },
            Config {
                name: "filter",
                what: "f",
                host: "h",
            },
        ];
        // Round 1 is twice as fast overall; the per-round ratio is 0.5 both times.
        let runs = [
            run(0, 0, 1000, 10_000),
            run(0, 1, 500, 10_000),
            run(1, 0, 2000, 20_000),
            run(1, 1, 1000, 20_000),
        ];
        let meta = Meta {
            finished: String::new(),
            rounds: 2,
            seconds: 1,
            connections: 16,
            pinned: true,
            cores: 2,
            envoy_version: String::new(),
            wrk_version: String::new(),
            wasm_bytes: 0,
            load_before: String::new(),
            load_after: String::new(),
            sidecar_lookups_during: 0,
        };
        let text = markdown(&configs, &runs, &meta);
        assert!(text.contains("| 0.50× (0.50–0.50) |"), "{text}");
        // 10 µs/req bare, 20 µs/req with the filter.
        assert!(
            text.contains("| 20.0 | +10.0 | 0.50× (0.50–0.50) |"),
            "{text}"
        );
    }
}
