//! ingress-nginx annotations → a typed [`Policy`] per Ingress.
//!
//! Each value is parsed once, at the edge of translation, into a typed value; a bad value
//! rejects that annotation on that Ingress with a diagnostic naming the Ingress, the annotation
//! and the value, and everything else keeps working. Nothing from an annotation is ever
//! interpreted as configuration or code.

mod access;
mod auth;
mod balance;
mod canary;
pub mod catalog;
pub mod health;
mod limits;
mod response;
mod rewrite;
mod upstream;
pub mod values;

use std::collections::BTreeMap;
use std::sync::Arc;

use model::{ConfigMap, Ingress, Kind, ObjectKey, Secret, Snapshot};
use table::Policy;

use crate::{Diagnostic, Options, Severity};
use catalog::Support;

/// The annotation prefix ingress-nginx reads.
pub const DEFAULT_PREFIX: &str = "nginx.ingress.kubernetes.io";

/// What one Ingress's annotations ask for.
#[derive(Debug, Default)]
pub struct Rules {
    /// The per-route policy; `None` when the annotations ask for nothing beyond plain routing.
    pub policy: Option<Arc<Policy>>,
    /// `use-regex`.
    pub use_regex: bool,
    /// `ssl-redirect` (default true).
    pub ssl_redirect: bool,
    /// `force-ssl-redirect`.
    pub force_ssl_redirect: bool,
    /// `server-alias`: extra exact host names for the Ingress's rule hosts, with the field they
    /// were written in.
    pub aliases: Vec<(String, String)>,
    /// `service-upstream`: send traffic to the Service's cluster IP instead of its endpoints.
    pub service_upstream: bool,
    /// `default-backend`: a Service in the Ingress's namespace that serves while a route's own
    /// backend has no ready endpoint.
    pub default_backend: Option<String>,
    /// Set when the Ingress carries an annotation Portcullis refuses: it is not served at all.
    pub refused: bool,
    /// The ConfigMaps and Secrets the annotations read, as they were (for noticing changes).
    pub reads: Vec<Read>,
    /// `canary: "true"`: the Ingress adds no routes of its own; its backend (here with a
    /// placeholder id) becomes the alternative of the routes on its hosts and paths.
    ///
    /// Boxed: every Ingress's rules are kept, and few Ingresses are canaries.
    pub canary: Option<Box<table::Canary>>,
}

/// An object an annotation read, as it was when read (`None`: it did not exist).
#[derive(Clone, Debug)]
pub enum Read {
    /// A ConfigMap.
    ConfigMap(ObjectKey, Option<Arc<ConfigMap>>),
    /// A Secret.
    Secret(ObjectKey, Option<Arc<Secret>>),
}

impl Read {
    /// Whether the object is still as it was read.
    pub fn unchanged(&self, snapshot: &Snapshot) -> bool {
        fn same<T: PartialEq>(was: &Option<Arc<T>>, now: Option<&Arc<T>>) -> bool {
            match (was, now) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
                _ => false,
            }
        }
        match self {
            Read::ConfigMap(key, was) => same(was, snapshot.config_maps.get(key)),
            Read::Secret(key, was) => same(was, snapshot.secrets.get(key)),
        }
    }
}

/// Reads the annotations under one prefix, reporting on each by its full name.
pub(crate) struct Reader<'a> {
    key: &'a ObjectKey,
    prefix: &'a str,
    values: BTreeMap<&'a str, &'a str>,
    snapshot: &'a Snapshot,
    options: &'a Options,
    notes: &'a mut Vec<Diagnostic>,
    reads: Vec<Read>,
    /// The annotations something looked at, so none is ignored without a word.
    used: std::collections::BTreeSet<&'a str>,
}

impl<'a> Reader<'a> {
    fn new(
        key: &'a ObjectKey,
        ing: &'a Ingress,
        snapshot: &'a Snapshot,
        options: &'a Options,
        notes: &'a mut Vec<Diagnostic>,
    ) -> Self {
        let prefix = options.annotations_prefix.as_str();
        Self::with_prefix(key, ing, snapshot, options, notes, prefix)
    }

