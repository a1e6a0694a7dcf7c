//! A small proxy-wasm host on `wasmtime`, for testing the real `filter.wasm` without Envoy.
//!
//! It implements only the host calls (ABI 0.2.1) the Portcullis filter makes, plus the few
//! WASI preview1 functions its Rust standard library imports, and records everything the
//! filter asks for: header edits, local responses, resumed streams, HTTP calls, shared data,
//! logs. Tests drive the exported `proxy_on_*` callbacks and assert on those records.
//!
//! A [`Process`] plays one Envoy process: one compiled module, one shared-data store and
//! one clock for every [`Vm`] (= one Envoy worker thread) created from it.
//!
//! Unimplemented imports trap with their name, so a filter that starts calling something
//! new fails loudly rather than silently.

pub mod envoy;
pub mod fixtures;
pub mod http;
pub mod scale;
pub mod sidecar;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::error::Context as _;
use wasmtime::{Caller, Config, Engine, Extern, Instance, Linker, Memory, Module, Store};
use wasmtime::{Result, bail, format_err as anyhow};

/// Where `make wasm` puts the filter; tests read `PORTCULLIS_WASM` first.
pub const DEFAULT_WASM: &str = "target/wasm32-wasip1/release/filter.wasm";

/// The filter module to test: `$PORTCULLIS_WASM`, else the workspace's release build.
pub fn wasm_path() -> std::path::PathBuf {
    match std::env::var_os("PORTCULLIS_WASM") {
        Some(p) => p.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(DEFAULT_WASM),
    }
}

// proxy-wasm ABI constants.
const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const BAD_ARGUMENT: i32 = 2;
const CAS_MISMATCH: i32 = 8;
const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_CALL_RESPONSE_HEADERS: i32 = 6;
const BUFFER_CALL_RESPONSE_BODY: i32 = 4;
const BUFFER_VM_CONFIGURATION: i32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;

/// What `proxy_on_request_headers` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Continue to the next filter / upstream.
    Continue,
    /// Stop iteration (paused or answered locally).
    Pause,
}

/// A local response the filter sent (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u32,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP stream as the filter left it.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    /// Request headers after the filter's edits.
    pub request_headers: Vec<(String, String)>,
    /// Properties visible to this stream (path segments joined by `.`).
    pub properties: HashMap<String, Vec<u8>>,
    /// The local response, if the filter answered.
    pub local_response: Option<LocalResponse>,
    /// How many times the filter resumed the request.
    pub resumed: u32,
}

impl StreamState {
    /// A request header after the filter ran.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP call the filter dispatched (`proxy_http_call`).
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// The token the filter got.
    pub token: u32,
    /// Context the call was made from (where the answer is delivered).
    pub context_id: u32,
    /// Target cluster.
    pub cluster: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Timeout in milliseconds.
    pub timeout_ms: u32,
}

impl HttpCall {
    /// A request header of the call.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `:path` of the call.
    pub fn path(&self) -> &str {
        self.header(":path").unwrap_or("")
    }
}

/// Envoy's process-wide shared data: value + compare-and-set counter per key.
#[derive(Debug, Default)]
pub struct SharedData {
    map: HashMap<String, (Vec<u8>, u32)>,
}

impl SharedData {
    /// A value.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.map.get(key).map(|(v, _)| v.as_slice())
    }

    /// Every key.
    pub fn keys(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }
}

/// Headers and body of the call response being delivered.
type CallResponse = (Vec<(String, String)>, Vec<u8>);

/// Per-VM host state (the wasmtime store data).
struct State {
    clock: Arc<AtomicU64>,
    shared: Arc<Mutex<SharedData>>,
    plugin_config: Vec<u8>,
    logs: Vec<(i32, String)>,
    tick_period_ms: u32,
    effective: u32,
    roots: Vec<u32>,
    streams: HashMap<u32, StreamState>,
    calls: Vec<HttpCall>,
    next_token: u32,
    unknown_clusters: Vec<String>,
    call_response: Option<CallResponse>,
}

/// One Envoy process: the compiled filter, shared data and the clock.
pub struct Process {
    engine: Engine,
    module: Module,
    shared: Arc<Mutex<SharedData>>,
    clock: Arc<AtomicU64>,
}

