//! Maps from an object's key to something that knows that key itself (the object, or a plan made
//! from it), keyed by the key's hash instead of a copy of it. With tens of thousands of objects,
//! the copies of their keys (two strings each) would be a good part of what translation keeps.

use std::hash::{BuildHasher, Hash, Hasher};

use model::{Named, ObjectKey};
use table::fasthash::{BuildFast, FastMap};

/// The hash of the key `namespace/name`, as [`ObjectKey`] hashes it.
pub fn key_hash(namespace: &str, name: &str) -> u64 {
    let mut hasher = BuildFast::default().build_hasher();
    namespace.hash(&mut hasher);
    name.hash(&mut hasher);
    hasher.finish()
}

/// The hash of `key`.
pub fn hash_of(key: &ObjectKey) -> u64 {
    key_hash(&key.namespace, &key.name)
}

/// A value that knows the key it is stored under.
pub trait HasKey {
    /// Whether the value is the one stored under `key`.
    fn has_key(&self, key: &ObjectKey) -> bool;
}

impl<T: Named> HasKey for std::sync::Arc<T> {
    fn has_key(&self, key: &ObjectKey) -> bool {
        self.is(key)
    }
}

/// The values whose keys share one hash: nearly always one.
enum Bucket<V> {
    One(V),
    Many(Vec<V>),
}

/// Values by the hash of their keys.
pub struct Keyed<V> {
    map: FastMap<u64, Bucket<V>>,
    len: usize,
}

impl<V> Default for Keyed<V> {
    fn default() -> Self {
        Keyed {
            map: FastMap::default(),
            len: 0,
        }
    }
}

impl<V: HasKey> Keyed<V> {
    /// Room for `n` values.
    pub fn reserve(&mut self, n: usize) {
        self.map.reserve(n);
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<&V> {
        match self.map.get(&hash_of(key))? {
            Bucket::One(v) => v.has_key(key).then_some(v),
            Bucket::Many(vs) => vs.iter().find(|v| v.has_key(key)),
        }
    }

    /// The value stored under `key`, to change.
    pub fn get_mut(&mut self, key: &ObjectKey) -> Option<&mut V> {
        match self.map.get_mut(&hash_of(key))? {
            Bucket::One(v) => v.has_key(key).then_some(v),
            Bucket::Many(vs) => vs.iter_mut().find(|v| v.has_key(key)),
        }
    }

    /// Every value whose key has the hash `hash` (those of one key, and any whose key collides).
    pub fn by_hash(&self, hash: u64) -> impl Iterator<Item = &V> {
        let (one, many) = match self.map.get(&hash) {
            Some(Bucket::One(v)) => (Some(v), &[][..]),
            Some(Bucket::Many(vs)) => (None, vs.as_slice()),
            None => (None, &[][..]),
        };
        one.into_iter().chain(many)
    }

    /// Every value whose key has the hash `hash`, to change.
    pub fn by_hash_mut(&mut self, hash: u64) -> impl Iterator<Item = &mut V> {
        let (one, many) = match self.map.get_mut(&hash) {
            Some(Bucket::One(v)) => (Some(v), &mut [][..]),
            Some(Bucket::Many(vs)) => (None, vs.as_mut_slice()),
            None => (None, &mut [][..]),
        };
        one.into_iter().chain(many)
    }

    /// Stores `value` under `key`; returns the value it replaces.
    pub fn insert(&mut self, key: &ObjectKey, value: V) -> Option<V> {
        use std::collections::hash_map::Entry;
        match self.map.entry(hash_of(key)) {
            Entry::Vacant(e) => {
                e.insert(Bucket::One(value));
                self.len += 1;
                None
            }
            Entry::Occupied(mut e) => {
                let bucket = e.get_mut();
                if let Bucket::One(v) = bucket {
                    if v.has_key(key) {
                        return Some(std::mem::replace(v, value));
                    }
                    let Bucket::One(first) = std::mem::replace(bucket, Bucket::Many(Vec::new()))
                    else {
                        unreachable!("matched above")
                    };
                    *bucket = Bucket::Many(vec![first]);
                }
                let Bucket::Many(vs) = bucket else {
                    unreachable!("made a list above")
                };
                if let Some(v) = vs.iter_mut().find(|v| v.has_key(key)) {
                    return Some(std::mem::replace(v, value));
                }
                vs.push(value);
                self.len += 1;
                None
            }
        }
    }

    /// Takes out the value stored under `key`.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<V> {
        use std::collections::hash_map::Entry;
        let Entry::Occupied(mut e) = self.map.entry(hash_of(key)) else {
            return None;
        };
        let taken = match e.get_mut() {
            Bucket::One(v) if v.has_key(key) => None,
            Bucket::One(_) => return None,
            Bucket::Many(vs) => {
                let at = vs.iter().position(|v| v.has_key(key))?;
                Some(vs.swap_remove(at))
            }
        };
        let taken = match taken {
            Some(v) => {
                if let Bucket::Many(vs) = e.get() {
                    if vs.is_empty() {
                        e.remove();
                    }
                }
                v
            }
            None => match e.remove() {
                Bucket::One(v) => v,
                Bucket::Many(_) => unreachable!("a single value was found above"),
            },
        };
        self.len -= 1;
        Some(taken)
    }

