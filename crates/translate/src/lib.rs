//! `translate()`: the pure step of the spine that turns a [`Snapshot`] into a routing [`Table`].
//!
//! No IO, no clock, no async: the same function serves `portcullis run`, `check`, `route`, the tests
//! and the fuzzers. Whatever it cannot use becomes a [`Diagnostic`] naming the object and field; one
//! bad Ingress never takes the others down.
#![forbid(unsafe_code)]

pub mod annotations;
mod backend;
mod canary;
mod class;
mod endpoints;
mod ingress;
mod keyed;
mod patch;
mod plan;
mod tls;

pub use class::IngressSelection;
pub use model::{Diagnostic, Severity};
pub use tls::{certificate_from_secret, covers, EXPIRY_WARNING_SECS};

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use model::{Ingress, Kind, ObjectKey, Snapshot};
use table::fasthash::FastMap;
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
    /// The Ingresses of our class, in precedence order (oldest first); the same allocation as the
    /// previous translation's while the list is unchanged.
    pub ingresses: Arc<Vec<ObjectKey>>,
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
/// change, virtual hosts that come out the same) is kept, so a change costs little more than the
/// objects it touches. Told which objects changed ([`Translator::translate_changed`]), a change of
/// endpoints alone costs only what those endpoints' backends cost: the new table shares everything
/// else with the last one. Every translation returns exactly what [`translate`] returns for the
/// same snapshot and options.
#[derive(Default)]
pub struct Translator {
    certs: tls::CertCache,
    index: backend::Index,
    plans: keyed::Keyed<Memo>,
    /// Service (by the hash of its key) → the Ingresses (by the hashes of theirs) whose plans
    /// resolved a backend on it.
    users: FastMap<u64, keyed::Hashes>,
    regexes: table::RegexCache,
    /// The options of the last translation (without the clock): plans hold only while they
    /// stay the same.
    options: Option<Options>,
    /// Counts translations of every Ingress; plans not used by the latest one are dropped.
    round: u64,
    /// What the last translation returned, for building the next one from it.
    last: Option<Last>,
    /// Whether a canary Ingress attached to some route in the last full translation: then
    /// no edit of an Ingress stays local.
    has_canaries: bool,
}

/// The plan of one Ingress and what it was made from.
struct Memo {
    ingress: Arc<Ingress>,
    plan: ingress::Plan,
    round: u64,
    /// The Ingress's place in precedence order.
    position: usize,
    /// A Service the plan resolved a backend on changed since.
    stale: bool,
}

/// The last translation, as the next one can build on it.
struct Last {
    table: Table,
    diagnostics: Vec<Diagnostic>,
    /// How many diagnostics come before the first Ingress's plan (class selection and
    /// certificates), and after the last one's (finishing the table).
    head: usize,
    tail: usize,
    /// The Ingresses whose plans added diagnostics, by position.
    noisy: BTreeMap<usize, ObjectKey>,
    ingresses: Arc<Vec<ObjectKey>>,
    now: Option<i64>,
    /// From this time on, some certificate's expiry diagnostic reads differently.
    horizon: i64,
    /// What tells whether a change of a few Ingresses stays local.
    local: patch::Local,
}

/// What applying the plans of one translation reads.
struct Plans<'a> {
    snapshot: &'a Snapshot,
    options: &'a Options,
    /// The Services whose backends may resolve differently than in the last translation.
    changed: &'a backend::Changed,
    /// The hosts some Ingress lists under `spec.tls`.
    tls_hosts: &'a HashSet<table::HostPattern>,
}

/// Whether `keys` lists the selected Ingresses, in order.
fn same_keys(keys: &[ObjectKey], selection: &IngressSelection<'_>) -> bool {
    keys.len() == selection.ours.len()
        && keys.iter().zip(&selection.ours).all(|(a, (b, _))| a == *b)
}

