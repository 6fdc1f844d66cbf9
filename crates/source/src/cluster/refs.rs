//! Secrets and ConfigMaps that Ingress annotations name. The source reads exactly these by name
//! (one field-selected watch each) rather than watching every Secret or ConfigMap: translation is
//! pure and cannot fetch what it finds named, so the source looks ahead for it.

use std::collections::{BTreeSet, HashMap};

use model::{Ingress, Kind, ObjectKey};

/// Annotations (after `PREFIX/`) whose value names a Secret.
const SECRET_ANNOTATIONS: &[&str] = &["auth-secret", "proxy-ssl-secret"];
/// Annotations (after `PREFIX/`) whose value names a ConfigMap.
const CONFIG_MAP_ANNOTATIONS: &[&str] = &["auth-proxy-set-headers", "custom-headers"];

/// One object an Ingress names: its kind and key.
pub type Reference = (Kind, ObjectKey);

/// Whether `name` can be an object name (a DNS subdomain).
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// `name` or `namespace/name`, in the Ingress's own namespace only: translation refuses objects
/// of other namespaces, so they are not read either.
fn parse_reference(value: &str, own_namespace: &str) -> Option<ObjectKey> {
    let value = value.trim();
    let (namespace, name) = value.split_once('/').unwrap_or((own_namespace, value));
    (namespace == own_namespace && is_name(name)).then(|| ObjectKey::new(namespace, name))
}

/// The Secrets and ConfigMaps `ingress` names in annotations under `prefix`.
pub fn references(ingress: &Ingress, prefix: &str) -> Vec<Reference> {
    let key = ObjectKey::of(&ingress.metadata);
    let Some(annotations) = &ingress.metadata.annotations else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let lists = [
        (Kind::Secret, SECRET_ANNOTATIONS),
        (Kind::ConfigMap, CONFIG_MAP_ANNOTATIONS),
    ];
    for (kind, names) in lists {
        for name in names {
            let annotation = format!("{prefix}/{name}");
            if let Some(target) = annotations
                .get(&annotation)
                .and_then(|v| parse_reference(v, &key.namespace))
            {
                found.push((kind, target));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Which objects are named, and by how many Ingresses: kept up to date one Ingress at a time.
#[derive(Debug, Default)]
pub struct References {
    by_ingress: HashMap<ObjectKey, Vec<Reference>>,
    counts: HashMap<Reference, usize>,
}

/// What one Ingress change did to the set of named objects.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Objects named now and by nothing before.
    pub added: BTreeSet<Reference>,
    /// Objects named before and by nothing now.
    pub removed: BTreeSet<Reference>,
}

impl References {
    /// Records what `ingress` (`None`: deleted) names now.
    pub fn set(&mut self, key: &ObjectKey, refs: Vec<Reference>, delta: &mut Delta) {
        let old = if refs.is_empty() {
            self.by_ingress.remove(key).unwrap_or_default()
        } else {
            self.by_ingress
                .insert(key.clone(), refs.clone())
                .unwrap_or_default()
        };
        if old == refs {
            return;
        }
        for r in refs {
            let count = self.counts.entry(r.clone()).or_insert(0);
            *count += 1;
            if *count == 1 && !delta.removed.remove(&r) {
                delta.added.insert(r);
            }
        }
        for r in old {
            if let Some(count) = self.counts.get_mut(&r) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&r);
                    if !delta.added.remove(&r) {
                        delta.removed.insert(r);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ingress(ns: &str, name: &str, annotations: &[(&str, &str)]) -> Ingress {
        let mut ing = Ingress::default();
        ing.metadata.namespace = Some(ns.into());
        ing.metadata.name = Some(name.into());
        ing.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        ing
    }

    #[test]
    fn annotations_name_secrets_and_config_maps() {
        let ing = ingress(
            "apps",
            "web",
            &[
                ("nginx.ingress.kubernetes.io/auth-secret", "users"),
                (
                    "nginx.ingress.kubernetes.io/proxy-ssl-secret",
                    "apps/upstream-ca",
                ),
                ("nginx.ingress.kubernetes.io/custom-headers", "apps/headers"),
                (
                    "nginx.ingress.kubernetes.io/auth-proxy-set-headers",
                    "auth-headers",
                ),
                ("nginx.ingress.kubernetes.io/other", "x"),
                ("example.com/auth-secret", "ignored"),
            ],
        );
        assert_eq!(
            references(&ing, "nginx.ingress.kubernetes.io"),
            vec![
                (Kind::Secret, ObjectKey::new("apps", "users")),
                (Kind::Secret, ObjectKey::new("apps", "upstream-ca")),
                (Kind::ConfigMap, ObjectKey::new("apps", "headers")),
                (Kind::ConfigMap, ObjectKey::new("apps", "auth-headers")),
            ]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
        assert_eq!(references(&ing, "example.com").len(), 1);
        let bad = ingress(
            "a",
            "b",
            &[
                ("p/auth-secret", "a/b/c"),
                ("p/custom-headers", "Bad Name"),
                ("p/proxy-ssl-secret", "elsewhere/ca"),
            ],
        );
        assert!(references(&bad, "p").is_empty());
    }

    #[test]
    fn counts_follow_ingresses_naming_and_forgetting() {
        let mut refs = References::default();
        let secret = (Kind::Secret, ObjectKey::new("a", "s"));
        let (one, two) = (ObjectKey::new("a", "one"), ObjectKey::new("a", "two"));
        let mut delta = Delta::default();
        refs.set(&one, vec![secret.clone()], &mut delta);
        refs.set(&two, vec![secret.clone()], &mut delta);
        assert_eq!(delta.added.len(), 1);
        let mut delta = Delta::default();
        refs.set(&one, vec![], &mut delta);
        assert_eq!(delta, Delta::default());
        refs.set(&two, vec![], &mut delta);
        assert!(delta.removed.contains(&secret));
        assert!(refs.counts.is_empty());
    }
}
