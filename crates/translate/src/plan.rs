//! Working out an Ingress's [`Plan`]: its annotations, backends and routes, and what it has to
//! say about them, in the order it lists them.

use model::{Ingress, Kind, ObjectKey};
use table::{HostPattern, PathType, RouteOrigin};

use crate::annotations::{self, Rules};
use crate::backend::{resolve, Objects, Resolved};
use crate::ingress::{Plan, Step};
use crate::{Diagnostic, Options, Severity};

/// The field path of one Ingress path, written out only when a diagnostic needs it.
#[derive(Clone, Copy)]
struct PathField {
    rule: usize,
    path: usize,
}

impl std::fmt::Display for PathField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spec.rules[{}].http.paths[{}]", self.rule, self.path)
    }
}

/// A [`PathField`]'s `backend` field.
#[derive(Clone, Copy)]
struct BackendField(PathField);

impl std::fmt::Display for BackendField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.backend", self.0)
    }
}

/// A plan while it is being worked out.
struct Draft {
    resolved: Resolved,
    steps: Vec<Step>,
    rules: Rules,
    fallback: Option<usize>,
    hosts: Vec<HostPattern>,
}

impl Plan {
    /// Works out the rules and default backend of one Ingress; everything unusable becomes a
    /// diagnostic step.
    pub fn new(objects: &Objects<'_>, options: &Options, key: &ObjectKey, ing: &Ingress) -> Plan {
        let mut notes = Vec::new();
        let rules = annotations::read(objects.snapshot, options, key, ing, &mut notes);
        let mut draft = Draft {
            resolved: Resolved::default(),
            steps: Vec::new(),
            rules,
            fallback: None,
            hosts: Vec::new(),
        };
        draft.note_all(&mut notes);
        if !draft.rules.refused {
            draft.add_fallback(objects, options, key, &mut notes);
            draft.add_spec(objects, key, ing, &mut notes);
        }
        let Draft {
            resolved,
            steps,
            rules,
            fallback,
            hosts,
        } = draft;
        // The hosts matter only for aliases.
        let hosts = if rules.aliases.is_empty() {
            Box::default()
        } else {
            hosts.into_boxed_slice()
        };
        Plan::from_parts(resolved, steps, rules, fallback, hosts)
    }
}

