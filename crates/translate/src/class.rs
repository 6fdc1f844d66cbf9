//! Which Ingresses are ours: `ingressClassName`, the legacy annotation, and default classes.

use std::sync::Arc;

use model::{Ingress, Kind, ObjectKey, Snapshot};

use crate::{Diagnostic, Options, Severity};

/// The legacy class annotation; when present it takes precedence over `spec.ingressClassName`.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks an IngressClass as the cluster default for Ingresses that name no class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The Ingresses translation will serve.
#[derive(Debug, Default)]
pub struct IngressSelection<'a> {
    /// Our Ingresses with their keys, oldest first (creationTimestamp, then namespace/name).
    pub ours: Vec<(&'a ObjectKey, &'a Arc<Ingress>)>,
}

fn class_of(ing: &Ingress) -> Option<&str> {
    ing.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLASS_ANNOTATION))
        .map(String::as_str)
        .or_else(|| ing.spec.as_ref()?.ingress_class_name.as_deref())
}

/// Picks the Ingresses of our class and orders them by precedence.
pub fn select<'a>(
    snapshot: &'a Snapshot,
    options: &Options,
    diagnostics: &mut Vec<Diagnostic>,
) -> IngressSelection<'a> {
    let class_is_ours = |name: &str| {
        options.ingress_classes.iter().any(|c| c == name)
            || snapshot
                .ingress_classes
                .get(&ObjectKey::new("", name))
                .and_then(|c| c.spec.as_ref()?.controller.as_deref())
                == Some(options.controller_class.as_str())
    };
    let default_class = snapshot.ingress_classes.values().find(|c| {
        let ours = c.spec.as_ref().and_then(|s| s.controller.as_deref())
            == Some(options.controller_class.as_str())
            || c.metadata
                .name
                .as_deref()
                .is_some_and(|n| options.ingress_classes.iter().any(|c| c == n));
        let default = c
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
            .is_some_and(|v| v == "true");
        ours && default
    });

    let mut ours: Vec<(&ObjectKey, &Arc<Ingress>)> = Vec::new();
    for (key, ing) in &snapshot.ingresses {
        let serve = match class_of(ing) {
            Some(class) => {
                let ok = class_is_ours(class);
                if !ok {
                    diagnostics.push(Diagnostic::new(
                        Severity::Info,
                        Kind::Ingress,
                        key,
                        Some("spec.ingressClassName".into()),
                        format!(
                            "class {class:?} is not served here (serving {}); ignored",
                            options.ingress_classes.join(", ")
                        ),
                    ));
                }
                ok
            }
            None if options.watch_ingress_without_class => true,
            None if default_class.is_some() => true,
            None => {
                diagnostics.push(Diagnostic::new(
                    Severity::Info,
                    Kind::Ingress,
                    key,
                    Some("spec.ingressClassName".into()),
                    "no class and no default IngressClass of ours; ignored (set ingressClassName, \
                     mark an IngressClass default, or use --watch-ingress-without-class)",
                ));
                false
            }
        };
        if serve {
            ours.push((key, ing));
        }
    }
    ours.sort_by(|(ka, a), (kb, b)| {
        let (ta, tb) = (
            a.metadata.creation_timestamp.as_ref().map(|t| &t.0),
            b.metadata.creation_timestamp.as_ref().map(|t| &t.0),
        );
        // Objects without a timestamp (manifest files) sort after those that have one.
        let by_time = match (ta, tb) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_time.then_with(|| ka.cmp(kb))
    });
    IngressSelection { ours }
}
