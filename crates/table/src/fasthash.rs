//! A multiply-rotate hasher for the maps looked up on every request (host names, paths, endpoint
//! addresses). Their keys come from configuration, not from clients: requests only look keys up,
//! so SipHash's resistance to chosen keys buys nothing and costs a noticeable share of a request.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0xf135_7aea_2e62_a9c5;

/// Word-at-a-time hasher: each word is folded in with a rotate, xor and multiply.
#[derive(Default, Clone, Copy)]
pub struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(26) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The table uses the top bits as tags and the low bits as the index: mix both ways.
        let h = self.hash;
        (h ^ (h >> 29)).wrapping_mul(K) ^ (h >> 32)
    }
}

/// The `BuildHasher` for [`FastHasher`].
pub type BuildFast = BuildHasherDefault<FastHasher>;

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildFast>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hash};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    fn hash<T: Hash>(value: &T) -> u64 {
        BuildFast::default().hash_one(value)
    }

    #[test]
    fn nearby_endpoints_spread_over_buckets() {
        // Pod addresses differ in their last octets and ports: the low bits used as the bucket
        // index must differ too.
        let mut low = HashSet::new();
        let mut high = HashSet::new();
        for host in 0..64u8 {
            for port in [80u16, 8080, 8443, 9090] {
                let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 3, host)), port);
                let h = hash(&addr);
                low.insert(h & 0xff);
                high.insert(h >> 57);
            }
        }
        assert!(low.len() > 150, "only {} of 256 low bytes used", low.len());
        assert!(
            high.len() > 100,
            "only {} of 128 top-7-bit tags used",
            high.len()
        );
    }

    #[test]
    fn byte_strings_of_different_lengths_differ() {
        let a = hash(&b"ab".as_slice());
        let b = hash(&b"ab\0".as_slice());
        let c = hash(&b"abc".as_slice());
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
    }

    #[test]
    fn every_byte_of_a_key_changes_its_hash() {
        // Whole words and the tail after them: a byte anywhere that did not reach the state would
        // make keys that differ only there collide.
        for len in 1..=40usize {
            let key: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let original = hash(&key.as_slice());
            for at in 0..len {
                for bit in [0x01u8, 0x80] {
                    let mut changed = key.clone();
                    changed[at] ^= bit;
                    assert_ne!(
                        hash(&changed.as_slice()),
                        original,
                        "length {len}: bit {bit:#x} of byte {at} is ignored"
                    );
                }
            }
        }
    }

    #[test]
    fn host_names_get_distinct_hashes_and_are_found_by_borrowed_keys() {
        let names: Vec<String> = (0..10_000).map(|i| format!("r{i}.bench.local")).collect();
        let hashes: HashSet<u64> = names.iter().map(|n| hash(&n.as_str())).collect();
        assert_eq!(hashes.len(), names.len(), "64-bit hashes collide");
        let map: FastMap<String, usize> = names.iter().cloned().zip(0..).collect();
        for (i, name) in names.iter().enumerate() {
            let looked_up: &str = &format!("r{i}.bench.local");
            assert_eq!(map.get(looked_up), Some(&i), "{name}");
        }
        assert_eq!(map.get("r10000.bench.local"), None);
    }
}
