//! Backends: a Service port resolved to the addresses that serve it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;

/// Index of a backend in [`crate::Table::backends`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct BackendId(pub usize);

/// Where a backend's traffic goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum BackendTarget {
    /// Pod endpoints from EndpointSlices/Endpoints.
    Endpoints {
        /// Ready endpoints: the only ones that get new requests.
        ready: Vec<SocketAddr>,
        /// Endpoints that exist but are not ready (shown, never used).
        not_ready: Vec<SocketAddr>,
    },
    /// A Service of type `ExternalName`: the proxy resolves the name when it connects.
    ExternalName {
        /// The DNS name.
        host: String,
        /// The port.
        port: u16,
    },
    /// Nothing can serve it (missing Service, no port, …); requests get 503.
    Unavailable {
        /// Why, for `/config` and logs.
        reason: String,
    },
}

/// One Service port as a load-balanced set of upstreams.
#[derive(Debug, Serialize)]
pub struct Backend {
    /// `namespace/service:port` as the Ingress named it.
    pub name: String,
    /// Where requests go.
    pub target: BackendTarget,
    #[serde(skip)]
    next: AtomicUsize,
}

impl Backend {
    /// A backend with a name and a target.
    pub fn new(name: impl Into<String>, target: BackendTarget) -> Self {
        Backend {
            name: name.into(),
            target,
            next: AtomicUsize::new(0),
        }
    }

    /// The ready endpoints (empty for other targets).
    pub fn ready(&self) -> &[SocketAddr] {
        match &self.target {
            BackendTarget::Endpoints { ready, .. } => ready,
            _ => &[],
        }
    }

    /// The next ready endpoint in round-robin order that is not in `exclude` (endpoints this
    /// request already failed to reach).
    pub fn pick_excluding(&self, exclude: &[SocketAddr]) -> Option<SocketAddr> {
        (0..self.ready().len())
            .filter_map(|_| self.pick())
            .find(|addr| !exclude.contains(addr))
    }

    /// The next ready endpoint in round-robin order.
    pub fn pick(&self) -> Option<SocketAddr> {
        let ready = self.ready();
        match ready.len() {
            0 => None,
            1 => Some(ready[0]),
            n => Some(ready[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }
}

/// How many backends one chunk of [`Backends`] holds.
const CHUNK: usize = 64;

/// Every backend of a table, indexed by [`BackendId`]. Held in fixed-size chunks behind `Arc`s, so
/// a table that differs from the one before only in some backends' endpoints
/// ([`Backends::replacing`]) copies the chunks those backends are in and shares all the others.
#[derive(Clone, Debug, Default)]
pub struct Backends {
    chunks: Vec<Arc<[Arc<Backend>]>>,
    len: usize,
}

impl Backends {
    /// No backends.
    pub fn new() -> Self {
        Self::default()
    }

    /// The backends of `list`, in order.
    pub fn from_vec(list: Vec<Arc<Backend>>) -> Self {
        let len = list.len();
        let chunks = list.chunks(CHUNK).map(Arc::from).collect();
        Backends { chunks, len }
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backend with index `index`, if there is one.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&Arc<Backend>> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }

    /// All backends in index order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Arc<Backend>> + '_ {
        Iter {
            chunks: self.chunks.iter(),
            current: [].iter(),
            left: self.len,
        }
    }

    /// Adds a backend at the end (copying the last chunk when it is shared).
    pub fn push(&mut self, backend: Arc<Backend>) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => {
                let mut chunk = last.to_vec();
                chunk.push(backend);
                *last = Arc::from(chunk);
            }
            _ => self.chunks.push(Arc::from(vec![backend])),
        }
        self.len += 1;
    }

