//! The filter's view of Envoy: a small trait, so the logic runs natively under a fake host.
//!
//! Only [`crate::abi`] implements it against `proxy_wasm::hostcalls`; every other module
//! talks to Envoy through this trait (convention 5).

/// One header, as Envoy hands it over.
pub type HeaderPair = (String, String);

/// A failed host call (Envoy said no: unknown cluster, bad argument, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError;

/// What the filter asks of its host.
pub trait Host {
    /// Wall-clock time, unix milliseconds.
    fn now_ms(&self) -> u64;

    /// All request headers of the current stream, in one host call.
    fn request_headers(&self) -> Vec<HeaderPair>;
    /// The matched Envoy route's name (`xds.route_name`), if any.
    fn route_name(&self) -> Option<String>;
    /// The matched route's upstream cluster (`xds.cluster_name`), if any. Only asked for
    /// when the route claims to be the sidecar's.
    fn cluster_name(&self) -> Option<String>;
    /// Replace (or with `None`, remove) a request header of the current stream.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// Answer the current stream locally (the upstream is never contacted).
    fn send_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// Continue the current (paused) stream.
    fn resume_request(&mut self);
    /// Make `context_id` the stream later calls act on. False when it no longer exists.
    fn set_effective_context(&mut self, context_id: u32) -> bool;

    /// Start an HTTP call to `cluster`; the answer arrives as a call response for the token.
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, HostError>;
    /// Headers of the call response being delivered (inside the callback only).
    fn call_response_headers(&self) -> Vec<HeaderPair>;
    /// Body of the call response being delivered (inside the callback only).
    fn call_response_body(&self, size: usize) -> Option<Vec<u8>>;

    /// Read a shared-data value and its compare-and-set token.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Write a shared-data value; with `cas`, only if nobody wrote since that read.
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError>;
}
