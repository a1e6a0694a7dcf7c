//! Internal API answers are decoded by the filter inside Envoy: hostile or truncated bytes
//! must decode to an error or a message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_common::api::{ChangesResponse, SessionResponse};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let _ = SessionResponse::decode(data);
    let _ = ChangesResponse::decode(data);
});
