//! An open-loop, fixed-rate load generator (for "p99 at half load"), a closed-loop one
//! that sends each of a list of requests exactly once (the cache-miss scenario), and the
//! small keep-alive HTTP/1.1 client they and the revocation scenario use.
//!
//! Each connection has its own thread and a fixed schedule: request `k` of connection `c`
//! is due at `start + (c + k·C)/rate` (C connections, so the whole run is evenly spaced at
//! `rate`). A request is sent at its due time, or at once if the previous answer on that
//! connection came late, and its latency is counted **from the due time**: a stall delays
//! every request scheduled behind it, and all of them count (no coordinated omission, as
//! wrk2 does it). wrk cannot do this (closed loop: it measures at whatever rate the server
//! sustains).
//!
//! The generator's own delay (a thread woken ~50–100 µs late by the kernel timer) is part
//! of every latency it reports, for every configuration alike; "added p99 vs bare" is a
//! difference of two such p99s, so that bias cancels.

use anyhow::{Context as _, Result, anyhow, bail};
use std::io::{BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A raw HTTP/1.1 GET with keep-alive.
pub fn request_bytes(path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// One keep-alive connection.
pub struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connect (TCP_NODELAY).
    pub fn connect(addr: SocketAddr) -> Result<Conn> {
        let s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Send one request, read the whole answer; its status.
    pub fn roundtrip(&mut self, request: &[u8]) -> Result<u16> {
        self.writer.write_all(request)?;
        read_response(&mut self.reader)
    }
}

/// Read one HTTP/1.1 response (content-length or chunked body); its status.
pub fn read_response(r: &mut impl std::io::BufRead) -> Result<u16> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        bail!("connection closed");
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed in headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().context("content-length")?;
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .context("chunk size")?;
            // The chunk and its CRLF (the last chunk: just the final CRLF).
            std::io::copy(&mut r.by_ref().take(size as u64 + 2), &mut std::io::sink())?;
            if size == 0 {
                break;
            }
        }
    } else {
        std::io::copy(&mut r.by_ref().take(length as u64), &mut std::io::sink())?;
    }
    Ok(status)
}

/// The latencies of one open-loop run.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenSample {
    /// Target rate.
    pub target_rps: f64,
    /// Answered requests.
    pub completed: u64,
    /// Wall time.
    pub duration_us: u64,
    /// Answers other than 200.
    pub non200: u64,
    /// Connections that failed (each stops its schedule).
    pub errors: u64,
    /// Latency from the due time: median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
}

impl OpenSample {
    /// Achieved rate.
    pub fn rps(&self) -> f64 {
        if self.duration_us == 0 {
            return 0.0;
        }
        self.completed as f64 * 1e6 / self.duration_us as f64
    }

    /// The server kept up with the schedule (≥ 95 % of the target rate answered).
    pub fn kept_up(&self) -> bool {
        self.rps() >= 0.95 * self.target_rps
    }
}

/// The `p`-th percentile (nearest rank) of sorted values; 0 for none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len()) - 1)
        .copied()
        .unwrap_or(0)
}