impl Process {
    /// Compile the module at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Process> {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("reading {} (run `make wasm`): {e}", path.display()))?;
        let engine = Engine::new(&Config::new())?;
        let module = Module::from_binary(&engine, &bytes)?;
        Ok(Process {
            engine,
            module,
            shared: Arc::default(),
            clock: Arc::new(AtomicU64::new(1_800_000_000_000)),
        })
    }

    /// The current time, unix ms.
    pub fn now_ms(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Move the clock forward.
    pub fn advance_ms(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    /// Read shared data.
    pub fn shared(&self) -> std::sync::MutexGuard<'_, SharedData> {
        match self.shared.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The import names of the module (what the filter may ask of its host).
    pub fn imports(&self) -> Vec<String> {
        self.module
            .imports()
            .map(|i| format!("{}::{}", i.module(), i.name()))
            .collect()
    }

    /// A new VM (one worker thread), `_initialize`d, no root context yet.
    pub fn vm(&self) -> anyhow::Result<Vm> {
        let state = State {
            clock: self.clock.clone(),
            shared: self.shared.clone(),
            plugin_config: Vec::new(),
            logs: Vec::new(),
            tick_period_ms: 0,
            effective: 0,
            roots: Vec::new(),
            streams: HashMap::new(),
            calls: Vec::new(),
            next_token: 0,
            unknown_clusters: Vec::new(),
            call_response: None,
        };
        let mut store = Store::new(&self.engine, state);
        let mut linker = Linker::new(&self.engine);
        define_proxy_wasm(&mut linker)?;
        define_wasi(&mut linker)?;
        linker.define_unknown_imports_as_traps(&self.module)?;
        let instance = linker.instantiate(&mut store, &self.module)?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())?;
        }
        Ok(Vm {
            store,
            instance,
            root: 0,
            next_id: 1,
            delivered: Vec::new(),
        })
    }
}

/// One VM: the filter's root context and its streams on one "worker thread".
pub struct Vm {
    store: Store<State>,
    instance: Instance,
    root: u32,
    next_id: u32,
    delivered: Vec<u32>,
}