    /// A reader of the annotations under `prefix`.
    fn with_prefix(
        key: &'a ObjectKey,
        ing: &'a Ingress,
        snapshot: &'a Snapshot,
        options: &'a Options,
        notes: &'a mut Vec<Diagnostic>,
        prefix: &'a str,
    ) -> Self {
        let values = ing
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(prefix)?.strip_prefix('/')?;
                Some((name, v.as_str()))
            })
            .collect();
        Reader {
            key,
            prefix,
            values,
            snapshot,
            options,
            notes,
            reads: Vec::new(),
            used: std::collections::BTreeSet::new(),
        }
    }

    /// The raw value of an annotation, if set.
    pub(crate) fn get(&mut self, name: &str) -> Option<&'a str> {
        let (key, value) = self.values.get_key_value(name)?;
        self.used.insert(key);
        Some(value)
    }

    /// The field path of an annotation, for diagnostics.
    pub(crate) fn field(&self, name: &str) -> String {
        format!("metadata.annotations[{}/{name}]", self.prefix)
    }

    /// Records a diagnostic about an annotation.
    pub(crate) fn note(&mut self, severity: Severity, name: &str, message: impl Into<String>) {
        let field = self.field(name);
        self.notes.push(Diagnostic::new(
            severity,
            Kind::Ingress,
            self.key,
            Some(field),
            message,
        ));
    }

    /// Parses an annotation with `parse`; a value it rejects becomes an error naming the value,
    /// and the annotation is then ignored.
    pub(crate) fn parse<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&'a str) -> Result<T, String>,
    ) -> Option<T> {
        self.parse_or(name, parse, "the annotation is ignored")
    }

    /// [`Reader::parse`], saying `fallback` (what happens instead) when the value is rejected.
    pub(crate) fn parse_or<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&'a str) -> Result<T, String>,
        fallback: &str,
    ) -> Option<T> {
        let value = self.get(name)?;
        let parsed = if value.bytes().any(|b| b.is_ascii_control()) {
            Err("contains a control character (a newline, tab or similar)".to_string())
        } else {
            parse(value)
        };
        match parsed {
            Ok(v) => Some(v),
            Err(why) => {
                self.note(
                    Severity::Error,
                    name,
                    format!("{value:?} {why}; {fallback}"),
                );
                None
            }
        }
    }

    /// Settings among `names` given without `main`, the annotation that turns them on:
    /// `check` reads them all (a bad value is still an error), then each one present is said
    /// to have no effect.
    pub(crate) fn inert(&mut self, names: &[&str], main: &str, check: impl FnOnce(&mut Self)) {
        let present: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| self.get(name).is_some())
            .collect();
        if present.is_empty() {
            return;
        }
        check(self);
        for name in present {
            self.note(
                Severity::Warning,
                name,
                format!("has no effect without {main}; ignored"),
            );
        }
    }

    /// A boolean annotation, `default` when unset or invalid.
    pub(crate) fn boolean(&mut self, name: &str, default: bool) -> bool {
        let fallback = format!("using the default ({default})");
        self.parse_or(name, values::boolean, &fallback)
            .unwrap_or(default)
    }

    /// The ConfigMap `name` in the Ingress's namespace, remembering that it was read.
    pub(crate) fn config_map(&mut self, name: &str) -> Option<Arc<ConfigMap>> {
        let key = ObjectKey::new(self.key.namespace.clone(), name);
        let found = self.snapshot.config_maps.get(&key).cloned();
        self.reads.push(Read::ConfigMap(key, found.clone()));
        found
    }

    /// The Secret `name` in the Ingress's namespace, remembering that it was read.
    pub(crate) fn secret(&mut self, name: &str) -> Option<Arc<Secret>> {
        let key = ObjectKey::new(self.key.namespace.clone(), name);
        let found = self.snapshot.secrets.get(&key).cloned();
        self.reads.push(Read::Secret(key, found.clone()));
        found
    }

    /// The namespace of the Ingress being read.
    pub(crate) fn namespace(&self) -> &'a str {
        &self.key.namespace
    }

    /// The name of the Ingress being read.
    pub(crate) fn name(&self) -> &'a str {
        &self.key.name
    }

    /// The translation options.
    pub(crate) fn options(&self) -> &'a Options {
        self.options
    }
}

/// Reads the annotations of one Ingress.
pub fn read(
    snapshot: &Snapshot,
    options: &Options,
    key: &ObjectKey,
    ing: &Ingress,
    notes: &mut Vec<Diagnostic>,
) -> Rules {
    let mut r = Reader::new(key, ing, snapshot, options, notes);
    let mut rules = Rules {
        ssl_redirect: true,
        ..Rules::default()
    };
    screen(&mut r, &mut rules);
    if rules.refused {
        return rules;
    }
    if canary::read(&mut r, &mut rules) {
        rules.reads = std::mem::take(&mut r.reads);
        return rules;
    }
    let mut policy = Policy::default();
    rewrite::read(&mut r, &mut rules, &mut policy);
    upstream::read(&mut r, &mut rules, &mut policy);
    response::read(&mut r, &mut policy);
    access::read(&mut r, &mut policy);
    limits::read(&mut r, &mut policy);
    balance::read(&mut r, &mut policy);
    auth::read(&mut r, &mut policy);
    unread(&mut r);
    rules.reads = std::mem::take(&mut r.reads);
    drop(r);
    if options.annotations_prefix != health::PREFIX {
        let mut own = Reader::with_prefix(key, ing, snapshot, options, notes, health::PREFIX);
        health::read(&mut own, &mut policy);
    }
    if policy != Policy::default() {
        rules.policy = Some(Arc::new(policy));
    }
    rules
}

/// Warns about implemented annotations nothing read (a safety net: each is read where it
/// belongs; one still unread here would otherwise be ignored without a word).
fn unread(r: &mut Reader<'_>) {
    let unread: Vec<&str> = r
        .values
        .keys()
        .copied()
        .filter(|name| !r.used.contains(name))
        .filter(|name| {
            catalog::lookup(name)
                .is_some_and(|e| matches!(e.support, Support::Supported | Support::Partly(_)))
        })
        .collect();
    for name in unread {
        r.note(
            Severity::Warning,
            name,
            "has no effect on this Ingress; ignored",
        );
    }
}

/// Refuses raw-configuration annotations and warns about the ones not implemented or unknown.
fn screen(r: &mut Reader<'_>, rules: &mut Rules) {
    let names: Vec<&str> = r.values.keys().copied().collect();
    for name in names {
        match catalog::lookup(name).map(|e| e.support) {
            Some(Support::Refused(why)) => {
                rules.refused = true;
                r.note(
                    Severity::Error,
                    name,
                    format!("{why}. Remove the annotation to have the Ingress served."),
                );
            }
            Some(Support::NotYet) => r.note(
                Severity::Warning,
                name,
                "is not implemented by Portcullis yet; ignored (see the compatibility table in the README)",
            ),
            Some(_) => {}
            None => r.note(
                Severity::Warning,
                name,
                "is not an ingress-nginx annotation Portcullis knows; ignored",
            ),
        }
    }
}
