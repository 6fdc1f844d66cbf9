use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Secret};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::service::Service;
use crate::slice::EndpointSlice;

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
    /// `v1` ConfigMap (read for annotations that name one, such as `custom-headers`).
    ConfigMap,
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
            Kind::ConfigMap => "ConfigMap",
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
        ObjectKey::of_object(meta)
    }

    /// The key of an object; a missing namespace means `default`.
    pub fn of_object<T: Named + ?Sized>(object: &T) -> Self {
        ObjectKey::new(object.object_namespace(), object.object_name())
    }
}

/// The name and namespace of an object of a kind a [`Snapshot`] holds.
pub trait Named {
    /// `metadata.name` (empty when missing).
    fn object_name(&self) -> &str;
    /// `metadata.namespace`; a missing namespace is `default`.
    fn object_namespace(&self) -> &str;

    /// Whether the object is the one `key` names.
    fn is(&self, key: &ObjectKey) -> bool {
        self.object_name() == key.name && self.object_namespace() == key.namespace
    }
}

/// Metadata, full or reduced, names its object.
macro_rules! named_by_fields {
    ($($ty:ty),*) => {$(
        impl Named for $ty {
            fn object_name(&self) -> &str {
                self.name.as_deref().unwrap_or_default()
            }
            fn object_namespace(&self) -> &str {
                self.namespace.as_deref().unwrap_or("default")
            }
        }
    )*};
}

named_by_fields!(ObjectMeta, crate::meta::Meta);

macro_rules! named_by_meta {
    ($($ty:ty),*) => {$(
        impl Named for $ty {
            fn object_name(&self) -> &str {
                self.metadata.object_name()
            }
            fn object_namespace(&self) -> &str {
                self.metadata.object_namespace()
            }
        }
    )*};
}

named_by_meta!(
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    Endpoints,
    Secret,
    ConfigMap
);

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
    /// A Service (what routing reads of one).
    Service(Service),
    /// An EndpointSlice (what routing reads of one).
    EndpointSlice(EndpointSlice),
    /// A legacy Endpoints object.
    Endpoints(Endpoints),
    /// A Secret (`stringData` already folded into `data`).
    Secret(Secret),
    /// A ConfigMap.
    ConfigMap(ConfigMap),
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
            Object::ConfigMap(_) => Kind::ConfigMap,
        }
    }

    /// The object's name and namespace.
    pub fn named(&self) -> &dyn Named {
        match self {
            Object::Ingress(o) => o,
            Object::IngressClass(o) => o,
            Object::Service(o) => o,
            Object::EndpointSlice(o) => o,
            Object::Endpoints(o) => o,
            Object::Secret(o) => o,
            Object::ConfigMap(o) => o,
        }
    }

    /// The object's key (IngressClass is cluster-scoped, so its namespace is empty).
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::IngressClass(o) => ObjectKey::new("", o.object_name()),
            other => ObjectKey::of_object(other.named()),
        }
    }
}

/// An object behind a shared pointer, the way a [`Snapshot`] holds it: cloning one only bumps a
/// reference count, so snapshots and the sources that build them share one copy of every object.
#[derive(Clone, Debug)]
pub enum SharedObject {
    /// An Ingress.
    Ingress(Arc<Ingress>),
    /// An IngressClass.
    IngressClass(Arc<IngressClass>),
    /// A Service.
    Service(Arc<Service>),
    /// An EndpointSlice.
    EndpointSlice(Arc<EndpointSlice>),
    /// A legacy Endpoints object.
    Endpoints(Arc<Endpoints>),
    /// A Secret.
    Secret(Arc<Secret>),
    /// A ConfigMap.
    ConfigMap(Arc<ConfigMap>),
}

impl From<Object> for SharedObject {
    fn from(object: Object) -> Self {
        match object {
            Object::Ingress(o) => SharedObject::Ingress(Arc::new(o)),
            Object::IngressClass(o) => SharedObject::IngressClass(Arc::new(o)),
            Object::Service(o) => SharedObject::Service(Arc::new(o)),
            Object::EndpointSlice(o) => SharedObject::EndpointSlice(Arc::new(o)),
            Object::Endpoints(o) => SharedObject::Endpoints(Arc::new(o)),
            Object::Secret(o) => SharedObject::Secret(Arc::new(o)),
            Object::ConfigMap(o) => SharedObject::ConfigMap(Arc::new(o)),
        }
    }
}

impl SharedObject {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            SharedObject::Ingress(_) => Kind::Ingress,
            SharedObject::IngressClass(_) => Kind::IngressClass,
            SharedObject::Service(_) => Kind::Service,
            SharedObject::EndpointSlice(_) => Kind::EndpointSlice,
            SharedObject::Endpoints(_) => Kind::Endpoints,
            SharedObject::Secret(_) => Kind::Secret,
            SharedObject::ConfigMap(_) => Kind::ConfigMap,
        }
    }

    /// The object's name and namespace.
    pub fn named(&self) -> &dyn Named {
        match self {
            SharedObject::Ingress(o) => &**o,
            SharedObject::IngressClass(o) => &**o,
            SharedObject::Service(o) => &**o,
            SharedObject::EndpointSlice(o) => &**o,
            SharedObject::Endpoints(o) => &**o,
            SharedObject::Secret(o) => &**o,
            SharedObject::ConfigMap(o) => &**o,
        }
    }

    /// The object's key (IngressClass is cluster-scoped, so its namespace is empty).
    pub fn key(&self) -> ObjectKey {
        match self {
            SharedObject::IngressClass(o) => ObjectKey::new("", o.object_name()),
            other => ObjectKey::of_object(other.named()),
        }
    }
}

