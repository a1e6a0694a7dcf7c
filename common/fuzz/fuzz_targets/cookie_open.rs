//! A `Cookie` header from a browser is attacker-controlled: splitting it and opening every
//! value must never panic, and nothing but a sealed cookie may ever open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_common::Secret;
use portcullis_common::cookie::{CookieKey, cookie_values, open, strip_cookie};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let key = CookieKey::new(&Secret::from_bytes([42; 32]));
    for value in cookie_values(header, "_pomerium") {
        assert!(open(&key, "_pomerium", value, 0).is_err(), "forged cookie opened");
    }
    if let Some(rest) = strip_cookie(header, "_pomerium") {
        assert_eq!(cookie_values(&rest, "_pomerium").count(), 0);
    }
});
