//! Resolving an Ingress backend: Service → port → EndpointSlices/Endpoints → addresses.

use std::collections::HashMap;
use std::fmt::{self, Display, Write as _};
use std::net::{IpAddr, SocketAddr};

use model::k8s_openapi::api::core::v1::ServicePort;
use model::k8s_openapi::api::networking::v1::IngressBackend;
use model::{EndpointSlice, ObjectKey, Service, Snapshot};
use table::{BackendId, BackendTarget, TableBuilder};

use crate::{Diagnostic, Severity};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The snapshot with the EndpointSlices indexed by the Service they belong to, so resolving a
/// backend does not scan every slice.
pub struct Objects<'a> {
    /// Everything read.
    pub snapshot: &'a Snapshot,
    /// (namespace, service name) → slices.
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> Objects<'a> {
    /// Indexes a snapshot.
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> =
            HashMap::with_capacity(snapshot.endpoint_slices.len());
        for slice in snapshot.endpoint_slices.values() {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(service) = service {
                let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
                slices
                    .entry((ns, service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        Objects { snapshot, slices }
    }

    fn slices_of(&self, service: &'a ObjectKey) -> &[&'a EndpointSlice] {
        self.slices
            .get(&(service.namespace.as_str(), service.name.as_str()))
            .map_or(&[], Vec::as_slice)
    }
}

/// Resolves one Ingress backend to a table backend. Returns `None` (with an error diagnostic) when
/// the backend is unusable as written; a backend that exists but cannot serve yet resolves to a
/// 503-answering [`BackendTarget::Unavailable`] or an endpoint list with nothing ready.
pub fn resolve<'a>(
    objects: &Objects<'a>,
    ingress: &ObjectKey,
    backend: &IngressBackend,
    field: &dyn Display,
    builder: &mut TableBuilder,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<BackendId> {
    let mut diag = |severity, field: String, message: String| {
        diagnostics.push(Diagnostic::new(
            severity,
            "Ingress",
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
    let name = backend_name(&svc_key, port_display);

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
            Some(svc_port) => service_target(objects, found_key, svc, svc_port, &mut diag, field),
        },
    };
    Some(builder.backend(name, || target))
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

fn service_target<'a>(
    objects: &Objects<'a>,
    svc_key: &'a ObjectKey,
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
