use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The kinds of object Portcullis reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `networking.k8s.io/v1` Ingress.
    Ingress,
    /// `networking.k8s.io/v1` IngressClass (cluster-scoped).
    IngressClass,
    /// `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `v1` Endpoints (legacy).
    Endpoints,
    /// `v1` Secret.
    Secret,
}

impl Kind {
    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Endpoints => "Endpoints",
            Kind::Secret => "Secret",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Namespace and name of an object; cluster-scoped objects have an empty namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The namespace (`default` when a manifest names none; empty for cluster-scoped kinds).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// A key from namespace and name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object's metadata; a missing namespace means `default`.
    pub fn of(meta: &ObjectMeta) -> Self {
        ObjectKey {
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One object of a kind Portcullis reads.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// An Ingress (older API versions are converted to v1 when parsed).
    Ingress(Ingress),
    /// An IngressClass.
    IngressClass(IngressClass),
    /// A Service.
    Service(Service),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A legacy Endpoints object.
    Endpoints(Endpoints),
    /// A Secret (`stringData` already folded into `data`).
    Secret(Secret),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Ingress(_) => Kind::Ingress,
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::Secret(_) => Kind::Secret,
        }
    }

    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Ingress(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
        }
    }

    /// The object's key (IngressClass is cluster-scoped, so its namespace is empty).
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::IngressClass(o) => {
                ObjectKey::new("", o.metadata.name.clone().unwrap_or_default())
            }
            other => ObjectKey::of(other.meta()),
        }
    }
}

/// An immutable set of objects, keyed by kind, namespace and name: what a source hands to translation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Ingresses by namespace/name.
    pub ingresses: BTreeMap<ObjectKey, Ingress>,
    /// IngressClasses by name (empty namespace).
    pub ingress_classes: BTreeMap<ObjectKey, IngressClass>,
    /// Services by namespace/name.
    pub services: BTreeMap<ObjectKey, Service>,
    /// EndpointSlices by namespace/name.
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// Legacy Endpoints by namespace/name (same name as their Service).
    pub endpoints: BTreeMap<ObjectKey, Endpoints>,
    /// Secrets by namespace/name.
    pub secrets: BTreeMap<ObjectKey, Secret>,
}

impl Snapshot {
    /// Adds an object; returns `true` when it replaced one with the same kind and key.
    pub fn insert(&mut self, object: Object) -> bool {
        let key = object.key();
        match object {
            Object::Ingress(o) => self.ingresses.insert(key, o).is_some(),
            Object::IngressClass(o) => self.ingress_classes.insert(key, o).is_some(),
            Object::Service(o) => self.services.insert(key, o).is_some(),
            Object::EndpointSlice(o) => self.endpoint_slices.insert(key, o).is_some(),
            Object::Endpoints(o) => self.endpoints.insert(key, o).is_some(),
            Object::Secret(o) => self.secrets.insert(key, o).is_some(),
        }
    }

    /// Removes an object by kind and key; returns whether it was present.
    pub fn remove(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::Ingress => self.ingresses.remove(key).is_some(),
            Kind::IngressClass => self.ingress_classes.remove(key).is_some(),
            Kind::Service => self.services.remove(key).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(key).is_some(),
            Kind::Endpoints => self.endpoints.remove(key).is_some(),
            Kind::Secret => self.secrets.remove(key).is_some(),
        }
    }

    /// Builds a snapshot from objects; later objects replace earlier ones with the same key.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut snapshot = Snapshot::default();
        for object in objects {
            snapshot.insert(object);
        }
        snapshot
    }

    /// Total number of objects held.
    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.endpoints.len()
            + self.secrets.len()
    }

    /// Whether the snapshot holds no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
