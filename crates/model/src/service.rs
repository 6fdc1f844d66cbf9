//! Services as a snapshot holds them: only what routing reads of one.
//!
//! A `v1` Service as the API defines it is over 800 bytes before any of its contents (full object
//! metadata, a spec of some thirty fields, a status). Portcullis reads the key, the type, the
//! external name, the cluster IP, the selector (whether there is one) and the ports; the rest is
//! dropped when an object is read. Written out (see [`Service::to_api`]) a Service is a valid
//! Service manifest again.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as api;

pub use k8s_openapi::api::core::v1::ServicePort;

use crate::meta::Meta;

/// The part of a Service's spec that routing reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceSpec {
    /// `type`: `ClusterIP` (when missing), `NodePort`, `LoadBalancer` or `ExternalName`.
    pub type_: Option<String>,
    /// `externalName`, for a Service of type `ExternalName`.
    pub external_name: Option<String>,
    /// `clusterIP` (`None` as a string for a headless Service).
    pub cluster_ip: Option<String>,
    /// `selector`: the Pods the Service selects.
    pub selector: Option<BTreeMap<String, String>>,
    /// `ports`.
    pub ports: Option<Vec<ServicePort>>,
}

/// A Service: the part of one that routing reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Service {
    /// Name, namespace and uid.
    pub metadata: Meta,
    /// `spec`.
    pub spec: Option<ServiceSpec>,
}

impl From<api::Service> for Service {
    fn from(service: api::Service) -> Self {
        Service {
            metadata: Meta::of(service.metadata),
            spec: service.spec.map(|spec| ServiceSpec {
                type_: spec.type_,
                external_name: spec.external_name,
                cluster_ip: spec.cluster_ip,
                selector: spec.selector,
                ports: spec.ports,
            }),
        }
    }
}

impl Service {
    /// The Service as the API writes it.
    pub fn to_api(&self) -> api::Service {
        api::Service {
            metadata: self.metadata.to_api(),
            spec: self.spec.as_ref().map(|spec| api::ServiceSpec {
                type_: spec.type_.clone(),
                external_name: spec.external_name.clone(),
                cluster_ip: spec.cluster_ip.clone(),
                selector: spec.selector.clone(),
                ports: spec.ports.clone(),
                ..api::ServiceSpec::default()
            }),
            status: None,
        }
    }
}

impl serde::Serialize for Service {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_api().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_keeps_what_routing_reads_and_writes_back_as_a_manifest() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: apps\n  \
                    uid: u-1\n  labels: {team: a}\n  annotations: {note: x}\nspec:\n  \
                    type: ExternalName\n  externalName: web.example.com\n  clusterIP: 10.0.0.1\n  \
                    selector: {app: web}\n  sessionAffinity: ClientIP\n  ports:\n    \
                    - {name: http, port: 80, targetPort: 8080, protocol: TCP, appProtocol: h2c}\n\
                    status: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}\n";
        let api: api::Service = serde_norway::from_str(text).expect("parses");
        let service = Service::from(api);
        assert_eq!(service.metadata.name.as_deref(), Some("web"));
        assert_eq!(service.metadata.namespace.as_deref(), Some("apps"));
        assert_eq!(service.metadata.uid.as_deref(), Some("u-1"));
        let spec = service.spec.as_ref().expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ExternalName"));
        assert_eq!(spec.external_name.as_deref(), Some("web.example.com"));
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.0.0.1"));
        assert!(spec
            .selector
            .as_ref()
            .is_some_and(|s| s.contains_key("app")));
        let port = &spec.ports.as_deref().unwrap_or_default()[0];
        assert_eq!(
            (
                port.name.as_deref(),
                port.port,
                port.app_protocol.as_deref()
            ),
            (Some("http"), 80, Some("h2c"))
        );

        let written = serde_json::to_value(&service).expect("serializes");
        assert_eq!(written["kind"], "Service");
        assert_eq!(written["apiVersion"], "v1");
        assert_eq!(written["spec"]["ports"][0]["targetPort"], 8080);
        let again: api::Service = serde_json::from_value(written).expect("reads back");
        assert_eq!(Service::from(again), service);
    }
}