    /// Keeps the values for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        let mut len = 0;
        self.map.retain(|_, bucket| match bucket {
            Bucket::One(v) => {
                let k = keep(v);
                len += usize::from(k);
                k
            }
            Bucket::Many(vs) => {
                vs.retain_mut(&mut keep);
                len += vs.len();
                !vs.is_empty()
            }
        });
        self.len = len;
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().flat_map(|b| {
            let (one, many) = match b {
                Bucket::One(v) => (Some(v), &[][..]),
                Bucket::Many(vs) => (None, vs.as_slice()),
            };
            one.into_iter().chain(many)
        })
    }

    /// Forgets every value.
    pub fn clear(&mut self) {
        self.map.clear();
        self.len = 0;
    }
}

/// A few hashes (nearly always one), kept without a list of their own for one.
#[derive(Debug)]
pub enum Hashes {
    /// One hash.
    One(u64),
    /// Several.
    Many(Vec<u64>),
}

impl Hashes {
    /// Adds `hash` unless it is there.
    pub fn add(&mut self, hash: u64) {
        match self {
            Hashes::One(h) if *h == hash => {}
            Hashes::One(h) => *self = Hashes::Many(vec![*h, hash]),
            Hashes::Many(hs) => {
                if !hs.contains(&hash) {
                    hs.push(hash);
                }
            }
        }
    }

    /// Takes `hash` out; returns whether none is left.
    pub fn remove(&mut self, hash: u64) -> bool {
        match self {
            Hashes::One(h) => *h == hash,
            Hashes::Many(hs) => {
                hs.retain(|h| *h != hash);
                hs.is_empty()
            }
        }
    }

    /// The hashes.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let (one, many) = match self {
            Hashes::One(h) => (Some(*h), &[][..]),
            Hashes::Many(hs) => (None, hs.as_slice()),
        };
        one.into_iter().chain(many.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value whose key is written in it.
    #[derive(Debug, PartialEq)]
    struct Named(ObjectKey, u32);

    impl HasKey for Named {
        fn has_key(&self, key: &ObjectKey) -> bool {
            self.0 == *key
        }
    }

    #[test]
    fn values_are_found_by_their_own_keys_even_when_hashes_collide() {
        let mut map: Keyed<Named> = Keyed::default();
        let a = ObjectKey::new("ns", "a");
        let b = ObjectKey::new("ns", "b");
        assert_eq!(hash_of(&a), key_hash("ns", "a"));
        assert_eq!(map.insert(&a, Named(a.clone(), 1)), None);
        assert_eq!(map.insert(&b, Named(b.clone(), 2)), None);
        assert_eq!(
            map.insert(&a, Named(a.clone(), 3)),
            Some(Named(a.clone(), 1))
        );
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&a).map(|n| n.1), Some(3));
        assert!(map.get(&ObjectKey::new("other", "a")).is_none());

        // A value of another key filed under `a`'s hash (as a collision would file it): the
        // right one is found and removed, the other stays.
        let c = ObjectKey::new("ns", "c");
        let hash = hash_of(&a);
        map.map.insert(
            hash,
            Bucket::Many(vec![Named(c.clone(), 4), Named(a.clone(), 3)]),
        );
        map.len = 3;
        let mut filed = map.by_hash(hash).map(|n| n.1).collect::<Vec<_>>();
        filed.sort_unstable();
        assert_eq!(filed, [3, 4]);
        assert_eq!(map.get(&a).map(|n| n.1), Some(3));
        assert_eq!(
            map.insert(&a, Named(a.clone(), 5)),
            Some(Named(a.clone(), 3))
        );
        assert_eq!(map.remove(&a), Some(Named(a.clone(), 5)));
        assert!(map.get(&a).is_none());
        assert_eq!(map.by_hash(hash).map(|n| n.1).collect::<Vec<_>>(), [4]);
        assert_eq!(map.len(), 2);
        for n in map.by_hash_mut(hash) {
            n.1 = 6;
        }
        map.retain(|n| n.1 != 6);
        assert_eq!(map.len(), 1);
        assert_eq!(map.values().map(|n| n.1).collect::<Vec<_>>(), [2]);
        map.retain(|n| n.1 != 2);
        assert_eq!(map.len(), 0);
        assert_eq!(map.values().count(), 0);

        let mut few = Hashes::One(1);
        few.add(1);
        few.add(2);
        assert_eq!(few.iter().collect::<Vec<_>>(), [1, 2]);
        assert!(!few.remove(1));
        assert!(few.remove(2));
    }
}
