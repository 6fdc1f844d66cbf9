//! What a matched path leads to.

use std::sync::Arc;

use serde::Serialize;

use crate::backend::BackendId;
use crate::canary::Canary;
use crate::policy::Policy;

/// The `pathType` of an Ingress path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PathType {
    /// Whole path, case-sensitive.
    Exact,
    /// Element-wise prefix on `/`.
    Prefix,
    /// Up to the controller; Portcullis treats it as `Prefix`.
    ImplementationSpecific,
}

impl PathType {
    /// Parses the Kubernetes spelling.
    pub fn parse(s: &str) -> Option<PathType> {
        match s {
            "Exact" => Some(PathType::Exact),
            "Prefix" => Some(PathType::Prefix),
            "ImplementationSpecific" => Some(PathType::ImplementationSpecific),
            _ => None,
        }
    }

    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PathType::Exact => "Exact",
            PathType::Prefix => "Prefix",
            PathType::ImplementationSpecific => "ImplementationSpecific",
        }
    }
}

/// Where a route came from, for `/config`, `portcullis route` and logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteOrigin {
    /// `namespace/name` of the Ingress.
    pub ingress: String,
    /// Index of the rule in `spec.rules`; `None` for `spec.defaultBackend`.
    pub rule: Option<usize>,
    /// Index of the path in the rule's `http.paths`.
    pub path_index: Option<usize>,
    /// The rule's host as written (`""` when none).
    pub host: String,
    /// The path as written.
    pub path: String,
    /// The path type.
    pub path_type: PathType,
}

impl RouteOrigin {
    /// Where a virtual host keeps this route: in its `Exact` map (`true`) or its `Prefix` map, and
    /// under which key (`Prefix` paths without their trailing `/`).
    pub fn map_key(&self) -> (bool, &str) {
        match self.path_type {
            PathType::Exact => (true, &self.path),
            PathType::Prefix | PathType::ImplementationSpecific => {
                (false, self.path.trim_end_matches('/'))
            }
        }
    }

    /// The field this route was compiled from, e.g. `spec.rules[0].http.paths[1]`.
    pub fn field(&self) -> String {
        match (self.rule, self.path_index) {
            (Some(r), Some(p)) => format!("spec.rules[{r}].http.paths[{p}]"),
            _ => "spec.defaultBackend".to_string(),
        }
    }
}

/// Per-route behaviour beyond "forward to the backend", from the Ingress's TLS section and
/// annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RoutePolicy {
    /// Answer plain-HTTP requests with a 308 redirect to `https://`.
    pub https_redirect: bool,
    /// The route asks its host to match every path as a regular expression (ingress-nginx's
    /// `use-regex`, or a `rewrite-target` that differs from the path).
    pub regex: bool,
    /// What the Ingress's annotations ask for; `None` for a route without any, which then costs
    /// nothing beyond this check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Arc<Policy>>,
    /// The backend that serves the route while its own has no ready endpoint (`default-backend`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<BackendId>,
    /// The canary Ingress attached to the route, and when a request goes to its backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<Arc<Canary>>,
}

/// A compiled route: what to do with a request whose host and path matched.
#[derive(Clone, Debug, Serialize)]
pub struct Route {
    /// The backend that serves it.
    pub backend: BackendId,
    /// Where it came from.
    pub origin: RouteOrigin,
    /// What else to do with matching requests.
    pub policy: RoutePolicy,
    /// Position in precedence order among routes of the same path (older Ingress first); set by the
    /// builder.
    pub order: usize,
}
