//! The kinds this server knows, and how request paths name them.

/// One kind of object the server stores, with the facts its URLs and objects need.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType {
    /// API group (empty for the core group).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// The plural name in URLs (`ingresses`).
    pub plural: &'static str,
    /// The `kind` of its objects.
    pub kind: &'static str,
    /// Whether its objects live in a namespace.
    pub namespaced: bool,
    /// Whether it has a `status` subresource (writes to the object leave status alone).
    pub has_status: bool,
}

impl ResourceType {
    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    has_status: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        kind,
        namespaced,
        has_status,
    }
}

/// Every kind the server serves.
pub static RESOURCES: &[ResourceType] = &[
    kind(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        true,
        true,
    ),
    kind(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        false,
        false,
    ),
    kind("", "v1", "services", "Service", true, true),
    kind(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
    ),
    kind("", "v1", "secrets", "Secret", true, false),
    kind("", "v1", "configmaps", "ConfigMap", true, false),
    kind("", "v1", "namespaces", "Namespace", false, true),
    kind("coordination.k8s.io", "v1", "leases", "Lease", true, false),
    kind("events.k8s.io", "v1", "events", "Event", true, false),
];

/// The type of `kind` in `apiVersion`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The kind.
    pub resource: &'static ResourceType,
    /// The namespace in the path (`None`: all namespaces, or a cluster-scoped kind).
    pub namespace: Option<String>,
    /// The object's name, if the path names one.
    pub name: Option<String>,
    /// `status`, if the path ends in it.
    pub subresource: Option<String>,
}

/// Parses `/api/v1/…` and `/apis/GROUP/VERSION/…` paths.
pub fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    let resource = RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)?;
    if !resource.namespaced && namespace.is_some() {
        return None;
    }
    Some(Target {
        resource,
        namespace,
        name,
        subresource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_kinds_namespaces_and_subresources() {
        let t = parse_path("/apis/networking.k8s.io/v1/namespaces/a/ingresses/web/status")
            .expect("parsed");
        assert_eq!(t.resource.kind, "Ingress");
        assert_eq!(t.namespace.as_deref(), Some("a"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_path("/api/v1/secrets").expect("parsed");
        assert_eq!(
            (t.resource.kind, t.namespace, t.name),
            ("Secret", None, None)
        );
        let t = parse_path("/apis/networking.k8s.io/v1/ingressclasses/x").expect("parsed");
        assert_eq!(t.name.as_deref(), Some("x"));
        assert!(parse_path("/apis/networking.k8s.io/v1/namespaces/a/ingressclasses").is_none());
        assert!(parse_path("/healthz").is_none());
    }
}