impl Vm {
    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
        params: P,
    ) -> anyhow::Result<R> {
        let f = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)
            .with_context(|| format!("export {name}"))?;
        Ok(f.call(&mut self.store, params)
            .with_context(|| format!("calling {name}"))?)
    }

    fn new_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Create the root context and run `on_vm_start` + `on_configure` with `config`.
    /// Returns what `on_configure` returned (false = Envoy rejects the configuration).
    pub fn configure(&mut self, config: &str) -> anyhow::Result<bool> {
        let root = self.new_id();
        self.root = root;
        self.store.data_mut().plugin_config = config.as_bytes().to_vec();
        self.store.data_mut().effective = root;
        self.store.data_mut().roots.push(root);
        self.call::<(i32, i32), ()>("proxy_on_context_create", (root as i32, 0))?;
        let started: i32 = self.call("proxy_on_vm_start", (root as i32, 0i32))?;
        if started == 0 {
            return Ok(false);
        }
        let len = i32::try_from(config.len())?;
        let ok: i32 = self.call("proxy_on_configure", (root as i32, len))?;
        Ok(ok != 0)
    }

    /// Move the process clock forward (every VM of the process sees it).
    pub fn advance_ms(&self, ms: u64) {
        self.store.data().clock.fetch_add(ms, Ordering::SeqCst);
    }

    /// The tick period the filter asked for (ms; 0 = none).
    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }

    /// Run the root context's `on_tick`.
    pub fn tick(&mut self) -> anyhow::Result<()> {
        self.store.data_mut().effective = self.root;
        let root = self.root as i32;
        self.call::<i32, ()>("proxy_on_tick", root)
    }

    /// Start a stream with these request headers (and properties, e.g. `xds.route_name`)
    /// and run `on_request_headers`. Returns the stream's context id and the action.
    pub fn request(
        &mut self,
        headers: &[(&str, &str)],
        properties: &[(&str, &str)],
    ) -> anyhow::Result<(u32, Action)> {
        let id = self.new_id();
        let stream = StreamState {
            request_headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            ..Default::default()
        };
        self.store.data_mut().streams.insert(id, stream);
        self.store.data_mut().effective = id;
        let root = self.root as i32;
        self.call::<(i32, i32), ()>("proxy_on_context_create", (id as i32, root))?;
        let n = i32::try_from(headers.len())?;
        let action: i32 = self.call("proxy_on_request_headers", (id as i32, n, 1i32))?;
        Ok((
            id,
            if action == 0 {
                Action::Continue
            } else {
                Action::Pause
            },
        ))
    }

    /// End a stream as Envoy does (`on_done`, `on_log`, `on_delete`).
    pub fn end_stream(&mut self, id: u32) -> anyhow::Result<()> {
        self.store.data_mut().effective = id;
        let _: i32 = self.call("proxy_on_done", id as i32)?;
        self.call::<i32, ()>("proxy_on_log", id as i32)?;
        self.call::<i32, ()>("proxy_on_delete", id as i32)?;
        self.store.data_mut().streams.remove(&id);
        Ok(())
    }

    /// A stream's state.
    pub fn stream(&self, id: u32) -> anyhow::Result<&StreamState> {
        self.store
            .data()
            .streams
            .get(&id)
            .ok_or_else(|| anyhow::anyhow!("no stream {id}"))
    }

    /// Calls dispatched and not yet answered, oldest first.
    pub fn pending_calls(&self) -> Vec<HttpCall> {
        self.store
            .data()
            .calls
            .iter()
            .filter(|c| !self.delivered.contains(&c.token))
            .cloned()
            .collect()
    }

    /// How many calls this VM has dispatched so far (a cursor for [`Vm::calls_since`]).
    pub fn call_count(&self) -> usize {
        self.store.data().calls.len()
    }

    /// Calls dispatched since the VM had made `count` (see [`Vm::call_count`]), oldest
    /// first, answered or not. Unlike [`Vm::pending_calls`] its cost does not grow with the
    /// VM's history (the memory bench makes tens of thousands of calls).
    pub fn calls_since(&self, count: usize) -> Vec<HttpCall> {
        self.store
            .data()
            .calls
            .get(count..)
            .map_or_else(Vec::new, <[HttpCall]>::to_vec)
    }

    /// Every call ever dispatched by this VM.
    pub fn all_calls(&self) -> Vec<HttpCall> {
        self.store.data().calls.clone()
    }

    /// Clusters the filter tried to call while they were "unknown" (dispatch refused).
    pub fn refused_clusters(&self) -> Vec<String> {
        self.store.data().unknown_clusters.clone()
    }

    /// Make every later dispatch fail like an unknown cluster (`Err(BadArgument)`), or not.
    pub fn set_sidecar_unknown(&mut self, unknown: bool) {
        // Represented as a marker cluster list: dispatch refuses everything while set.
        let d = self.store.data_mut();
        if unknown {
            d.unknown_clusters.push("*".into());
        } else {
            d.unknown_clusters.retain(|c| c != "*");
        }
    }

    /// Answer call `token` with `status`, extra headers and `body`.
    pub fn answer(
        &mut self,
        token: u32,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<()> {
        let mut hs = vec![(":status".to_string(), status.to_string())];
        hs.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.deliver(token, hs, body.to_vec())
    }

    /// Fail call `token` as Envoy does on reset/timeout (no headers, no body).
    pub fn fail(&mut self, token: u32) -> anyhow::Result<()> {
        self.deliver(token, Vec::new(), Vec::new())
    }

    fn deliver(
        &mut self,
        token: u32,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> anyhow::Result<()> {
        let call = self
            .store
            .data()
            .calls
            .iter()
            .find(|c| c.token == token)
            .cloned()
            .ok_or_else(|| anyhow!("no call {token}"))?;
        if self.delivered.contains(&token) {
            anyhow::bail!("call {token} already answered");
        }
        self.delivered.push(token);
        let nh = i32::try_from(headers.len())?;
        let nb = i32::try_from(body.len())?;
        self.store.data_mut().call_response = Some((headers, body));
        self.store.data_mut().effective = call.context_id;
        let r = self.call::<(i32, i32, i32, i32, i32), ()>(
            "proxy_on_http_call_response",
            (call.context_id as i32, token as i32, nh, nb, 0),
        );
        self.store.data_mut().call_response = None;
        r
    }

    /// Size of the module's linear memory in bytes. Wasm memory only grows, so this is the
    /// high-water mark of the filter's heap (its allocator's in-use bytes are not exported).
    pub fn memory_bytes(&mut self) -> anyhow::Result<usize> {
        match self.instance.get_export(&mut self.store, "memory") {
            Some(Extern::Memory(m)) => Ok(m.data_size(&self.store)),
            _ => anyhow::bail!("module exports no memory"),
        }
    }

    /// Log lines the filter wrote (level, text), including WASI stdout/stderr.
    pub fn logs(&self) -> Vec<(i32, String)> {
        self.store.data().logs.clone()
    }

    /// Whether any log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.store
            .data()
            .logs
            .iter()
            .any(|(_, l)| l.contains(needle))
    }
}

