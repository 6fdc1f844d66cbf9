//! `translate()`: the pure step of the spine that turns a [`Snapshot`] into a routing [`Table`].
//!
//! No IO, no clock, no async: the same function serves `portcullis run`, `check`, `route`, the tests
//! and the fuzzers. Whatever it cannot use becomes a [`Diagnostic`] naming the object and field; one
//! bad Ingress never takes the others down.
#![forbid(unsafe_code)]

pub mod annotations;
mod backend;
mod class;
mod ingress;
mod tls;

pub use class::IngressSelection;
pub use model::{Diagnostic, Severity};
pub use tls::{certificate_from_secret, covers, EXPIRY_WARNING_SECS};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use model::{Ingress, Kind, ObjectKey, Snapshot};
use table::Table;

/// Controller settings that change what translation produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Ingress class names served (`--ingress-class`).
    pub ingress_classes: Vec<String>,
    /// The `spec.controller` value of IngressClasses that are ours (`--controller-class`).
    pub controller_class: String,
    /// Serve Ingresses that name no class at all (`--watch-ingress-without-class`).
    pub watch_ingress_without_class: bool,
    /// The Secret served to clients whose SNI no Ingress covers (`--default-ssl-certificate`).
    pub default_certificate: Option<ObjectKey>,
    /// The current time (seconds since the Unix epoch) for certificate expiry checks; translation
    /// reads no clock itself. `None` skips the checks.
    pub now: Option<i64>,
    /// The prefix of the ingress-nginx annotations read (`--annotations-prefix`).
    pub annotations_prefix: String,
    /// Response headers `custom-headers` may set (`--global-allowed-response-headers`).
    pub allowed_response_headers: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ingress_classes: vec!["portcullis".to_string()],
            controller_class: "portcullis.io/ingress-controller".to_string(),
            watch_ingress_without_class: false,
            default_certificate: None,
            now: None,
            annotations_prefix: annotations::DEFAULT_PREFIX.to_string(),
            allowed_response_headers: Vec::new(),
        }
    }
}

impl Options {
    /// The options that serve an ingress-nginx cluster's Ingresses as they are: class `nginx`,
    /// IngressClasses of controller `k8s.io/ingress-nginx`.
    pub fn nginx_compat() -> Options {
        Options {
            ingress_classes: vec![NGINX_CLASS.to_string()],
            controller_class: NGINX_CONTROLLER.to_string(),
            ..Options::default()
        }
    }
}

/// The class name ingress-nginx serves by default.
pub const NGINX_CLASS: &str = "nginx";
/// The `spec.controller` of ingress-nginx's IngressClasses.
pub const NGINX_CONTROLLER: &str = "k8s.io/ingress-nginx";

/// What translation produced: the table, what it had to say, and which Ingresses it served.
#[derive(Debug)]
pub struct Translation {
    /// The compiled routing table.
    pub table: Table,
    /// Everything worth telling the user, in a stable order.
    pub diagnostics: Vec<Diagnostic>,
    /// The Ingresses of our class, in precedence order (oldest first).
    pub ingresses: Vec<ObjectKey>,
}

