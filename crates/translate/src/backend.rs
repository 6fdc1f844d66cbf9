//! Resolving an Ingress backend: Service → port → EndpointSlices/Endpoints → addresses.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Display, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use model::k8s_openapi::api::core::v1::ServicePort;
use model::k8s_openapi::api::networking::v1::IngressBackend;
use model::{EndpointSlice, Endpoints, Kind, Named, ObjectKey, Service, Snapshot};
use table::fasthash::FastMap;
use table::{Backend, BackendTarget};

use crate::keyed::{key_hash, Keyed};
use crate::{Diagnostic, Severity};

pub use model::SERVICE_NAME_LABEL;

/// What translation remembers of the objects backends are resolved from: the Services,
/// Endpoints and EndpointSlices of the last snapshot (to tell which Services' inputs changed
/// since), and the EndpointSlices indexed by the Service they belong to, so resolving a backend
/// does not scan every slice. All keyed by the hashes of their keys, so no key is copied.
#[derive(Default)]
pub struct Index {
    services: Keyed<Arc<Service>>,
    endpoints: Keyed<Arc<Endpoints>>,
    slices: Keyed<Arc<EndpointSlice>>,
    /// The hash of a Service's key → its slices (and those of any Service whose key hash is the
    /// same), in slice key order.
    by_service: FastMap<u64, Vec<Arc<EndpointSlice>>>,
    /// Whether the index has been filled once.
    primed: bool,
}

/// The Services whose backends may resolve differently than at the previous update.
pub enum Changed {
    /// Any of them (the first update).
    All,
    /// These (a Service, its Endpoints or one of its EndpointSlices was added, changed or removed).
    Services(HashSet<ObjectKey>),
}

/// The namespace and name of the Service an EndpointSlice belongs to, by its label.
fn service_of(slice: &EndpointSlice) -> Option<(&str, &str)> {
    let service = slice.service.as_deref()?;
    Some((slice.object_namespace(), service))
}

/// An object's namespace and name (a missing namespace is `default`), by which slices are ordered.
fn slice_key(slice: &EndpointSlice) -> (&str, &str) {
    (slice.object_namespace(), slice.object_name())
}

/// An entry that differs between two snapshots: its key, old value and new value.
type Difference<T> = (ObjectKey, Option<Arc<T>>, Option<Arc<T>>);

/// The entries of `now` that differ from `last` (added, removed or replaced by a different
/// object), with their old and new values; `last` is brought up to date.
fn sync<T>(last: &mut Keyed<Arc<T>>, now: &BTreeMap<ObjectKey, Arc<T>>) -> Vec<Difference<T>>
where
    T: PartialEq + Named,
{
    let mut changes = Vec::new();
    let mut found = 0;
    for (key, object) in now {
        match last.get(key) {
            Some(old) => {
                found += 1;
                if !(Arc::ptr_eq(old, object) || **old == **object) {
                    changes.push((key.clone(), Some(old.clone()), Some(object.clone())));
                }
            }
            None => changes.push((key.clone(), None, Some(object.clone()))),
        }
    }
    if found < last.len() {
        for old in last.values() {
            let key = ObjectKey::of_object(&**old);
            if !now.contains_key(&key) {
                changes.push((key, Some(old.clone()), None));
            }
        }
    }
    for (key, _, new) in &changes {
        match new {
            Some(object) => {
                last.insert(key, object.clone());
            }
            None => {
                last.remove(key);
            }
        }
    }
    changes
}

/// Brings `last`'s entry for `key` in line with `now`'s; returns the old and new values when
/// they differ.
fn refresh<T>(
    last: &mut Keyed<Arc<T>>,
    now: &BTreeMap<ObjectKey, Arc<T>>,
    key: &ObjectKey,
) -> Option<Replaced<T>>
where
    T: PartialEq + Named,
{
    let new = now.get(key).cloned();
    let same = match (last.get(key), &new) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
        (None, None) => true,
        _ => false,
    };
    if same {
        return None;
    }
    let old = match &new {
        Some(object) => last.insert(key, object.clone()),
        None => last.remove(key),
    };
    Some((old, new))
}

/// `keyed` holding what `map` holds.
fn fill<T>(keyed: &mut Keyed<Arc<T>>, map: &BTreeMap<ObjectKey, Arc<T>>)
where
    T: Named,
{
    keyed.clear();
    keyed.reserve(map.len());
    for (key, object) in map {
        keyed.insert(key, object.clone());
    }
}

/// An entry's old and new value (`None`: absent).
type Replaced<T> = (Option<Arc<T>>, Option<Arc<T>>);

