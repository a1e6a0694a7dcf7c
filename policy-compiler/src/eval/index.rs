//! The engine's string-keyed indexes (route id → route, host → routes): hash maps built once
//! when a bundle is loaded, so a lookup costs the same with 10 or 10 000 routes (a `BTreeMap`
//! walked ~log₂ n string comparisons: 2.4× slower at 10 000 routes than at 10; see
//! `docs/benchmarks.md`, Scale).
//!
//! The hasher is a fixed, unkeyed word-at-a-time mix with a murmur3 finaliser: cheap on short
//! keys, deterministic (no random seed: the wasm filter has no entropy worth spending here)
//! and well spread for keys that differ in a few digits (`svc-00017.example.com`). Hash
//! flooding needs the attacker to choose the *stored* keys; these come from the operator's
//! config, and a lookup key (a request's host) only probes the fixed table.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hash map from config strings (route ids, host keys).
pub(crate) type Index<V> = HashMap<Box<str>, V, BuildHasherDefault<KeyHasher>>;

/// See the module docs.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl KeyHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(K);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            if let Some(dst) = w.get_mut(..rest.len()) {
                dst.copy_from_slice(rest);
            }
            // The length keeps "ab" and "ab\0" apart.
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        // murmur3 fmix64: every input bit reaches the low bits (the table's bucket index)
        // and the high ones (its control tags).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    fn h(s: &str) -> u64 {
        BuildHasherDefault::<KeyHasher>::default().hash_one(s)
    }

    #[test]
    fn similar_keys_spread_over_buckets() {
        let keys: Vec<String> = (0..4096)
            .map(|i| format!("svc-{i:05}.example.com"))
            .collect();
        let hashes: HashSet<u64> = keys.iter().map(|k| h(k)).collect();
        assert_eq!(hashes.len(), keys.len());
        // Low 12 bits (a 4096-bucket table): no bucket gets a pile-up.
        let mut buckets = vec![0u32; 4096];
        for k in &keys {
            buckets[(h(k) & 4095) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&c| c <= 8),
            "{:?}",
            buckets.iter().max()
        );
    }

    #[test]
    fn length_and_trailing_zeros_matter() {
        assert_ne!(h("ab"), h("ab\0"));
        assert_ne!(h(""), h("\0"));
        assert_ne!(h("12345678"), h("12345678\0"));
        assert_eq!(h("app.example.com"), h("app.example.com"));
    }
}
