//! Attaching canary Ingresses to the routes of the others: each (host, path) of a canary that a
//! non-canary Ingress also routes gives that route the canary's backend as its alternative.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use model::{Kind, ObjectKey};
use table::{BackendId, Canary, HostPattern, RouteOrigin, TableBuilder};

use crate::{Diagnostic, Severity};

/// Where a route lives: host, `Exact` map or not, key in that map.
pub(crate) type PathKey = (HostPattern, bool, String);

/// The key of a route of `host` from `origin`.
pub(crate) fn path_key(host: &HostPattern, origin: &RouteOrigin) -> PathKey {
    let (exact, path) = origin.map_key();
    (host.clone(), exact, path.to_string())
}

/// One canary path waiting for the route it attaches to.
struct Pending {
    backend: Arc<table::Backend>,
    canary: Canary,
    /// The canary Ingress and the index of the backend in its plan.
    owner: ObjectKey,
    index: usize,
    /// The canary as attached, once a route took it.
    attached: Option<Arc<Canary>>,
}

/// The canaries of one translation, by the path they attach to.
#[derive(Default)]
pub(crate) struct Canaries {
    by_path: HashMap<PathKey, Pending>,
}

/// What became of a canary path.
pub(crate) enum Claim {
    /// It attaches to the route of that path.
    Claimed,
    /// No non-canary Ingress routes the path.
    Unmatched,
    /// An older canary Ingress already attaches to it.
    Taken(String),
}

impl Canaries {
    /// Whether there is any canary path to attach.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Records a path of the canary Ingress `owner` (with its backend, index `index` in its
    /// plan); `routed` holds the paths of the non-canary Ingresses.
    pub(crate) fn claim(
        &mut self,
        routed: &HashSet<PathKey>,
        key: PathKey,
        owner: &ObjectKey,
        canary: &Canary,
        backend: (&Arc<table::Backend>, usize),
    ) -> Claim {
        if !routed.contains(&key) {
            return Claim::Unmatched;
        }
        if let Some(first) = self.by_path.get(&key) {
            return Claim::Taken(first.canary.ingress.clone());
        }
        self.by_path.insert(
            key,
            Pending {
                backend: backend.0.clone(),
                canary: canary.clone(),
                owner: owner.clone(),
                index: backend.1,
                attached: None,
            },
        );
        Claim::Claimed
    }

    /// The canary of the route about to be added for `key`, if it has one and no route took it
    /// yet; the backend is added to the table.
    pub(crate) fn offer(
        &mut self,
        builder: &mut TableBuilder,
        key: &PathKey,
    ) -> Option<Arc<Canary>> {
        let pending = self.by_path.get_mut(key)?;
        if pending.attached.is_some() {
            return None;
        }
        let id = builder.shared_backend(&pending.backend);
        Some(Arc::new(Canary {
            backend: id,
            ..pending.canary.clone()
        }))
    }

    /// Records that the route of `key` was added with `canary`.
    pub(crate) fn attached(&mut self, key: &PathKey, canary: Arc<Canary>) {
        if let Some(pending) = self.by_path.get_mut(key) {
            pending.attached = Some(canary);
        }
    }

    /// The table ids the canary Ingresses' backends got: (Ingress, backend index, id).
    pub(crate) fn ids(&self) -> impl Iterator<Item = (&ObjectKey, usize, BackendId)> {
        self.by_path.values().filter_map(|p| {
            let canary = p.attached.as_ref()?;
            Some((&p.owner, p.index, canary.backend))
        })
    }
}

/// The diagnostic for a canary path that attaches to nothing.
pub(crate) fn unclaimed(
    key: &ObjectKey,
    origin: &RouteOrigin,
    claim: &Claim,
) -> Option<Box<Diagnostic>> {
    let message = match claim {
        Claim::Claimed => return None,
        Claim::Unmatched => format!(
            "canary: no non-canary Ingress routes {} {:?} on host {:?}; this canary path is not served",
            origin.path_type.as_str(),
            origin.path,
            origin.host
        ),
        Claim::Taken(first) => format!(
            "canary: {} {:?} on host {:?} already has the canary Ingress {first}, which takes precedence; ignored",
            origin.path_type.as_str(),
            origin.path,
            origin.host
        ),
    };
    Some(Box::new(Diagnostic::new(
        Severity::Warning,
        Kind::Ingress,
        key,
        Some(origin.field()),
        message,
    )))
}