impl Index {
    /// Brings the index up to date with `snapshot`; says which Services' backends may resolve
    /// differently than before.
    pub fn update(&mut self, snapshot: &Snapshot) -> Changed {
        if !self.primed {
            self.prime(snapshot);
            return Changed::All;
        }
        let mut changed = HashSet::new();
        for (key, _, _) in sync(&mut self.services, &snapshot.services) {
            changed.insert(key);
        }
        for (key, _, _) in sync(&mut self.endpoints, &snapshot.endpoints) {
            changed.insert(key);
        }
        for (_, old, new) in sync(&mut self.slices, &snapshot.endpoint_slices) {
            self.move_slice(old, new, &mut changed);
        }
        Changed::Services(changed)
    }

    /// Brings the index up to date with `snapshot`, which differs from the snapshot of the last
    /// update only in the objects `changed` names (added, changed or removed); says which
    /// Services' backends may resolve differently than before. The cost is that of the changes.
    pub fn apply(&mut self, snapshot: &Snapshot, changed: &[(Kind, ObjectKey)]) -> Changed {
        if !self.primed {
            self.prime(snapshot);
            return Changed::All;
        }
        let mut services = HashSet::new();
        for (kind, key) in changed {
            let moved = match kind {
                Kind::Service => refresh(&mut self.services, &snapshot.services, key).map(|_| ()),
                Kind::Endpoints => {
                    refresh(&mut self.endpoints, &snapshot.endpoints, key).map(|_| ())
                }
                Kind::EndpointSlice => {
                    if let Some((old, new)) =
                        refresh(&mut self.slices, &snapshot.endpoint_slices, key)
                    {
                        self.move_slice(old, new, &mut services);
                    }
                    None
                }
                _ => None,
            };
            if moved.is_some() {
                services.insert(key.clone());
            }
        }
        Changed::Services(services)
    }

    /// Fills the index from `snapshot` alone.
    fn prime(&mut self, snapshot: &Snapshot) {
        self.primed = true;
        fill(&mut self.services, &snapshot.services);
        fill(&mut self.endpoints, &snapshot.endpoints);
        fill(&mut self.slices, &snapshot.endpoint_slices);
        self.by_service.clear();
        // Slices come in key order, so each Service's list is in order too.
        for slice in snapshot.endpoint_slices.values() {
            if let Some((ns, name)) = service_of(slice) {
                self.by_service
                    .entry(key_hash(ns, name))
                    .or_default()
                    .push(slice.clone());
            }
        }
        // Nearly every Service has one slice: lists grown one push at a time hold room for four.
        for list in self.by_service.values_mut() {
            list.shrink_to_fit();
        }
    }

    /// Files a slice under the Service it now belongs to instead of the one it belonged to,
    /// recording both Services as changed.
    fn move_slice(
        &mut self,
        old: Option<Arc<EndpointSlice>>,
        new: Option<Arc<EndpointSlice>>,
        changed: &mut HashSet<ObjectKey>,
    ) {
        if let Some(old) = &old {
            if let Some((ns, name)) = service_of(old) {
                let hash = key_hash(ns, name);
                if let Some(list) = self.by_service.get_mut(&hash) {
                    list.retain(|s| slice_key(s) != slice_key(old));
                    if list.is_empty() {
                        self.by_service.remove(&hash);
                    }
                }
                changed.insert(ObjectKey::new(ns, name));
            }
        }
        if let Some(slice) = new {
            if let Some((ns, name)) = service_of(&slice) {
                changed.insert(ObjectKey::new(ns, name));
                let list = self.by_service.entry(key_hash(ns, name)).or_default();
                let at = list.partition_point(|s| slice_key(s) < slice_key(&slice));
                list.insert(at, slice);
            }
        }
    }
}

/// The snapshot with the [`Index`] kept in step with it.
pub struct Objects<'a> {
    /// Everything read.
    pub snapshot: &'a Snapshot,
    /// The EndpointSlices by Service.
    pub index: &'a Index,
}