/// Records that the plan of Ingress `ingress` resolves backends on `services` (instead of `was`),
/// all by the hashes of their keys.
fn relink(users: &mut FastMap<u64, keyed::Hashes>, ingress: u64, was: &[u64], services: &[u64]) {
    for service in was.iter().filter(|s| !services.contains(s)) {
        if let Some(list) = users.get_mut(service) {
            if list.remove(ingress) {
                users.remove(service);
            }
        }
    }
    for &service in services.iter().filter(|s| !was.contains(s)) {
        match users.get_mut(&service) {
            Some(list) => list.add(ingress),
            None => {
                users.insert(service, keyed::Hashes::One(ingress));
            }
        }
    }
}

impl keyed::HasKey for Memo {
    fn has_key(&self, key: &ObjectKey) -> bool {
        model::Named::is(&self.ingress.metadata, key)
    }
}

impl Memo {
    /// The hash of the Ingress's key.
    fn key_hash(&self) -> u64 {
        let meta = &self.ingress.metadata;
        keyed::key_hash(
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

impl Translator {
    /// A translator that remembers nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Compiles the Ingresses of our class in `snapshot` into a routing table.
    pub fn translate(&mut self, snapshot: &Snapshot, options: &Options) -> Translation {
        self.translate_changed(snapshot, options, None)
    }

    /// [`Translator::translate`], told what changed: `changed` names every object (kind and key)
    /// added, changed or removed since the snapshot of the previous call, except for changes
    /// translation cannot see (an Ingress's or Service's status); `None`: not known, so the
    /// snapshots are compared. When only EndpointSlices and Endpoints changed, the table is the
    /// last one with those Services' backends replaced, at a cost that does not grow with the
    /// number of Ingresses.
    pub fn translate_changed(
        &mut self,
        snapshot: &Snapshot,
        options: &Options,
        changed: Option<&[(Kind, ObjectKey)]>,
    ) -> Translation {
        let services = match changed {
            Some(changed) => {
                let endpoints_only = changed
                    .iter()
                    .all(|(kind, _)| matches!(kind, Kind::EndpointSlice | Kind::Endpoints));
                let keep = self.can_keep_all_but_backends(options);
                let services = self.index.apply(snapshot, changed);
                if let (true, backend::Changed::Services(keys)) = (keep, &services) {
                    let done = if endpoints_only {
                        self.endpoints_changed(snapshot, options, keys)
                    } else {
                        self.ingresses_changed(snapshot, options, changed, keys)
                    };
                    if let Some(t) = done {
                        return t;
                    }
                }
                services
            }
            None => self.index.update(snapshot),
        };
        self.translate_all(snapshot, options, services)
    }

    /// Whether a translation with `options` can keep all of the last one but backends.
    fn can_keep_all_but_backends(&self, options: &Options) -> bool {
        let Some(last) = &self.last else {
            return false;
        };
        let clock = match (last.now, options.now) {
            (None, None) => true,
            (Some(then), Some(now)) => then <= now && now < last.horizon,
            _ => false,
        };
        clock
            && self.options.as_ref().is_some_and(|o| {
                Options {
                    now: options.now,
                    ..o.clone()
                } == *options
            })
    }

    /// Translates every Ingress of our class; plans of Ingresses whose inputs did not change
    /// (none of `changed` Services among them) are applied as they are.
    fn translate_all(
        &mut self,
        snapshot: &Snapshot,
        options: &Options,
        changed: backend::Changed,
    ) -> Translation {
        self.round += 1;
        let mut diagnostics = Vec::new();
        let selection = class::select(snapshot, options, &mut diagnostics);
        let mut builder = table::TableBuilder::with_capacity(selection.ours.len());
        if let Some(last) = &self.last {
            builder = builder.reusing(&last.table);
        }
        let (horizon, tls_hosts) = self.compile_certificates(
            snapshot,
            options,
            &selection,
            &mut builder,
            &mut diagnostics,
        );
        let head = diagnostics.len();
        let plan_options = Options {
            now: None,
            ..options.clone()
        };
        if matches!(changed, backend::Changed::All) || self.options.as_ref() != Some(&plan_options)
        {
            self.plans.clear();
            self.users.clear();
            self.options = Some(plan_options);
        }
        let plans = Plans {
            snapshot,
            options,
            changed: &changed,
            tls_hosts: &tls_hosts,
        };
        let mut contested = HashSet::new();
        let noisy = self.apply_plans(
            &plans,
            &selection,
            &mut builder,
            &mut diagnostics,
            &mut contested,
        );
        let (table, rejected) = builder.finish(&mut self.regexes);
        self.regexes.rotate();
        let before = diagnostics.len();
        diagnostics.extend(rejected.into_iter().map(rejected_diagnostic));
        let tail = diagnostics.len() - before;
        let ingresses = match &self.last {
            Some(last) if same_keys(&last.ingresses, &selection) => last.ingresses.clone(),
            _ => Arc::new(selection.ours.iter().map(|(k, _)| (*k).clone()).collect()),
        };
        let local = patch::Local::after(
            &table,
            self.plans.values().map(|m| &m.plan),
            contested,
            tls_hosts,
        );
        self.last = Some(Last {
            table: table.clone(),
            diagnostics: diagnostics.clone(),
            head,
            tail,
            noisy,
            ingresses: ingresses.clone(),
            now: options.now,
            horizon,
            local,
        });
        Translation {
            table,
            diagnostics,
            ingresses,
        }
    }

    /// Applies the plan of every selected Ingress in precedence order, making again those whose
    /// inputs changed and dropping those of Ingresses no longer selected; returns the positions
    /// of the Ingresses whose plans added diagnostics.
    fn apply_plans(
        &mut self,
        with: &Plans<'_>,
        selection: &IngressSelection<'_>,
        builder: &mut table::TableBuilder,
        diagnostics: &mut Vec<Diagnostic>,
        contested: &mut HashSet<u64>,
    ) -> BTreeMap<usize, ObjectKey> {
        let round = self.round;
        // The plans of Ingresses on changed Services, found from the Services (not by asking
        // every plan).
        if let backend::Changed::Services(services) = with.changed {
            for service in services {
                let Some(users) = self.users.get(&keyed::hash_of(service)) else {
                    continue;
                };
                for ingress in users.iter() {
                    for memo in self.plans.by_hash_mut(ingress) {
                        memo.stale = true;
                    }
                }
            }
        }
        let objects = backend::Objects {
            snapshot: with.snapshot,
            index: &self.index,
        };
        let mut noisy = BTreeMap::new();
        self.plans
            .reserve(selection.ours.len().saturating_sub(self.plans.len()));
        for (position, &(key, ing)) in selection.ours.iter().enumerate() {
            let plan = || ingress::Plan::new(&objects, with.options, key, ing);
            if self.plans.get(key).is_none() {
                let fresh = plan();
                relink(&mut self.users, keyed::hash_of(key), &[], fresh.services());
                let memo = Memo {
                    ingress: ing.clone(),
                    plan: fresh,
                    round,
                    position,
                    stale: false,
                };
                self.plans.insert(key, memo);
            }
            let Some(memo) = self.plans.get_mut(key) else {
                continue;
            };
            if memo.round != round && !memo.is_current(ing, with.snapshot) {
                let fresh = plan();
                let hash = keyed::hash_of(key);
                relink(
                    &mut self.users,
                    hash,
                    memo.plan.services(),
                    fresh.services(),
                );
                memo.ingress = ing.clone();
                memo.plan = fresh;
                memo.stale = false;
            }
            memo.round = round;
            memo.position = position;
        }
        let mut canaries = self.claim_canaries(selection);
        for (position, &(key, _)) in selection.ours.iter().enumerate() {
            let Some(memo) = self.plans.get_mut(key) else {
                continue;
            };
            let before = diagnostics.len();
            memo.plan.apply(
                key,
                with.tls_hosts,
                builder,
                diagnostics,
                contested,
                &mut canaries,
            );
            if diagnostics.len() > before {
                noisy.insert(position, key.clone());
            }
        }
        for (owner, index, id) in canaries.ids() {
            if let Some(memo) = self.plans.get_mut(owner) {
                memo.plan.set_backend_id(index, id);
            }
        }
        if self.plans.len() > selection.ours.len() {
            let users = &mut self.users;
            self.plans.retain(|memo| {
                let keep = memo.round == round;
                if !keep {
                    relink(users, memo.key_hash(), memo.plan.services(), &[]);
                }
                keep
            });
        }
        noisy
    }

    /// Claims the paths of the canary Ingresses among `selection`, in precedence order, for the
    /// routes of the others.
    fn claim_canaries(&mut self, selection: &IngressSelection<'_>) -> canary::Canaries {
        let mut canaries = canary::Canaries::default();
        let is_canary = |memo: &Memo| memo.plan.canary().is_some();
        self.has_canaries = self.plans.values().any(is_canary);
        if !self.has_canaries {
            return canaries;
        }
        let routed: HashSet<canary::PathKey> = selection
            .ours
            .iter()
            .filter_map(|(key, _)| self.plans.get(key))
            .filter(|memo| !is_canary(memo))
            .flat_map(|memo| memo.plan.route_keys())
            .collect();
        for &(key, _) in &selection.ours {
            if let Some(memo) = self.plans.get_mut(key) {
                memo.plan.claim_canary(key, &routed, &mut canaries);
            }
        }
        canaries
    }

    /// The default certificate and every Ingress's `spec.tls`: adds the certificates, and returns
    /// when the first of their expiry diagnostics changes and the hosts that have TLS.
    fn compile_certificates(
        &mut self,
        snapshot: &Snapshot,
        options: &Options,
        selection: &IngressSelection<'_>,
        builder: &mut table::TableBuilder,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> (i64, HashSet<table::HostPattern>) {
        let mut horizon = i64::MAX;
        let mut secrets = tls::SecretCache::new(&mut self.certs);
        if let Some(key) = &options.default_certificate {
            match secrets.get(snapshot, key, options.now, diagnostics) {
                Ok(cert) => {
                    if let Some(now) = options.now {
                        horizon = horizon.min(ingress::expiry_horizon(now, cert.not_after));
                    }
                    builder.set_default_certificate(cert)
                }
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
                horizon: &mut horizon,
            };
            ingress::compile_tls(snapshot, key, ing, builder, &mut ctx, diagnostics);
        }
        (horizon, tls_hosts)
    }
}

/// What finishing the table had to say about an Ingress, as a diagnostic.
fn rejected_diagnostic(r: table::Rejected) -> Diagnostic {
    let key = match r.ingress.split_once('/') {
        Some((ns, name)) => ObjectKey::new(ns, name),
        None => ObjectKey::new("", r.ingress.as_str()),
    };
    let (severity, message) = if r.dropped {
        (Severity::Error, format!("{}; not served", r.reason))
    } else {
        (Severity::Warning, r.reason)
    };
    Diagnostic::new(severity, Kind::Ingress, &key, Some(r.field), message)
}

impl Memo {
    /// Whether the plan still holds for `ing`: the same Ingress, none of its Services changed,
    /// and the ConfigMaps and Secrets its annotations read are as they were.
    fn is_current(&mut self, ing: &Arc<Ingress>, snapshot: &Snapshot) -> bool {
        let same = Arc::ptr_eq(&self.ingress, ing) || *self.ingress == **ing;
        if self.stale || !same || !self.plan.reads_unchanged(snapshot) {
            return false;
        }
        self.ingress = ing.clone();
        true
    }
}
