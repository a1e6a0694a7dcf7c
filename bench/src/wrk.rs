//! Running `wrk` (closed loop, pinned to the load core) and reading its `done`-hook line.

use anyhow::{Context as _, Result, anyhow, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What one run measured (latencies in microseconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Completed requests.
    pub requests: u64,
    /// Wall time of the run.
    pub duration_us: u64,
    /// Answers ≥ 400.
    pub status_errors: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
    /// Answers other than 200.
    pub non200: u64,
    /// Latency percentiles.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest request.
    pub max_us: u64,
}

impl Sample {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        if self.duration_us == 0 {
            return 0.0;
        }
        self.requests as f64 * 1e6 / self.duration_us as f64
    }
}

/// One load run's shape.
pub struct Load<'a> {
    /// Where Envoy listens.
    pub addr: SocketAddr,
    /// Request path.
    pub path: &'a str,
    /// Request headers (`Host` included).
    pub headers: &'a [(String, String)],
    /// Keep-alive connections.
    pub connections: u32,
    /// Run length.
    pub duration: Duration,
    /// CPU to pin wrk to (`taskset -c`), when pinning.
    pub cpu: Option<u32>,
    /// Nice value to run wrk at (`nice -n`), if any.
    pub nice: Option<&'a str>,
    /// The Lua script with the `done` hook (`done.lua`).
    pub script: &'a Path,
}

/// Run wrk once; errors when it fails or its summary line is missing.
pub fn run(load: &Load<'_>) -> Result<Sample> {
    let secs = load.duration.as_secs().max(1);
    // `[nice -n N] [taskset -c CPU] wrk …`
    let mut prefix: Vec<String> = Vec::new();
    if let Some(n) = load.nice {
        prefix.extend(["nice".into(), "-n".into(), n.to_owned()]);
    }
    if let Some(cpu) = load.cpu {
        prefix.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
    }
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg("wrk");
            c
        }
        None => Command::new("wrk"),
    };
    cmd.args(["-t", "1", "-c", &load.connections.to_string()])
        .args(["-d", &format!("{secs}s"), "--timeout", "5s"])
        .arg("-s")
        .arg(load.script);
    for (k, v) in load.headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.arg(format!("http://{}{}", load.addr, load.path));
    let out = cmd.output().context("running wrk (apt-get install wrk)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .ok_or_else(|| anyhow!("no summary line from wrk: {stdout}"))?;
    parse(line)
}

/// Parse `key=value` pairs of the `done` hook's line.
pub fn parse(line: &str) -> Result<Sample> {
    let mut s = Sample::default();
    for kv in line.split_whitespace() {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("bad field {kv:?}"))?;
        let v: u64 = v.parse().with_context(|| format!("bad value in {kv:?}"))?;
        let slot = match k {
            "requests" => &mut s.requests,
            "duration_us" => &mut s.duration_us,
            "status_errors" => &mut s.status_errors,
            "socket_errors" => &mut s.socket_errors,
            "non200" => &mut s.non200,
            "p50_us" => &mut s.p50_us,
            "p90_us" => &mut s.p90_us,
            "p99_us" => &mut s.p99_us,
            "p999_us" => &mut s.p999_us,
            "max_us" => &mut s.max_us,
            _ => continue,
        };
        *slot = v;
    }
    if s.requests == 0 || s.duration_us == 0 {
        bail!("wrk measured nothing: {line}");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_done_hook_line() {
        let s = parse("requests=1000 duration_us=2000000 status_errors=0 socket_errors=1 non200=3 p50_us=400 p90_us=600 p99_us=900 p999_us=1500 max_us=3000").unwrap();
        assert_eq!(s.requests, 1000);
        assert_eq!(s.p99_us, 900);
        assert_eq!(s.socket_errors, 1);
        assert_eq!(s.non200, 3);
        assert!((s.rps() - 500.0).abs() < 1e-9);
    }

    #[test]
    fn refuses_an_empty_run_and_garbage() {
        assert!(parse("requests=0 duration_us=5").is_err());
        assert!(parse("requests=x").is_err());
        assert!(parse("requests").is_err());
    }
}