impl<'a> Objects<'a> {
    fn slices_of(&self, service: &'a ObjectKey) -> impl Iterator<Item = &'a EndpointSlice> {
        self.index
            .by_service
            .get(&key_hash(&service.namespace, &service.name))
            .into_iter()
            .flatten()
            .map(|slice| &**slice)
            .filter(move |slice| {
                service_of(slice) == Some((service.namespace.as_str(), service.name.as_str()))
            })
    }
}

/// Backends resolved for one Ingress, and the Services they were resolved from.
#[derive(Default)]
pub struct Resolved {
    /// Backends in the order the Ingress names them.
    pub backends: Vec<Arc<Backend>>,
    /// The Services looked up (present or not).
    pub services: Vec<ObjectKey>,
}

/// Resolves one Ingress backend to a table backend, added to `resolved`; returns its index there.
/// Returns `None` (with an error diagnostic) when the backend is unusable as written; a backend
/// that exists but cannot serve yet resolves to a 503-answering [`BackendTarget::Unavailable`] or
/// an endpoint list with nothing ready.
pub fn resolve(
    objects: &Objects<'_>,
    ingress: &ObjectKey,
    backend: &IngressBackend,
    field: &dyn Display,
    service_upstream: bool,
    resolved: &mut Resolved,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<usize> {
    let mut diag = |severity, field: String, message: String| {
        diagnostics.push(Diagnostic::new(
            severity,
            Kind::Ingress,
            ingress,
            Some(field),
            message,
        ))
    };
    if backend.resource.is_some() {
        diag(
            Severity::Error,
            format!("{field}.resource"),
            "resource backends are not supported; use a Service backend".into(),
        );
        return None;
    }
    let Some(service) = &backend.service else {
        diag(
            Severity::Error,
            format!("{field}.service"),
            "missing: a backend needs a Service".into(),
        );
        return None;
    };
    let port = service.port.as_ref();
    let (port_number, port_name) = (
        port.and_then(|p| p.number),
        port.and_then(|p| p.name.as_deref())
            .filter(|n| !n.is_empty()),
    );
    let port_display = match (port_number, port_name) {
        (Some(n), _) => Port::Number(n),
        (None, Some(name)) => Port::Name(name),
        (None, None) => {
            diag(
                Severity::Error,
                format!("{field}.service.port"),
                "missing: give the Service port by number or by name".into(),
            );
            return None;
        }
    };
    let svc_key = ObjectKey::new(ingress.namespace.clone(), service.name.clone());
    let mut name = backend_name(&svc_key, port_display);
    if service_upstream {
        name.push_str(" (service-upstream)");
    }

    let target = match objects.snapshot.services.get_key_value(&svc_key) {
        None => {
            diag(
                Severity::Error,
                format!("{field}.service.name"),
                format!("Service {svc_key} not found; requests get 503"),
            );
            BackendTarget::Unavailable {
                reason: format!("Service {svc_key} not found"),
            }
        }
        Some((found_key, svc)) => match find_port(svc, port_number, port_name) {
            None => {
                let available = svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.ports.as_ref())
                    .map(|ports| {
                        ports
                            .iter()
                            .map(|p| match &p.name {
                                Some(n) if !n.is_empty() => format!("{} ({n})", p.port),
                                _ => p.port.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                diag(
                    Severity::Error,
                    format!("{field}.service.port"),
                    format!(
                        "Service {svc_key} has no port {port_display} (it has: {}); requests get 503",
                        if available.is_empty() { "none" } else { &available }
                    ),
                );
                BackendTarget::Unavailable {
                    reason: format!("Service {svc_key} has no port {port_display}"),
                }
            }
            Some(svc_port) if service_upstream => {
                cluster_ip_target(svc, svc_port).unwrap_or_else(|why| {
                    diag(
                        Severity::Warning,
                        format!("{field}.service.name"),
                        format!("service-upstream: Service {svc_key} {why}; using its endpoints"),
                    );
                    service_target(objects, found_key, svc, svc_port, &mut diag, field)
                })
            }
            Some(svc_port) => service_target(objects, found_key, svc, svc_port, &mut diag, field),
        },
    };
    if !resolved.services.contains(&svc_key) {
        resolved.services.push(svc_key);
    }
    resolved.backends.push(Arc::new(Backend::new(name, target)));
    Some(resolved.backends.len() - 1)
}

/// `namespace/service:port`, the name of a backend (written without `format!`, which costs more
/// than the rest of resolving a backend).
fn backend_name(svc_key: &ObjectKey, port: Port<'_>) -> String {
    let mut name = crate::key_text(svc_key, 8);
    name.push(':');
    match port {
        Port::Number(n) => {
            let _ = write!(name, "{n}");
        }
        Port::Name(n) => name.push_str(n),
    }
    name
}

/// A Service port as an Ingress backend names it.
#[derive(Clone, Copy)]
enum Port<'a> {
    Number(i32),
    Name(&'a str),
}

impl Display for Port<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Number(n) => write!(f, "{n}"),
            Port::Name(name) => f.write_str(name),
        }
    }
}

fn find_port<'a>(
    svc: &'a Service,
    number: Option<i32>,
    name: Option<&str>,
) -> Option<&'a ServicePort> {
    let ports = svc.spec.as_ref()?.ports.as_ref()?;
    ports.iter().find(|p| match (number, name) {
        (Some(n), _) => p.port == n,
        (None, Some(name)) => p.name.as_deref() == Some(name),
        (None, None) => false,
    })
}