impl Draft {
    /// Resolves the `default-backend` annotation's Service (its first port, as ingress-nginx
    /// uses it).
    fn add_fallback(
        &mut self,
        objects: &Objects<'_>,
        options: &Options,
        key: &ObjectKey,
        notes: &mut Vec<Diagnostic>,
    ) {
        let Some(name) = self.rules.default_backend.clone() else {
            return;
        };
        let field = format!(
            "metadata.annotations[{}/default-backend]",
            options.annotations_prefix
        );
        let svc_key = ObjectKey::new(key.namespace.clone(), name.as_str());
        let port = objects
            .snapshot
            .services
            .get(&svc_key)
            .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port));
        let Some(port) = port else {
            // Looked up all the same: when the Service appears, the plan must be made again.
            if !self.resolved.services.contains(&svc_key) {
                self.resolved.services.push(svc_key.clone());
            }
            notes.push(Diagnostic::new(
                Severity::Error,
                Kind::Ingress,
                key,
                Some(field),
                format!("Service {svc_key} not found or has no ports; no default backend for this Ingress's paths"),
            ));
            self.note_all(notes);
            return;
        };
        let backend = model::k8s_openapi::api::networking::v1::IngressBackend {
            service: Some(
                model::k8s_openapi::api::networking::v1::IngressServiceBackend {
                    name,
                    port: Some(
                        model::k8s_openapi::api::networking::v1::ServiceBackendPort {
                            number: Some(port),
                            name: None,
                        },
                    ),
                },
            ),
            resource: None,
        };
        self.fallback = resolve(
            objects,
            key,
            &backend,
            &field,
            false,
            &mut self.resolved,
            notes,
        );
        self.note_all(notes);
    }

    fn note_all(&mut self, notes: &mut Vec<Diagnostic>) {
        self.steps
            .extend(notes.drain(..).map(|d| Step::Note(Box::new(d))));
    }

    fn add_spec(
        &mut self,
        objects: &Objects<'_>,
        key: &ObjectKey,
        ing: &Ingress,
        notes: &mut Vec<Diagnostic>,
    ) {
        let diag = |severity, field: String, message: String| {
            Step::Note(Box::new(Diagnostic::new(
                severity,
                Kind::Ingress,
                key,
                Some(field),
                message,
            )))
        };
        let Some(spec) = &ing.spec else {
            self.steps.push(diag(
                Severity::Warning,
                "spec".into(),
                "missing; nothing to route".into(),
            ));
            return;
        };
        let ingress_name = crate::key_text(key, 0);

        if let Some(default) = &spec.default_backend {
            let field = "spec.defaultBackend";
            let found = resolve(
                objects,
                key,
                default,
                &field,
                self.rules.service_upstream,
                &mut self.resolved,
                notes,
            );
            self.note_all(notes);
            if let Some(backend) = found {
                let origin = RouteOrigin {
                    ingress: ingress_name.clone(),
                    rule: None,
                    path_index: None,
                    host: String::new(),
                    path: "/".into(),
                    path_type: PathType::Prefix,
                };
                self.steps.push(Step::Default {
                    backend,
                    origin: Box::new(origin),
                    conflict: None,
                });
            }
        }

        let rules = spec.rules.as_deref().unwrap_or_default();
        if rules.is_empty() && spec.default_backend.is_none() {
            self.steps.push(diag(
                Severity::Warning,
                "spec".into(),
                "has neither rules nor a defaultBackend; nothing to route".into(),
            ));
        }
        for (r, rule) in rules.iter().enumerate() {
            let host_written = rule.host.as_deref().unwrap_or_default();
            let host = match HostPattern::parse(host_written) {
                Ok(h) => {
                    if !self.hosts.contains(&h) {
                        self.hosts.push(h.clone());
                    }
                    h
                }
                Err(e) => {
                    self.steps
                        .push(diag(Severity::Error, format!("spec.rules[{r}].host"), e));
                    continue;
                }
            };
            let Some(http) = &rule.http else {
                self.steps.push(diag(
                    Severity::Info,
                    format!("spec.rules[{r}].http"),
                    "rule has no http paths; only the default backend serves this host".into(),
                ));
                continue;
            };
            for (p, path) in http.paths.iter().enumerate() {
                let field = PathField { rule: r, path: p };
                let Some(path_type) = PathType::parse(&path.path_type) else {
                    self.steps.push(diag(
                        Severity::Error,
                        format!("{field}.pathType"),
                        format!(
                            "{:?} is not one of Exact, Prefix, ImplementationSpecific",
                            path.path_type
                        ),
                    ));
                    continue;
                };
                let written = match (path.path.as_deref(), path_type) {
                    (Some(p), _) if !p.is_empty() => p,
                    (_, PathType::ImplementationSpecific) => "/",
                    _ => {
                        self.steps.push(diag(
                            Severity::Error,
                            format!("{field}.path"),
                            format!("required for pathType {}", path_type.as_str()),
                        ));
                        continue;
                    }
                };
                if !written.starts_with('/') {
                    self.steps.push(diag(
                        Severity::Error,
                        format!("{field}.path"),
                        format!("{written:?} must be an absolute path starting with '/'"),
                    ));
                    continue;
                }
                let regex = self.rules.use_regex
                    || self
                        .rules
                        .policy
                        .as_ref()
                        .and_then(|p| p.rewrite.as_ref())
                        .is_some_and(|t| t.written != written);
                if !regex
                    && path_type != PathType::Exact
                    && written.contains(['(', ')', '*', '?', '$', '^'])
                {
                    self.steps.push(diag(
                        Severity::Warning,
                        format!("{field}.path"),
                        format!(
                            "{written:?} looks like a regular expression; pathType {} matches it literally",
                            path_type.as_str()
                        ),
                    ));
                }
                let backend_field = BackendField(field);
                let found = resolve(
                    objects,
                    key,
                    &path.backend,
                    &backend_field,
                    self.rules.service_upstream,
                    &mut self.resolved,
                    notes,
                );
                self.note_all(notes);
                let Some(backend) = found else {
                    continue;
                };
                let origin = RouteOrigin {
                    ingress: ingress_name.clone(),
                    rule: Some(r),
                    path_index: Some(p),
                    host: host.display(),
                    path: written.to_string(),
                    path_type,
                };
                self.steps.push(Step::Route {
                    host: host.clone(),
                    backend,
                    origin: Some(Box::new(origin)),
                    regex,
                    last: None,
                    conflict: None,
                });
            }
        }
    }
}
