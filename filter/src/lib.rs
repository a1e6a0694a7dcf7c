//! Portcullis' proxy-wasm filter: per-request authorization inside Envoy.
//!
//! Per request: find the route (`xds.route_name` or the bundle's own lookup), strip
//! client-supplied identity headers, open the session cookie, look the session up
//! (worker cache → shared data → one sidecar call), evaluate the route's compiled policy,
//! and allow (with identity headers), send to sign-in, or deny. A root context follows the
//! sidecar's change stream to evict changed sessions and swap policy bundles.
//!
//! Layout (convention 5: only [`abi`] touches the proxy-wasm ABI):
//! - [`config`]: plugin configuration JSON → checked [`config::Config`];
//! - [`host`]: the [`host::Host`] trait the logic talks to;
//! - [`policy`] + [`engine`]: what the filter needs of a bundle, on the real evaluator;
//! - [`cache`]: per-worker session + negative caches, shared-data record format;
//! - [`worker`]: the per-request path, lookups, change stream, bundle swaps;
//! - [`decision`]: refusals → HTTP answers (403/404/503, 302/401 sign-in);
//! - [`abi`]: Envoy's contexts and [`host::Host`] on `proxy_wasm::hostcalls` (wasm only).
//!
//! See docs/filter.md for the configuration and the behaviour.

#[cfg(target_family = "wasm")]
pub mod abi;
pub mod cache;
pub mod config;
pub mod decision;
pub mod engine;
pub mod host;
pub mod policy;
pub mod worker;

#[cfg(target_family = "wasm")]
proxy_wasm::main! {{
    abi::start();
}}