/// Send `request` at `rate` per second over `connections` for `duration`.
pub fn run(
    addr: SocketAddr,
    request: &[u8],
    connections: u32,
    rate: f64,
    duration: Duration,
) -> Result<OpenSample> {
    if rate <= 0.0 || connections == 0 {
        bail!("open loop needs a rate and connections");
    }
    let conns = (0..connections)
        .map(|_| Conn::connect(addr))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + duration;
    // A server far slower than the rate would keep a connection busy for many windows:
    // stop sending after two. What was not sent is missing from the latencies, so such a
    // run's p99 is a lower bound; it is reported as "fell behind" (achieved < 95 %).
    let hard_end = start + 2 * duration;
    let step = Duration::from_secs_f64(f64::from(connections) / rate);
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let request = request.to_vec();
            let offset = Duration::from_secs_f64(c as f64 / rate);
            std::thread::spawn(move || -> (Vec<u64>, u64, bool) {
                let mut lat = Vec::new();
                let mut non200 = 0;
                let mut due = start + offset;
                while due < end {
                    let now = Instant::now();
                    if now > hard_end {
                        break;
                    }
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    match conn.roundtrip(&request) {
                        Ok(status) => {
                            if status != 200 {
                                non200 += 1;
                            }
                            let l = Instant::now().saturating_duration_since(due);
                            lat.push(u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
                        }
                        Err(_) => return (lat, non200, true),
                    }
                    due += step;
                }
                (lat, non200, false)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut s = OpenSample {
        target_rps: rate,
        ..Default::default()
    };
    for h in handles {
        let (lat, non200, failed) = h.join().map_err(|_| anyhow!("load thread died"))?;
        all.extend(lat);
        s.non200 += non200;
        s.errors += u64::from(failed);
    }
    // The schedule's window, or longer when the last answers came late.
    let elapsed = Instant::now()
        .saturating_duration_since(start)
        .max(duration);
    s.duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    all.sort_unstable();
    s.completed = all.len() as u64;
    s.p50_us = percentile(&all, 50.0);
    s.p90_us = percentile(&all, 90.0);
    s.p99_us = percentile(&all, 99.0);
    s.p999_us = percentile(&all, 99.9);
    s.max_us = all.last().copied().unwrap_or(0);
    Ok(s)
}

/// Send every request of `requests` exactly once, as fast as the server answers, over
/// `connections` keep-alive connections (closed loop: a connection sends its next request
/// when the previous answer arrived). wrk cannot do this: a script can stop its thread
/// after N answers, but wrk still waits out its whole `-d` and reports that as the
/// duration.
pub fn each_once(
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    connections: u32,
) -> Result<crate::wrk::Sample> {
    let conns = (0..connections)
        .map(|_| Conn::connect(addr))
        .collect::<Result<Vec<_>>>()?;
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (requests, next) = (requests.clone(), next.clone());
            std::thread::spawn(move || -> (Vec<u64>, u64, bool) {
                let mut lat = Vec::new();
                let mut non200 = 0;
                while let Some(req) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let t = Instant::now();
                    match conn.roundtrip(req) {
                        Ok(status) => {
                            non200 += u64::from(status != 200);
                            lat.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                        }
                        Err(_) => return (lat, non200, true),
                    }
                }
                (lat, non200, false)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut s = crate::wrk::Sample::default();
    for h in handles {
        let (lat, non200, failed) = h.join().map_err(|_| anyhow!("load thread died"))?;
        all.extend(lat);
        s.non200 += non200;
        s.socket_errors += u64::from(failed);
    }
    s.duration_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    all.sort_unstable();
    s.requests = all.len() as u64;
    s.p50_us = percentile(&all, 50.0);
    s.p90_us = percentile(&all, 90.0);
    s.p99_us = percentile(&all, 99.0);
    s.p999_us = percentile(&all, 99.9);
    s.max_us = all.last().copied().unwrap_or(0);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 99.9), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 99.0), 0);
    }

    #[test]
    fn reads_content_length_and_chunked_answers() {
        let text = b"HTTP/1.1 302 Found\r\ncontent-length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 403 X\r\n\r\n";
        let mut r = BufReader::new(&text[..]);
        assert_eq!(read_response(&mut r).unwrap(), 302);
        assert_eq!(read_response(&mut r).unwrap(), 200);
        assert_eq!(read_response(&mut r).unwrap(), 403);
        assert!(read_response(&mut r).is_err(), "closed");
        let mut bad = BufReader::new(&b"garbage\r\n\r\n"[..]);
        assert!(read_response(&mut bad).is_err());
    }

    #[test]
    fn request_bytes_are_a_keep_alive_get() {
        let r = request_bytes("/admin", &[("Host".into(), "a.example.com".into())]);
        assert_eq!(r, b"GET /admin HTTP/1.1\r\nHost: a.example.com\r\n\r\n");
    }

    #[test]
    fn kept_up_compares_with_the_target() {
        let s = OpenSample {
            target_rps: 100.0,
            completed: 96,
            duration_us: 1_000_000,
            ..Default::default()
        };
        assert!(s.kept_up());
        let slow = OpenSample { completed: 50, ..s };
        assert!(!slow.kept_up());
    }
}