impl PartialEq for SharedObject {
    /// Equal contents; the same allocation is equal without looking inside.
    fn eq(&self, other: &Self) -> bool {
        fn same<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
            Arc::ptr_eq(a, b) || a == b
        }
        match (self, other) {
            (SharedObject::Ingress(a), SharedObject::Ingress(b)) => same(a, b),
            (SharedObject::IngressClass(a), SharedObject::IngressClass(b)) => same(a, b),
            (SharedObject::Service(a), SharedObject::Service(b)) => same(a, b),
            (SharedObject::EndpointSlice(a), SharedObject::EndpointSlice(b)) => same(a, b),
            (SharedObject::Endpoints(a), SharedObject::Endpoints(b)) => same(a, b),
            (SharedObject::Secret(a), SharedObject::Secret(b)) => same(a, b),
            (SharedObject::ConfigMap(a), SharedObject::ConfigMap(b)) => same(a, b),
            _ => false,
        }
    }
}

/// An immutable set of objects, keyed by kind, namespace and name: what a source hands to translation.
///
/// Objects are held behind [`Arc`]s: cloning a snapshot copies keys and pointers, never objects.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Ingresses by namespace/name.
    pub ingresses: BTreeMap<ObjectKey, Arc<Ingress>>,
    /// IngressClasses by name (empty namespace).
    pub ingress_classes: BTreeMap<ObjectKey, Arc<IngressClass>>,
    /// Services by namespace/name.
    pub services: BTreeMap<ObjectKey, Arc<Service>>,
    /// EndpointSlices by namespace/name.
    pub endpoint_slices: BTreeMap<ObjectKey, Arc<EndpointSlice>>,
    /// Legacy Endpoints by namespace/name (same name as their Service).
    pub endpoints: BTreeMap<ObjectKey, Arc<Endpoints>>,
    /// Secrets by namespace/name.
    pub secrets: BTreeMap<ObjectKey, Arc<Secret>>,
    /// ConfigMaps by namespace/name.
    pub config_maps: BTreeMap<ObjectKey, Arc<ConfigMap>>,
}

/// Whether two maps hold the same keys with equal objects (shared objects compare by pointer first).
fn same_map<T: PartialEq>(
    a: &BTreeMap<ObjectKey, Arc<T>>,
    b: &BTreeMap<ObjectKey, Arc<T>>,
) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && (Arc::ptr_eq(va, vb) || va == vb))
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        same_map(&self.ingresses, &other.ingresses)
            && same_map(&self.ingress_classes, &other.ingress_classes)
            && same_map(&self.services, &other.services)
            && same_map(&self.endpoint_slices, &other.endpoint_slices)
            && same_map(&self.endpoints, &other.endpoints)
            && same_map(&self.secrets, &other.secrets)
            && same_map(&self.config_maps, &other.config_maps)
    }
}

impl Snapshot {
    /// Adds an object; returns `true` when it replaced one with the same kind and key.
    pub fn insert(&mut self, object: Object) -> bool {
        self.insert_shared(object.into())
    }

    /// Adds a shared object (no copy); returns `true` when it replaced one with the same kind and key.
    pub fn insert_shared(&mut self, object: SharedObject) -> bool {
        let key = object.key();
        match object {
            SharedObject::Ingress(o) => self.ingresses.insert(key, o).is_some(),
            SharedObject::IngressClass(o) => self.ingress_classes.insert(key, o).is_some(),
            SharedObject::Service(o) => self.services.insert(key, o).is_some(),
            SharedObject::EndpointSlice(o) => self.endpoint_slices.insert(key, o).is_some(),
            SharedObject::Endpoints(o) => self.endpoints.insert(key, o).is_some(),
            SharedObject::Secret(o) => self.secrets.insert(key, o).is_some(),
            SharedObject::ConfigMap(o) => self.config_maps.insert(key, o).is_some(),
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
            Kind::ConfigMap => self.config_maps.remove(key).is_some(),
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

    /// Rebuilds the maps with full nodes; the entries stay the same. Maps filled one object at
    /// a time, in key order, as a source reads them, leave most nodes half empty.
    pub fn compact(&mut self) {
        fn packed<T>(map: &mut BTreeMap<ObjectKey, Arc<T>>) {
            *map = std::mem::take(map).into_iter().collect();
        }
        packed(&mut self.ingresses);
        packed(&mut self.ingress_classes);
        packed(&mut self.services);
        packed(&mut self.endpoint_slices);
        packed(&mut self.endpoints);
        packed(&mut self.secrets);
        packed(&mut self.config_maps);
    }

    /// Total number of objects held.
    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.endpoints.len()
            + self.secrets.len()
            + self.config_maps.len()
    }

    /// Whether the snapshot holds no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