impl Translation {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// `namespace/name` (only `name` when there is no namespace), as [`ObjectKey`] displays, with room
/// for `extra` more bytes.
pub(crate) fn key_text(key: &ObjectKey, extra: usize) -> String {
    let mut text = String::with_capacity(key.namespace.len() + 1 + key.name.len() + extra);
    if !key.namespace.is_empty() {
        text.push_str(&key.namespace);
        text.push('/');
    }
    text.push_str(&key.name);
    text
}

/// Compiles the Ingresses of our class in `snapshot` into a routing table.
pub fn translate(snapshot: &Snapshot, options: &Options) -> Translation {
    Translator::new().translate(snapshot, options)
}

/// [`translate`] for a sequence of snapshots: what one translation worked out and a later one can
/// use again (certificates of unchanged Secrets, the routes of Ingresses whose objects did not
/// change) is kept, so a change costs little more than the objects it touches. Every translation
/// returns exactly what [`translate`] returns for the same snapshot and options.
#[derive(Default)]
pub struct Translator {
    certs: tls::CertCache,
    index: backend::Index,
    plans: HashMap<ObjectKey, Memo>,
    regexes: table::RegexCache,
    /// The options of the last translation (without the clock): plans hold only while they
    /// stay the same.
    options: Option<Options>,
    /// Counts translations; plans not used by the latest one are dropped.
    round: u64,
}

/// The plan of one Ingress and what it was made from.
struct Memo {
    ingress: Arc<Ingress>,
    plan: ingress::Plan,
    round: u64,
}

impl Translator {
    /// A translator that remembers nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Compiles the Ingresses of our class in `snapshot` into a routing table.
    pub fn translate(&mut self, snapshot: &Snapshot, options: &Options) -> Translation {
        self.round += 1;
        let round = self.round;
        let mut diagnostics = Vec::new();
        let selection = class::select(snapshot, options, &mut diagnostics);
        let mut builder = table::TableBuilder::with_capacity(selection.ours.len());
        let mut secrets = tls::SecretCache::new(&mut self.certs);
        if let Some(key) = &options.default_certificate {
            match secrets.get(snapshot, key, options.now, &mut diagnostics) {
                Ok(cert) => builder.set_default_certificate(cert),
                Err(e) => diagnostics.push(Diagnostic::new(
                    Severity::Error,
                    Kind::Secret,
                    key,
                    None,
                    format!(
                        "--default-ssl-certificate: {e}; serving the generated certificate instead"
                    ),
                )),
            }
        }
        // Certificates first: whether a host has TLS decides whether its routes redirect to HTTPS.
        let mut tls_hosts = HashSet::new();
        for &(key, ing) in &selection.ours {
            let mut ctx = ingress::TlsContext {
                secrets: &mut secrets,
                hosts: &mut tls_hosts,
                now: options.now,
            };
            ingress::compile_tls(snapshot, key, ing, &mut builder, &mut ctx, &mut diagnostics);
        }
        drop(secrets);
        let changed = self.index.update(snapshot);
        let plan_options = Options {
            now: None,
            ..options.clone()
        };
        if matches!(changed, backend::Changed::All) || self.options.as_ref() != Some(&plan_options)
        {
            self.plans.clear();
            self.options = Some(plan_options);
        }
        let objects = backend::Objects {
            snapshot,
            index: &self.index,
        };
        for &(key, ing) in &selection.ours {
            let plan = || ingress::Plan::new(&objects, options, key, ing);
            let memo = match self.plans.get_mut(key) {
                Some(memo) => {
                    if !memo.is_current(ing, &changed, snapshot) {
                        memo.ingress = ing.clone();
                        memo.plan = plan();
                    }
                    memo
                }
                None => self.plans.entry(key.clone()).or_insert_with(|| Memo {
                    ingress: ing.clone(),
                    plan: plan(),
                    round,
                }),
            };
            memo.round = round;
            memo.plan
                .apply(key, &tls_hosts, &mut builder, &mut diagnostics);
        }
        if self.plans.len() > selection.ours.len() {
            self.plans.retain(|_, memo| memo.round == round);
        }
        let (table, rejected) = builder.finish(&mut self.regexes);
        self.regexes.rotate();
        for r in rejected {
            let key = match r.ingress.split_once('/') {
                Some((ns, name)) => ObjectKey::new(ns, name),
                None => ObjectKey::new("", r.ingress.as_str()),
            };
            let (severity, message) = if r.dropped {
                (Severity::Error, format!("{}; not served", r.reason))
            } else {
                (Severity::Warning, r.reason)
            };
            diagnostics.push(Diagnostic::new(
                severity,
                Kind::Ingress,
                &key,
                Some(r.field),
                message,
            ));
        }
        Translation {
            table,
            diagnostics,
            ingresses: selection.ours.iter().map(|(k, _)| (*k).clone()).collect(),
        }
    }
}

impl Memo {
    /// Whether the plan still holds for `ing`: the same Ingress, none of its Services changed,
    /// and the ConfigMaps and Secrets its annotations read are as they were.
    fn is_current(
        &mut self,
        ing: &Arc<Ingress>,
        changed: &backend::Changed,
        snapshot: &Snapshot,
    ) -> bool {
        let same = Arc::ptr_eq(&self.ingress, ing) || *self.ingress == **ing;
        if !same
            || self.plan.services().iter().any(|s| changed.touches(s))
            || !self.plan.reads_unchanged(snapshot)
        {
            return false;
        }
        self.ingress = ing.clone();
        true
    }
}