    /// These backends with some replaced: the chunks holding a replaced backend are copied, every
    /// other chunk is shared. Indices past the end are ignored.
    pub fn replacing(&self, replaced: &[(BackendId, Arc<Backend>)]) -> Backends {
        let mut out = self.clone();
        let mut touched: Vec<usize> = replaced
            .iter()
            .map(|(id, _)| id.0 / CHUNK)
            .filter(|&c| c < out.chunks.len())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        for c in touched {
            let mut chunk = out.chunks[c].to_vec();
            for (id, backend) in replaced.iter().filter(|(id, _)| id.0 / CHUNK == c) {
                if let Some(slot) = chunk.get_mut(id.0 % CHUNK) {
                    *slot = backend.clone();
                }
            }
            out.chunks[c] = Arc::from(chunk);
        }
        out
    }

    /// These backends, each chunk that holds the same backends as `previous`'s chunk at its place
    /// taken from `previous`.
    pub(crate) fn share_chunks(mut self, previous: &Backends) -> Backends {
        for (chunk, old) in self.chunks.iter_mut().zip(&previous.chunks) {
            let same = chunk.len() == old.len()
                && chunk.iter().zip(old.iter()).all(|(a, b)| Arc::ptr_eq(a, b));
            if same {
                *chunk = old.clone();
            }
        }
        self
    }

    /// Whether backend `index` is the same allocation in both.
    pub fn shares(&self, other: &Backends, index: usize) -> bool {
        match (self.get(index), other.get(index)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl std::ops::Index<usize> for Backends {
    type Output = Arc<Backend>;

    #[inline]
    fn index(&self, index: usize) -> &Arc<Backend> {
        &self.chunks[index / CHUNK][index % CHUNK]
    }
}

impl std::ops::Index<BackendId> for Backends {
    type Output = Arc<Backend>;

    #[inline]
    fn index(&self, id: BackendId) -> &Arc<Backend> {
        &self[id.0]
    }
}

impl<'a> IntoIterator for &'a Backends {
    type Item = &'a Arc<Backend>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        Iter {
            chunks: self.chunks.iter(),
            current: [].iter(),
            left: self.len,
        }
    }
}

/// Iterator over [`Backends`].
pub struct Iter<'a> {
    chunks: std::slice::Iter<'a, Arc<[Arc<Backend>]>>,
    current: std::slice::Iter<'a, Arc<Backend>>,
    left: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Arc<Backend>;

    fn next(&mut self) -> Option<&'a Arc<Backend>> {
        loop {
            if let Some(b) = self.current.next() {
                self.left -= 1;
                return Some(b);
            }
            self.current = self.chunks.next()?.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl Serialize for Backends {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(i: usize) -> Arc<Backend> {
        Arc::new(Backend::new(
            format!("ns/s{i}:80"),
            BackendTarget::Unavailable { reason: "-".into() },
        ))
    }

    #[test]
    fn replacing_copies_only_the_chunks_it_changes() {
        let all: Vec<_> = (0..CHUNK * 3 + 5).map(named).collect();
        let backends = Backends::from_vec(all.clone());
        assert_eq!(backends.len(), all.len());
        assert!(backends.iter().zip(&all).all(|(a, b)| Arc::ptr_eq(a, b)));
        let replacement = named(1000);
        let next = backends.replacing(&[(BackendId(CHUNK + 3), replacement.clone())]);
        assert!(Arc::ptr_eq(&next[CHUNK + 3], &replacement));
        for i in 0..all.len() {
            assert_eq!(next.shares(&backends, i), i != CHUNK + 3, "{i}");
        }
        assert!(Arc::ptr_eq(&next.chunks[0], &backends.chunks[0]));
        assert!(!Arc::ptr_eq(&next.chunks[1], &backends.chunks[1]));
        assert!(Arc::ptr_eq(&next.chunks[3], &backends.chunks[3]));

        let mut grown = next.clone();
        grown.push(named(2000));
        assert_eq!(grown.len(), all.len() + 1);
        assert_eq!(grown[all.len()].name, "ns/s2000:80");
        assert_eq!(next.len(), all.len(), "the original is unchanged");
        assert_eq!(grown.iter().count(), grown.len());
        assert!(grown.get(grown.len()).is_none());
    }
}
