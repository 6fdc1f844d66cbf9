//! EndpointSlices as a snapshot holds them: only what routing reads of one.
//!
//! A `discovery.k8s.io/v1` EndpointSlice as the API defines it is several hundred bytes before
//! any of its contents (full object metadata, a label map, endpoints with topology, hints and
//! target references), and a cluster or folder has one or more for every Service. Portcullis
//! reads the key, the Service label, the address type, the ports and each endpoint's addresses
//! and conditions; the rest is dropped when an object is read. Written out (see
//! [`EndpointSlice::to_api`]) a slice is a valid EndpointSlice manifest again.

use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1 as api;

use crate::meta::Meta;

pub use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One endpoint of a slice: its addresses and conditions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Endpoint {
    /// `addresses` (the first one is used).
    pub addresses: Vec<String>,
    /// `conditions`: ready, serving, terminating.
    pub conditions: Option<EndpointConditions>,
}

/// An EndpointSlice: the part of one that routing reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointSlice {
    /// Name, namespace and uid.
    pub metadata: Meta,
    /// The `kubernetes.io/service-name` label: the Service the slice belongs to.
    pub service: Option<String>,
    /// `addressType`: `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    /// `endpoints`.
    pub endpoints: Option<Vec<Endpoint>>,
    /// `ports`.
    pub ports: Option<Vec<EndpointPort>>,
}

impl From<api::EndpointSlice> for EndpointSlice {
    fn from(slice: api::EndpointSlice) -> Self {
        let mut metadata = slice.metadata;
        let service = metadata
            .labels
            .as_mut()
            .and_then(|labels| labels.remove(SERVICE_NAME_LABEL));
        EndpointSlice {
            metadata: Meta::of(metadata),
            service,
            address_type: slice.address_type,
            endpoints: slice.endpoints.map(|endpoints| {
                // Into a list of its own: collected in place, the endpoints would keep the room
                // of the API's ten times larger ones.
                let mut kept = Vec::with_capacity(endpoints.len());
                kept.extend(endpoints.into_iter().map(|e| Endpoint {
                    addresses: e.addresses,
                    conditions: e.conditions,
                }));
                kept
            }),
            ports: slice.ports,
        }
    }
}

impl EndpointSlice {
    /// The slice as the API writes it.
    pub fn to_api(&self) -> api::EndpointSlice {
        let mut metadata = self.metadata.to_api();
        metadata.labels = self
            .service
            .as_ref()
            .map(|service| BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), service.clone())]));
        api::EndpointSlice {
            metadata,
            address_type: self.address_type.clone(),
            endpoints: self.endpoints.as_ref().map(|endpoints| {
                endpoints
                    .iter()
                    .map(|e| api::Endpoint {
                        addresses: e.addresses.clone(),
                        conditions: e.conditions.clone(),
                        ..api::Endpoint::default()
                    })
                    .collect()
            }),
            ports: self.ports.clone(),
        }
    }
}

impl serde::Serialize for EndpointSlice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_api().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_keeps_what_routing_reads_and_writes_back_as_a_manifest() {
        let text = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  \
                    namespace: apps\n  uid: u-1\n  labels: {kubernetes.io/service-name: web, team: a}\n  \
                    annotations: {note: x}\naddressType: IPv4\nports: [{name: http, port: 8080}]\n\
                    endpoints:\n  - addresses: [10.0.0.1]\n    conditions: {ready: false, terminating: true}\n    \
                    nodeName: n1\n    zone: z\n";
        let api: api::EndpointSlice = serde_norway::from_str(text).expect("parses");
        let slice = EndpointSlice::from(api);
        assert_eq!(slice.metadata.name.as_deref(), Some("web-1"));
        assert_eq!(slice.metadata.namespace.as_deref(), Some("apps"));
        assert_eq!(slice.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(slice.service.as_deref(), Some("web"));
        let endpoints = slice.endpoints.as_deref().unwrap_or_default();
        assert_eq!(endpoints[0].addresses, ["10.0.0.1"]);
        let conditions = endpoints[0].conditions.as_ref().expect("conditions");
        assert_eq!(
            (conditions.ready, conditions.terminating),
            (Some(false), Some(true))
        );
        assert_eq!(slice.endpoints.as_ref().map(Vec::capacity), Some(1));

        let written = serde_json::to_value(&slice).expect("serializes");
        assert_eq!(written["kind"], "EndpointSlice");
        assert_eq!(written["apiVersion"], "discovery.k8s.io/v1");
        assert_eq!(
            written["metadata"]["labels"]["kubernetes.io/service-name"],
            "web"
        );
        let again: api::EndpointSlice = serde_json::from_value(written).expect("reads back");
        assert_eq!(EndpointSlice::from(again), slice);
    }
}
