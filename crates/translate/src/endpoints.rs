//! Changes of endpoints alone: the next table is the last one with the changed Services'
//! backends replaced. Virtual hosts, routes, certificates and every other backend are shared with
//! the last table, and only the plans of the Ingresses that use those Services are worked out
//! again — for their backends and for what they say about them (a Service without ready
//! endpoints, say) — so the cost follows the change, not the number of Ingresses.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use model::{ObjectKey, Snapshot};
use table::{Backend, BackendId, Backends};

use crate::{backend, ingress, keyed, Diagnostic, Last, Options, Translation, Translator};

/// An Ingress's plan worked out again, waiting to replace the one it adopted.
struct Replanned {
    key: ObjectKey,
    plan: ingress::Plan,
    ingress: Arc<model::Ingress>,
    position: usize,
    /// Whether it adds any diagnostic.
    noisy: bool,
}

/// The backends of re-planned Ingresses, one per name (as the table has one per name), and those
/// that differ from the table's.
struct Shared<'a> {
    served: &'a Backends,
    by_name: HashMap<String, Arc<Backend>>,
    replaced: Vec<(BackendId, Arc<Backend>)>,
}

impl Shared<'_> {
    /// Makes `plan` use the backend of each name every other re-planned plan uses: the table's
    /// own when its target is unchanged, else the first new one, which then replaces the table's.
    fn share(&mut self, plan: &mut ingress::Plan) {
        for (backend, id) in plan.backends_mut() {
            let served = id.and_then(|id| self.served.get(id.0));
            let shared = self
                .by_name
                .entry(backend.name.clone())
                .or_insert_with(|| match served {
                    Some(old) if old.name == backend.name && old.target == backend.target => {
                        old.clone()
                    }
                    _ => backend.clone(),
                })
                .clone();
            if let (Some(id), Some(old)) = (id, served) {
                if !Arc::ptr_eq(old, &shared) && !self.replaced.iter().any(|(i, _)| *i == id) {
                    self.replaced.push((id, shared.clone()));
                }
            }
            *backend = shared;
        }
    }
}

impl Translator {
    /// The translation after the endpoints of `services` (and nothing else) changed, built from
    /// the last one. `None` when it cannot be built that way; then nothing has been changed and
    /// everything must be translated.
    pub(crate) fn endpoints_changed(
        &mut self,
        snapshot: &Snapshot,
        options: &Options,
        services: &HashSet<ObjectKey>,
    ) -> Option<Translation> {
        let last = self.last.as_ref()?;
        // The Ingresses on those Services (and, should hashes collide, a few more, whose plans
        // then come out as they were).
        let mut keys: Vec<ObjectKey> = services
            .iter()
            .filter_map(|s| self.users.get(&keyed::hash_of(s)))
            .flat_map(|users| users.iter())
            .flat_map(|ingress| self.plans.by_hash(ingress))
            .map(|memo| ObjectKey::of(&memo.ingress.metadata))
            .collect();
        keys.sort();
        keys.dedup();
        let objects = backend::Objects {
            snapshot,
            index: &self.index,
        };
        let mut shared = Shared {
            served: &last.table.backends,
            by_name: HashMap::new(),
            replaced: Vec::new(),
        };
        let mut replanned = Vec::with_capacity(keys.len());
        let mut notes_changed = false;
        for key in &keys {
            // Unchanged, as the caller says: nothing but endpoints changed.
            let memo = self.plans.get(key)?;
            let ing = snapshot.ingresses.get(key)?;
            let mut plan = ingress::Plan::new(&objects, options, key, ing);
            if !plan.adopt(&memo.plan) {
                return None;
            }
            shared.share(&mut plan);
            let (mut was, mut now) = (Vec::new(), Vec::new());
            memo.plan.replay(&mut was);
            plan.replay(&mut now);
            notes_changed |= was != now;
            replanned.push(Replanned {
                key: key.clone(),
                plan,
                ingress: ing.clone(),
                position: memo.position,
                noisy: !now.is_empty(),
            });
        }
        let replaced = shared.replaced;
        let mut last = self.last.take()?;
        for r in replanned {
            if let Some(memo) = self.plans.get_mut(&r.key) {
                memo.plan = r.plan;
                memo.ingress = r.ingress;
            }
            if r.noisy {
                last.noisy.insert(r.position, r.key);
            } else {
                last.noisy.remove(&r.position);
            }
        }
        if notes_changed {
            last.diagnostics = self.assemble_diagnostics(&last);
        }
        if !replaced.is_empty() {
            last.table = last.table.with_backends(&replaced);
        }
        last.now = options.now;
        let translation = Translation {
            table: last.table.clone(),
            diagnostics: last.diagnostics.clone(),
            ingresses: last.ingresses.clone(),
        };
        self.last = Some(last);
        Some(translation)
    }

    /// The diagnostics of `last` with every plan's share as the plans say now.
    pub(crate) fn assemble_diagnostics(&self, last: &Last) -> Vec<Diagnostic> {
        let tail = last.diagnostics.len() - last.tail;
        let mut out = Vec::with_capacity(last.diagnostics.len());
        out.extend_from_slice(&last.diagnostics[..last.head]);
        for key in last.noisy.values() {
            if let Some(memo) = self.plans.get(key) {
                memo.plan.replay(&mut out);
            }
        }
        out.extend_from_slice(&last.diagnostics[tail..]);
        out
    }
}
