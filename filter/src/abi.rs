//! The only module that touches `proxy_wasm`: Envoy's contexts, forwarding to [`Worker`],
//! and [`Host`] implemented with `proxy_wasm::hostcalls`.
//!
//! Each root context (one per filter configuration per thread) owns a [`Worker`]; its
//! streams reach it through a thread-local map keyed by the root context id.

use crate::config::Config;
use crate::engine::Engine;
use crate::host::{HeaderPair, Host, HostError};
use crate::worker::{Flow, Mode, Worker};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

thread_local! {
    static WORKERS: RefCell<HashMap<u32, Worker<Engine>>> = RefCell::new(HashMap::new());
}

/// Run `f` on the worker of root context `root`. A re-entrant call (Envoy never makes
/// one, but a `RefCell` double borrow would be a panic) is logged and skipped.
fn with_worker<R>(
    root: u32,
    f: impl FnOnce(&mut Worker<Engine>, &mut EnvoyHost) -> R,
) -> Option<R> {
    WORKERS.with(|w| {
        let Ok(mut map) = w.try_borrow_mut() else {
            log::error!("re-entrant call into the filter refused");
            return None;
        };
        let worker = map.get_mut(&root)?;
        Some(f(worker, &mut EnvoyHost))
    })
}

/// Install the panic hook and the root context factory (called from `_initialize`).
pub fn start() {
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        // With panic=abort the VM dies right after this; say why before it does.
        let _ = hostcalls::log(LogLevel::Critical, &format!("panic: {info}"));
    }));
    proxy_wasm::set_root_context(|id| Box::new(Root { id }));
}

struct Root {
    id: u32,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        with_worker(self.id, |w, h| w.on_call_response(h, token, body));
    }

    fn on_done(&mut self) -> bool {
        WORKERS.with(|w| {
            if let Ok(mut map) = w.try_borrow_mut() {
                map.remove(&self.id);
            }
        });
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            _ => {
                log::error!("invalid plugin configuration: `$`: missing");
                return false;
            }
        };
        let cfg = match Config::parse(&raw) {
            Ok(c) => c,
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let tick = cfg.tick_ms;
        let worker = match Worker::<Engine>::new(cfg) {
            Ok(w) => w,
            Err(e) => {
                log::error!("invalid plugin configuration: {e}");
                return false;
            }
        };
        let stored = WORKERS.with(|w| {
            w.try_borrow_mut()
                .map(|mut map| {
                    map.insert(self.id, worker);
                })
                .is_ok()
        });
        if !stored {
            return false;
        }
        if hostcalls::set_tick_period(Duration::from_millis(tick)).is_err() {
            log::error!("cannot set the tick period");
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        with_worker(self.id, |w, h| w.on_tick(h));
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            id: context_id,
            root: self.id,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    id: u32,
    root: u32,
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        with_worker(self.root, |w, h| w.on_call_response(h, token, body));
    }

    fn on_done(&mut self) -> bool {
        let id = self.id;
        with_worker(self.root, |w, _| w.forget_context(id));
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let id = self.id;
        let flow = with_worker(self.root, |w, h| {
            let headers = h.request_headers();
            w.on_request_headers(h, id, &headers, Mode::Fresh)
        });
        match flow {
            Some(Flow::Continue) => Action::Continue,
            Some(Flow::Pause | Flow::Responded) => Action::Pause,
            None => {
                // No worker (configuration gone) or re-entrancy: never fail open.
                let _ =
                    hostcalls::send_http_response(503, vec![], Some(b"portcullis unavailable\n"));
                Action::Pause
            }
        }
    }
}

/// [`Host`] on Envoy's ABI.
pub struct EnvoyHost;

impl Host for EnvoyHost {
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn request_headers(&self) -> Vec<HeaderPair> {
        header_pairs(MapType::HttpRequestHeaders)
    }

    fn route_name(&self) -> Option<String> {
        let bytes = hostcalls::get_property(vec!["xds", "route_name"]).ok()??;
        String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
    }

    fn cluster_name(&self) -> Option<String> {
        let bytes = hostcalls::get_property(vec!["xds", "cluster_name"]).ok()??;
        String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let r = match value {
            Some(v) => hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(v)),
            None => hostcalls::remove_map_value(MapType::HttpRequestHeaders, name),
        };
        if r.is_err() {
            log::warn!("cannot set request header `{name}`");
        }
    }

    fn send_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        if hostcalls::send_http_response(status, headers.to_vec(), Some(body)).is_err() {
            log::error!("cannot send a local response");
        }
    }

    fn resume_request(&mut self) {
        let _ = hostcalls::resume_http_request();
    }

    fn set_effective_context(&mut self, context_id: u32) -> bool {
        hostcalls::set_effective_context(context_id).is_ok()
    }

    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            None,
            vec![],
            Duration::from_millis(timeout_ms),
        )
        .map_err(|_| HostError)
    }

    fn call_response_headers(&self) -> Vec<HeaderPair> {
        header_pairs(MapType::HttpCallResponseHeaders)
    }

    fn call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size).ok()?
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|_| HostError)
    }
}

/// Header pairs as text. The SDK's `get_map` panics on a non-UTF-8 value (HTTP allows
/// obs-text), so read bytes and convert lossily: a hostile header cannot kill the VM.
fn header_pairs(map: MapType) -> Vec<HeaderPair> {
    hostcalls::get_map_bytes(map)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match String::from_utf8(v) {
                Ok(v) => v,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            };
            (k, v)
        })
        .collect()
}
