//! The metadata a snapshot keeps of the objects it holds in a reduced form.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The metadata Portcullis keeps of an object: its name, namespace and uid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// `metadata.name`.
    pub name: Option<String>,
    /// `metadata.namespace` (none means `default`).
    pub namespace: Option<String>,
    /// `metadata.uid` (set by an API server).
    pub uid: Option<String>,
}

impl Meta {
    /// The name, namespace and uid of `meta`.
    pub fn of(meta: ObjectMeta) -> Self {
        Meta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
        }
    }

    /// Object metadata with these fields (and nothing else) set.
    pub fn to_api(&self) -> ObjectMeta {
        ObjectMeta {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            uid: self.uid.clone(),
            ..ObjectMeta::default()
        }
    }
}
