//! Scenario 6: from a sign-out / group removal committed in the sidecar to the first denied
//! request on every Envoy worker.
//!
//! Envoy runs 2 workers. The harness keeps one keep-alive connection on each worker (found
//! by opening connections one at a time and watching which worker's
//! `listener.main.worker_N.downstream_cx_total` moved). A trial: the session is requested
//! on both connections until both answer 200 from their worker cache; the change is
//! committed through the sidecar child's stdin (its answer carries the commit time); then
//! both connections are polled back to back until each is denied (302 after a sign-out,
//! 403 after the group removal). The trial's time = the later worker's first denial −
//! commit time (one clock: same machine).

use crate::child::{Commit, Seeded, SeededSidecar};
use crate::openloop::{Conn, request_bytes};
use anyhow::{Result, anyhow, bail};
use proxy_wasm_test_host::envoy::Envoy;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a trial revokes access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The session is deleted (sign-out): the next request is sent to sign in (302).
    SignOut,
    /// `admins` is removed from the user's groups: the `admin` route denies (403).
    DropGroup,
}

impl Revocation {
    /// The status a revoked request gets.
    pub fn denied_status(self) -> u16 {
        match self {
            Revocation::SignOut => 302,
            Revocation::DropGroup => 403,
        }
    }

    /// Label.
    pub fn name(self) -> &'static str {
        match self {
            Revocation::SignOut => "sign-out",
            Revocation::DropGroup => "group removal",
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One keep-alive connection per worker of `envoy` (2 workers).
pub fn connections_per_worker(envoy: &Envoy, warm_request: &[u8]) -> Result<[Conn; 2]> {
    let mut found: [Option<Conn>; 2] = [None, None];
    for _ in 0..64 {
        let before = envoy.per_worker_connections()?;
        let mut c = Conn::connect(envoy.addr)?;
        // A request makes sure the worker has accepted (and counted) the connection.
        c.roundtrip(warm_request)?;
        let after = envoy.per_worker_connections()?;
        let worker = match (after[0] > before[0], after[1] > before[1]) {
            (true, false) => 0,
            (false, true) => 1,
            _ => continue,
        };
        if let Some(slot) = found.get_mut(worker)
            && slot.is_none()
        {
            *slot = Some(c);
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    match found {
        [Some(a), Some(b)] => Ok([a, b]),
        _ => bail!("could not get a connection on each of Envoy's 2 workers in 64 tries"),
    }
}

/// Run one trial; the time until every worker denied, in µs.
pub fn trial(
    conns: &mut [Conn; 2],
    sidecar: &mut SeededSidecar,
    session: &Seeded,
    host: &str,
    path: &str,
    kind: Revocation,
) -> Result<u64> {
    let request = request_bytes(
        path,
        &[
            ("Host".to_owned(), host.to_owned()),
            ("Cookie".to_owned(), session.cookie.clone()),
        ],
    );
    // Warm: the first answer on each worker is a miss (sidecar lookup), the next a hit.
    for c in conns.iter_mut() {
        for _ in 0..2 {
            let s = c.roundtrip(&request)?;
            if s != 200 {
                bail!("{}: warm-up answered {s}, expected 200", kind.name());
            }
        }
    }
    let Commit { commit_us, .. } = match kind {
        Revocation::SignOut => sidecar.signout(&session.sid)?,
        Revocation::DropGroup => sidecar.drop_group(&session.sid, "admins")?,
    };
    let mut denied: [Option<u64>; 2] = [None, None];
    let deadline = Instant::now() + Duration::from_secs(10);
    while denied.iter().any(Option::is_none) {
        for (c, d) in conns.iter_mut().zip(denied.iter_mut()) {
            if d.is_some() {
                continue;
            }
            let s = c.roundtrip(&request)?;
            if s == kind.denied_status() {
                *d = Some(now_us());
            } else if s != 200 {
                bail!(
                    "{}: answered {s} (expected 200 or {})",
                    kind.name(),
                    kind.denied_status()
                );
            }
        }
        if Instant::now() > deadline {
            bail!("{}: still allowed 10 s after the commit", kind.name());
        }
    }
    let last = denied
        .iter()
        .flatten()
        .max()
        .copied()
        .ok_or_else(|| anyhow!("no denial"))?;
    Ok(last.saturating_sub(commit_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_revocation_has_its_denial() {
        assert_eq!(Revocation::SignOut.denied_status(), 302);
        assert_eq!(Revocation::DropGroup.denied_status(), 403);
    }
}