// ---- guest memory helpers --------------------------------------------------------------

fn memory(caller: &mut Caller<'_, State>) -> Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => bail!("module exports no memory"),
    }
}

fn read(caller: &mut Caller<'_, State>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let mem = memory(caller)?;
    let start = usize::try_from(ptr)?;
    let end = start + usize::try_from(len)?;
    mem.data(&caller)
        .get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| anyhow!("guest pointer out of bounds"))
}

fn read_str(caller: &mut Caller<'_, State>, ptr: i32, len: i32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut Caller<'_, State>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let mem = memory(caller)?;
    let start = usize::try_from(ptr)?;
    mem.data_mut(&mut *caller)
        .get_mut(start..start + bytes.len())
        .ok_or_else(|| anyhow!("guest pointer out of bounds"))?
        .copy_from_slice(bytes);
    Ok(())
}

fn write_u32(caller: &mut Caller<'_, State>, ptr: i32, v: u32) -> Result<()> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Copy `bytes` into memory the guest allocates, and store (pointer, size) at the two
/// return pointers — how proxy-wasm hands data to the module.
fn give(caller: &mut Caller<'_, State>, bytes: &[u8], ret_ptr: i32, ret_size: i32) -> Result<()> {
    let alloc = match caller.get_export("proxy_on_memory_allocate") {
        Some(Extern::Func(f)) => f.typed::<i32, i32>(&caller)?,
        _ => bail!("module exports no proxy_on_memory_allocate"),
    };
    let len = i32::try_from(bytes.len())?;
    let ptr = alloc.call(&mut *caller, len)?;
    write(caller, ptr, bytes)?;
    write_u32(caller, ret_ptr, u32::try_from(ptr)?)?;
    write_u32(caller, ret_size, u32::try_from(len)?)
}

/// proxy-wasm header map encoding.
fn serialize_map(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

fn deserialize_map(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    let word = |at: usize| -> Result<usize> {
        let b: [u8; 4] = bytes
            .get(at..at + 4)
            .ok_or_else(|| anyhow!("short map"))?
            .try_into()?;
        Ok(u32::from_le_bytes(b) as usize)
    };
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let n = word(0)?;
    let mut p = 4 + n * 8;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (kl, vl) = (word(4 + i * 8)?, word(8 + i * 8)?);
        let k = bytes.get(p..p + kl).ok_or_else(|| anyhow!("short map"))?;
        p += kl + 1;
        let v = bytes.get(p..p + vl).ok_or_else(|| anyhow!("short map"))?;
        p += vl + 1;
        out.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Ok(out)
}

/// The header map `map` of the effective context, mutable.
fn map_mut(state: &mut State, map: i32) -> Option<&mut Vec<(String, String)>> {
    if map != MAP_REQUEST_HEADERS {
        return None;
    }
    let id = state.effective;
    state.streams.get_mut(&id).map(|s| &mut s.request_headers)
}

// ---- proxy-wasm ABI 0.2.1 (only what the filter uses) ----------------------------------

type R = Result<i32>;

fn define_proxy_wasm(linker: &mut Linker<State>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: Caller<'_, State>, level: i32, ptr: i32, len: i32| -> R {
            let msg = read_str(&mut c, ptr, len)?;
            c.data_mut().logs.push((level, msg));
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: Caller<'_, State>, ret: i32| -> R {
            write_u32(&mut c, ret, 0)?; // trace: the filter may log everything
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_, State>, ret: i32| -> R {
            let ns = c.data().clock.load(Ordering::SeqCst) * 1_000_000;
            write(&mut c, ret, &ns.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Caller<'_, State>, ms: i32| -> R {
            c.data_mut().tick_period_ms = u32::try_from(ms)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, State>, kind: i32, start: i32, max: i32, rp: i32, rs: i32| -> R {
            let data = match kind {
                BUFFER_PLUGIN_CONFIGURATION => c.data().plugin_config.clone(),
                BUFFER_VM_CONFIGURATION => Vec::new(),
                BUFFER_CALL_RESPONSE_BODY => match &c.data().call_response {
                    Some((_, body)) => body.clone(),
                    None => return Ok(NOT_FOUND),
                },
                _ => return Ok(NOT_FOUND),
            };
            let start = usize::try_from(start)?.min(data.len());
            let end = start
                .saturating_add(usize::try_from(max).unwrap_or(usize::MAX))
                .min(data.len());
            let slice = data.get(start..end).unwrap_or(&[]).to_vec();
            if slice.is_empty() {
                return Ok(NOT_FOUND);
            }
            give(&mut c, &slice, rp, rs)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, State>, map: i32, rp: i32, rs: i32| -> R {
            let pairs = if map == MAP_CALL_RESPONSE_HEADERS {
                match &c.data().call_response {
                    Some((h, _)) => h.clone(),
                    None => return Ok(NOT_FOUND),
                }
            } else {
                match map_mut(c.data_mut(), map) {
                    Some(h) => h.clone(),
                    None => return Ok(NOT_FOUND),
                }
            };
            let bytes = serialize_map(&pairs);
            give(&mut c, &bytes, rp, rs)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, State>, map: i32, kp: i32, kl: i32, rp: i32, rs: i32| -> R {
            let key = read_str(&mut c, kp, kl)?;
            let value = map_mut(c.data_mut(), map)
                .and_then(|h| h.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()));
            match value {
                Some(v) => {
                    give(&mut c, v.as_bytes(), rp, rs)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Caller<'_, State>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let key = read_str(&mut c, kp, kl)?;
            let value = read_str(&mut c, vp, vl)?;
            let Some(h) = map_mut(c.data_mut(), map) else {
                return Ok(BAD_ARGUMENT);
            };
            h.retain(|(k, _)| *k != key);
            h.push((key, value));
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Caller<'_, State>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let key = read_str(&mut c, kp, kl)?;
            let value = read_str(&mut c, vp, vl)?;
            let Some(h) = map_mut(c.data_mut(), map) else {
                return Ok(BAD_ARGUMENT);
            };
            h.push((key, value));
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, State>, map: i32, kp: i32, kl: i32| -> R {
            let key = read_str(&mut c, kp, kl)?;
            let Some(h) = map_mut(c.data_mut(), map) else {
                return Ok(BAD_ARGUMENT);
            };
            h.retain(|(k, _)| *k != key);
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_, State>, pp: i32, pl: i32, rp: i32, rs: i32| -> R {
            let path = read(&mut c, pp, pl)?;
            let key = path
                .split(|b| *b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(".");
            let id = c.data().effective;
            let value = c
                .data()
                .streams
                .get(&id)
                .and_then(|s| s.properties.get(&key))
                .cloned();
            match value {
                Some(v) => {
                    give(&mut c, &v, rp, rs)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_, State>, kp: i32, kl: i32, rp: i32, rs: i32, rcas: i32| -> R {
            let key = read_str(&mut c, kp, kl)?;
            let found = {
                let shared = c.data().shared.lock().map_err(|_| anyhow!("poisoned"))?;
                shared.map.get(&key).cloned()
            };
            match found {
                Some((v, cas)) => {
                    if v.is_empty() {
                        write_u32(&mut c, rp, 0)?;
                        write_u32(&mut c, rs, 0)?;
                    } else {
                        give(&mut c, &v, rp, rs)?;
                    }
                    write_u32(&mut c, rcas, cas)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_, State>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> R {
            let key = read_str(&mut c, kp, kl)?;
            let value = if vl > 0 {
                read(&mut c, vp, vl)?
            } else {
                Vec::new()
            };
            let mut shared = c.data().shared.lock().map_err(|_| anyhow!("poisoned"))?;
            let current = shared.map.get(&key).map(|(_, cas)| *cas);
            let cas = u32::try_from(cas)?;
            // As Envoy: cas 0 = unconditional; else it must match the current counter.
            if cas != 0 && current != Some(cas) {
                return Ok(CAS_MISMATCH);
            }
            let next = current.unwrap_or(0) + 1;
            shared.map.insert(key, (value, next));
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Caller<'_, State>, _stream: i32| -> R {
            let id = c.data().effective;
            match c.data_mut().streams.get_mut(&id) {
                Some(s) => {
                    s.resumed += 1;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Caller<'_, State>,
         status: i32,
         _dp: i32,
         _dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32|
         -> R {
            let body = if bl > 0 {
                read(&mut c, bp, bl)?
            } else {
                Vec::new()
            };
            let headers = deserialize_map(&read(&mut c, hp, hl)?)?;
            let id = c.data().effective;
            let Some(s) = c.data_mut().streams.get_mut(&id) else {
                return Ok(NOT_FOUND);
            };
            if s.local_response.is_some() {
                bail!("stream {id} answered twice");
            }
            s.local_response = Some(LocalResponse {
                status: u32::try_from(status)?,
                headers,
                body,
            });
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Caller<'_, State>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         _bp: i32,
         _bl: i32,
         _tp: i32,
         _tl: i32,
         timeout: i32,
         rtoken: i32|
         -> R {
            let cluster = read_str(&mut c, up, ul)?;
            let headers = deserialize_map(&read(&mut c, hp, hl)?)?;
            if c.data().unknown_clusters.iter().any(|u| u == "*") {
                c.data_mut().unknown_clusters.push(cluster);
                return Ok(BAD_ARGUMENT);
            }
            let d = c.data_mut();
            d.next_token += 1;
            let token = d.next_token;
            let call = HttpCall {
                token,
                context_id: d.effective,
                cluster,
                headers,
                timeout_ms: u32::try_from(timeout)?,
            };
            d.calls.push(call);
            write_u32(&mut c, rtoken, token)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Caller<'_, State>, id: i32| -> R {
            let id = u32::try_from(id)?;
            if c.data().streams.contains_key(&id) || c.data().roots.contains(&id) {
                c.data_mut().effective = id;
                Ok(OK)
            } else {
                Ok(BAD_ARGUMENT)
            }
        },
    )?;
    Ok(())
}

// ---- WASI preview1: the handful Rust's std imports -------------------------------------

fn define_wasi(linker: &mut Linker<State>) -> Result<()> {
    const W: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        W,
        "fd_write",
        |mut c: Caller<'_, State>, _fd: i32, iovs: i32, n: i32, ret: i32| -> R {
            let mut text = Vec::new();
            for i in 0..n {
                let iov = read(&mut c, iovs + i * 8, 8)?;
                let word = |a: usize| -> Result<i32> {
                    let b: [u8; 4] = iov
                        .get(a..a + 4)
                        .ok_or_else(|| anyhow!("iov"))?
                        .try_into()?;
                    Ok(i32::from_le_bytes(b))
                };
                text.extend(read(&mut c, word(0)?, word(4)?)?);
            }
            let len = u32::try_from(text.len())?;
            c.data_mut()
                .logs
                .push((-1, String::from_utf8_lossy(&text).into_owned()));
            write_u32(&mut c, ret, len)?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        W,
        "environ_sizes_get",
        |mut c: Caller<'_, State>, count: i32, size: i32| -> R {
            write_u32(&mut c, count, 0)?;
            write_u32(&mut c, size, 0)?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        W,
        "environ_get",
        |_: Caller<'_, State>, _: i32, _: i32| -> R { Ok(0) },
    )?;
    linker.func_wrap(
        W,
        "clock_time_get",
        |mut c: Caller<'_, State>, _id: i32, _precision: i64, ret: i32| -> R {
            let ns = c.data().clock.load(Ordering::SeqCst) * 1_000_000;
            write(&mut c, ret, &ns.to_le_bytes())?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        W,
        "random_get",
        |mut c: Caller<'_, State>, ptr: i32, len: i32| -> R {
            // Deterministic: the filter must not depend on randomness for anything secret.
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31)).collect();
            write(&mut c, ptr, &bytes)?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        W,
        "proc_exit",
        |_: Caller<'_, State>, code: i32| -> Result<()> { bail!("proc_exit({code})") },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_map_codec_round_trips() {
        let pairs = vec![
            (":path".to_string(), "/a".to_string()),
            ("x".to_string(), String::new()),
        ];
        assert_eq!(deserialize_map(&serialize_map(&pairs)).unwrap(), pairs);
        assert!(deserialize_map(&[9, 0, 0, 0]).is_err());
    }
}
