//! Backends: a Service port resolved to the addresses that serve it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

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
