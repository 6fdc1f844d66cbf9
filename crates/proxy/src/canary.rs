//! Which backend serves a route with a canary: ingress-nginx's order of `canary-by-header`,
//! `canary-by-cookie` and `canary-weight`, after session affinity.

use std::sync::Arc;

use table::{BackendId, Balance, Canary, Policy, Route};

use crate::decide::View;

/// The backend that serves `route` for this request and the balancing of its endpoints: the
/// route's own with the route's `rules`, or its canary's with the canary's (and then the canary).
pub(crate) fn serving<'r>(
    route: &'r Route,
    rules: Option<&'r Policy>,
    view: &View<'_>,
) -> (BackendId, Option<&'r Balance>, Option<&'r Arc<Canary>>) {
    let main = rules.and_then(|p| p.balance.as_ref());
    match &route.policy.canary {
        Some(canary) if chooses(canary, main, view) => {
            (canary.backend, canary.balance.as_ref(), Some(canary))
        }
        _ => (route.backend, main, None),
    }
}

/// Whether the request goes to `canary` rather than to the route's backend (balanced by `main`).
fn chooses(canary: &Canary, main: Option<&Balance>, view: &View<'_>) -> bool {
    let holds = |b: Option<&Balance>| {
        b.and_then(|b| b.affinity.as_ref())
            .is_some_and(|a| view.headers.cookie(&a.name).is_some())
    };
    // A request already held by the main backend's affinity stays there; one held by the
    // canary's stays on the canary, unless the canary asks for the legacy behaviour.
    if holds(main) {
        return false;
    }
    if canary.sticky && holds(canary.balance.as_ref()) {
        return true;
    }
    let header = canary
        .header
        .as_ref()
        .and_then(|h| view.headers.get(&h.name));
    let cookie = canary
        .cookie
        .as_deref()
        .and_then(|name| view.headers.cookie(name));
    canary.chooses(header, cookie, |total| {
        (crate::balance::random() % u64::from(total)) as u32
    })
}
