//! The objects Portcullis reads and the [`Snapshot`] they form.
//!
//! This is the first stage of the spine: sources (a manifest folder, the Kubernetes API) produce a
//! `Snapshot`, and everything after that — translation, the routing table, the proxy — is shared.
//! Nothing here does IO; [`parse_manifests`] turns text that a source has read into objects.
#![forbid(unsafe_code)]

mod diagnostic;
mod meta;
mod parse;
pub mod service;
pub mod slice;
mod snapshot;

pub use diagnostic::{Diagnostic, Severity, Subject};
pub use k8s_openapi;
pub use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Secret};
pub use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
pub use meta::Meta;
pub use parse::{parse_manifests, ManifestError, Parsed};
pub use service::Service;
pub use slice::{EndpointSlice, SERVICE_NAME_LABEL};
pub use snapshot::{Kind, Named, Object, ObjectKey, SharedObject, Snapshot};
