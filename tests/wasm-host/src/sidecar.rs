//! A fake sidecar speaking the internal API (`common::api`) over HTTP/1.1, for the filter's
//! Envoy tests: sessions, a long-poll change stream with a version cursor, the bundle.
//! Not the real sidecar — that one is tested end to end elsewhere.

use crate::fixtures::{self, User};
use crate::http::{Request, Response, Server};
use anyhow::Result;
use portcullis_common::api::{self, ChangesResponse};
use prost::Message as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Default)]
struct State {
    sessions: HashMap<String, User>,
    /// (version, session id, deleted?) in commit order.
    log: Vec<(u64, String, bool)>,
    version: u64,
    bundle: Vec<u8>,
    bundle_version: String,
    session_lookups: Vec<(String, String)>,
    unauthorized: u32,
    stopped: bool,
}

/// Shared between the server threads and the test.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    token: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// The fake sidecar. Stopping it closes every connection (the filter sees it as down);
/// [`FakeSidecar::restart`] serves again on the same address.
pub struct FakeSidecar {
    shared: Arc<Shared>,
    server: Mutex<Option<Server>>,
    addr: SocketAddr,
}

impl FakeSidecar {
    /// Start on a free loopback port with `bundle` as the current policy.
    pub fn start(bundle: Vec<u8>, bundle_version: &str) -> Result<FakeSidecar> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                bundle,
                bundle_version: bundle_version.to_owned(),
                version: 1,
                ..Default::default()
            }),
            changed: Condvar::new(),
            token: fixtures::api_token()?,
        });
        let server = serve(&shared, "127.0.0.1:0".parse()?)?;
        let addr = server.addr();
        Ok(FakeSidecar {
            shared,
            server: Mutex::new(Some(server)),
            addr,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Create (or replace) a session.
    pub fn put_session(&self, sid: &str, user: User) {
        let mut s = self.shared.lock();
        s.sessions.insert(sid.to_owned(), user);
        s.version += 1;
        let v = s.version;
        s.log.push((v, sid.to_owned(), false));
        drop(s);
        self.shared.changed.notify_all();
    }

    /// Delete a session (sign-out); returns when committed (long polls are woken).
    pub fn delete_session(&self, sid: &str) {
        let mut s = self.shared.lock();
        s.sessions.remove(sid);
        s.version += 1;
        let v = s.version;
        s.log.push((v, sid.to_owned(), true));
        drop(s);
        self.shared.changed.notify_all();
    }

    /// Publish a new policy bundle.
    pub fn set_bundle(&self, bundle: Vec<u8>, version: &str) {
        let mut s = self.shared.lock();
        s.bundle = bundle;
        s.bundle_version = version.to_owned();
        s.version += 1;
        drop(s);
        self.shared.changed.notify_all();
    }

    /// Session lookups received so far: (session id, audience).
    pub fn session_lookups(&self) -> Vec<(String, String)> {
        self.shared.lock().session_lookups.clone()
    }

    /// Requests refused for a wrong bearer token.
    pub fn unauthorized(&self) -> u32 {
        self.shared.lock().unauthorized
    }

    /// Go down: close the listener and every connection.
    pub fn stop(&self) {
        self.shared.lock().stopped = true;
        self.shared.changed.notify_all();
        if let Ok(mut s) = self.server.lock()
            && let Some(server) = s.take()
        {
            server.stop();
        }
    }

    /// Come back on the same address.
    pub fn restart(&self) -> Result<()> {
        self.shared.lock().stopped = false;
        let server = serve(&self.shared, self.addr)?;
        if let Ok(mut s) = self.server.lock() {
            *s = Some(server);
        }
        Ok(())
    }
}

impl Drop for FakeSidecar {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(shared: &Arc<Shared>, addr: SocketAddr) -> Result<Server> {
    let sh = shared.clone();
    Server::start(addr, Arc::new(move |req: &Request| handle(&sh, req)))
}

fn handle(sh: &Shared, req: &Request) -> Response {
    let authorized = req
        .header("authorization")
        .is_some_and(|h| api::check_authorization(h, &sh.token));
    if !authorized {
        sh.lock().unauthorized += 1;
        return Response::new(401, "unauthorized");
    }
    let (path, _) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let param = |name: &str| {
        fixtures::query_param(&req.path, name)
            .unwrap_or("")
            .to_owned()
    };
    let protobuf = |body: Vec<u8>| {
        Response::new(200, body).with_header("content-type", api::CONTENT_TYPE_PROTOBUF)
    };
    match path {
        api::PATH_SESSION => {
            let (sid, aud) = (param("id"), param("aud"));
            let mut s = sh.lock();
            s.session_lookups.push((sid.clone(), aud.clone()));
            let user = s.sessions.get(&sid).cloned();
            let version = s.version;
            drop(s);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
            protobuf(fixtures::session_answer(
                &sid,
                user.as_ref(),
                &aud,
                version,
                now,
            ))
        }
        api::PATH_CHANGES => {
            let since: u64 = param("since").parse().unwrap_or(0);
            let wait = Duration::from_millis(param("wait_ms").parse().unwrap_or(0));
            let deadline = Instant::now() + wait.min(Duration::from_millis(api::MAX_WAIT_MS));
            let mut s = sh.lock();
            while s.version <= since && !s.stopped {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                s = match sh.changed.wait_timeout(s, left) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
            let mut resp = ChangesResponse {
                version: s.version,
                bundle_version: s.bundle_version.clone(),
                epoch: "fake-sidecar".to_owned(),
                ..Default::default()
            };
            for (v, sid, deleted) in &s.log {
                if *v > since {
                    if *deleted {
                        resp.deleted.push(sid.clone());
                    } else {
                        resp.changed.push(sid.clone());
                    }
                }
            }
            protobuf(resp.encode_to_vec())
        }
        api::PATH_BUNDLE => {
            let s = sh.lock();
            protobuf(s.bundle.clone()).with_header(api::HEADER_BUNDLE_VERSION, &s.bundle_version)
        }
        _ => Response::new(404, "not found"),
    }
}