/// The Service's cluster IP and port (`service-upstream`), letting kube-proxy pick the endpoint.
fn cluster_ip_target(svc: &Service, svc_port: &ServicePort) -> Result<BackendTarget, String> {
    let ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .ok_or("has no cluster IP (headless, or not assigned)")?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("has cluster IP {ip:?}, which is not an IP address"))?;
    let port = u16::try_from(svc_port.port).map_err(|_| "has a port out of range".to_string())?;
    Ok(BackendTarget::Endpoints {
        ready: vec![SocketAddr::new(ip, port)],
        not_ready: Vec::new(),
    })
}

fn service_target(
    objects: &Objects<'_>,
    svc_key: &ObjectKey,
    svc: &Service,
    svc_port: &ServicePort,
    diag: &mut impl FnMut(Severity, String, String),
    field: &dyn Display,
) -> BackendTarget {
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        let host = spec
            .and_then(|s| s.external_name.as_deref())
            .unwrap_or_default();
        if host.is_empty() {
            diag(
                Severity::Error,
                format!("{field}.service.name"),
                format!("Service {svc_key} is of type ExternalName but has no spec.externalName"),
            );
            return BackendTarget::Unavailable {
                reason: "ExternalName Service without externalName".into(),
            };
        }
        let Ok(port) = u16::try_from(svc_port.port) else {
            return BackendTarget::Unavailable {
                reason: format!("port {} out of range", svc_port.port),
            };
        };
        return BackendTarget::ExternalName {
            host: host.trim_end_matches('.').to_string(),
            port,
        };
    }

    let port_name = svc_port.name.as_deref().unwrap_or_default();
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    let mut found_source = false;

    for slice in objects.slices_of(svc_key) {
        let ns = &svc_key.namespace;
        found_source = true;
        if slice.address_type == "FQDN" {
            diag(
                Severity::Warning,
                format!("{field}.service.name"),
                format!(
                    "EndpointSlice {}/{} has addressType FQDN, which is not supported; skipped",
                    ns,
                    slice.metadata.name.as_deref().unwrap_or_default()
                ),
            );
            continue;
        }
        let Some(port) = slice.ports.as_ref().and_then(|ports| {
            ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
                .and_then(|p| p.port)
        }) else {
            continue;
        };
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let conditions = endpoint.conditions.as_ref();
            // An unknown `ready` condition means ready, per the EndpointSlice API.
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true)
                && !conditions.and_then(|c| c.terminating).unwrap_or(false);
            let addr = SocketAddr::new(ip, port);
            if is_ready {
                ready.push(addr);
            } else {
                not_ready.push(addr);
            }
        }
    }

    if !found_source {
        if let Some(eps) = objects.snapshot.endpoints.get(svc_key) {
            found_source = true;
            for subset in eps.subsets.iter().flatten() {
                let Some(port) = subset.ports.as_ref().and_then(|ports| {
                    ports
                        .iter()
                        .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
                        .map(|p| p.port)
                }) else {
                    continue;
                };
                let Ok(port) = u16::try_from(port) else {
                    continue;
                };
                let addrs =
                    |list: &Option<Vec<model::k8s_openapi::api::core::v1::EndpointAddress>>| {
                        list.iter()
                            .flatten()
                            .filter_map(|a| a.ip.parse::<IpAddr>().ok())
                            .map(|ip| SocketAddr::new(ip, port))
                            .collect::<Vec<_>>()
                    };
                ready.extend(addrs(&subset.addresses));
                not_ready.extend(addrs(&subset.not_ready_addresses));
            }
        }
    }

    if !found_source {
        let what = if spec
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !s.is_empty())
        {
            "selects Pods, but nothing here says where they are"
        } else {
            "has no selector and no endpoints"
        };
        diag(
            Severity::Warning,
            format!("{field}.service.name"),
            format!(
                "Service {svc_key} {what}; requests get 503. Add an EndpointSlice (discovery.k8s.io/v1) \
                 labelled {SERVICE_NAME_LABEL}: {} with the Pod addresses{}",
                svc_key.name,
                if port_name.is_empty() {
                    String::from(" and the target port")
                } else {
                    format!(" and a port named {port_name:?}")
                }
            ),
        );
        return BackendTarget::Unavailable {
            reason: format!("no EndpointSlice or Endpoints for Service {svc_key}"),
        };
    }
    ready.sort();
    ready.dedup();
    not_ready.sort();
    not_ready.dedup();
    not_ready.retain(|a| !ready.contains(a));
    // The lists live as long as the table; most hold one or two addresses.
    ready.shrink_to_fit();
    not_ready.shrink_to_fit();
    if ready.is_empty() {
        diag(
            Severity::Warning,
            format!("{field}.service.name"),
            format!(
                "Service {svc_key} port {} has no ready endpoints; requests get 503",
                if port_name.is_empty() {
                    svc_port.port.to_string()
                } else {
                    port_name.to_string()
                }
            ),
        );
    }
    BackendTarget::Endpoints { ready, not_ready }
}
