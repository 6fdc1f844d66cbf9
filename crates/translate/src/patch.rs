//! Changes that stay local: a few Ingresses edited (and Services or endpoints changed) in ways
//! that leave every other Ingress's share of the table as it was. Their plans are worked out
//! again and swapped into the last table in place — their hosts rebuilt, their backends replaced
//! — when that gives exactly what translating everything would: the same routes in the same
//! order, backends under the same ids, the same diagnostics. Everything else is shared with the
//! last table. Whatever could ripple further (another Ingress's route winning a path, a backend
//! changing places, an alias, a `www.` twin, regex mode, TLS, a default backend, an Ingress
//! appearing or going) is left to a full translation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use model::{Ingress, Kind, ObjectKey, Snapshot};
use table::fasthash::{BuildFast, FastMap};
use table::{Backend, BackendId, HostPattern, Route, Table, VirtualHost};

use crate::{backend, class, ingress, keyed, Options, Translation, Translator};

/// What the last full translation worked out that tells whether a change stays local.
#[derive(Default)]
pub(crate) struct Local {
    /// How many plans ask for each backend, by id.
    pub(crate) refs: Vec<u32>,
    /// Backend ids by the hash of their names.
    pub(crate) names: FastMap<u64, keyed::Hashes>,
    /// Paths (by [`path_hash`]) more than one route asked for.
    pub(crate) contested: HashSet<u64>,
    /// Hosts that have aliases, and the aliases.
    pub(crate) aliased: HashSet<HostPattern>,
    pub(crate) aliases: HashSet<String>,
    /// Hosts some Ingress lists under `spec.tls`.
    pub(crate) tls_hosts: HashSet<HostPattern>,
}

/// The hash of a path of a host: which map and key of the host's.
pub(crate) fn path_hash(host: &HostPattern, exact: bool, key: &str) -> u64 {
    let mut h = BuildFast::default().build_hasher();
    host.hash(&mut h);
    exact.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

fn name_hash(name: &str) -> u64 {
    BuildFast::default().hash_one(name)
}

impl Local {
    /// The id of the backend called `name` in `table`.
    fn id_of(&self, table: &Table, name: &str) -> Option<BackendId> {
        let ids = self.names.get(&name_hash(name))?;
        ids.iter()
            .map(|id| BackendId(id as usize))
            .find(|id| table.backends.get(id.0).is_some_and(|b| b.name == name))
    }

    /// Files `id` under `name`, and takes `old` out.
    fn rename(&mut self, old: &str, name: &str, id: BackendId) {
        let old_hash = name_hash(old);
        if let Some(ids) = self.names.get_mut(&old_hash) {
            if ids.remove(id.0 as u64) {
                self.names.remove(&old_hash);
            }
        }
        match self.names.get_mut(&name_hash(name)) {
            Some(ids) => ids.add(id.0 as u64),
            None => {
                self.names
                    .insert(name_hash(name), keyed::Hashes::One(id.0 as u64));
            }
        }
    }

    /// What a full translation that built `table` from `plans` leaves to go by.
    pub(crate) fn after<'a>(
        table: &Table,
        plans: impl Iterator<Item = &'a ingress::Plan>,
        contested: HashSet<u64>,
        tls_hosts: HashSet<HostPattern>,
    ) -> Local {
        let mut local = Local {
            refs: vec![0; table.backends.len()],
            contested,
            tls_hosts,
            ..Local::default()
        };
        local.names.reserve(table.backends.len());
        for (i, backend) in table.backends.iter().enumerate() {
            let hash = name_hash(&backend.name);
            match local.names.get_mut(&hash) {
                Some(ids) => ids.add(i as u64),
                None => {
                    local.names.insert(hash, keyed::Hashes::One(i as u64));
                }
            }
        }
        let mut seen = Vec::new();
        for plan in plans {
            seen.clear();
            seen.extend(plan.calls().iter().filter_map(|&i| plan.backend(i).1));
            seen.sort_unstable_by_key(|id| id.0);
            seen.dedup();
            for id in &seen {
                if let Some(n) = local.refs.get_mut(id.0) {
                    *n += 1;
                }
            }
            let (hosts, aliases) = plan.aliases();
            if !aliases.is_empty() {
                local.aliased.extend(hosts.iter().cloned());
                local
                    .aliases
                    .extend(aliases.iter().map(|(a, _)| a.to_ascii_lowercase()));
            }
        }
        local
    }
}

/// The class an Ingress asks for, as class selection reads it.
fn class_of(ing: &Ingress) -> (Option<&String>, Option<&String>) {
    (
        ing.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(class::CLASS_ANNOTATION)),
        ing.spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_ref()),
    )
}

/// Whether an edit of an Ingress leaves its place among the Ingresses served (same class, same
/// age) and its certificates as they were.
fn same_place(old: &Ingress, new: &Ingress) -> bool {
    class_of(old) == class_of(new)
        && old.metadata.creation_timestamp == new.metadata.creation_timestamp
        && old.spec.as_ref().map(|s| &s.tls) == new.spec.as_ref().map(|s| &s.tls)
}

/// One Ingress's new plan, with what swapping it in changes.
struct Swap {
    key: ObjectKey,
    ingress: Arc<Ingress>,
    plan: ingress::Plan,
    position: usize,
    backends: Vec<(Arc<Backend>, Option<BackendId>)>,
    routes: Vec<Arc<Route>>,
    noisy: bool,
}

/// A change of one path of one host.
struct Edit {
    host: HostPattern,
    exact: bool,
    key: String,
    /// The route to take out (it must be the one there), and the one to put in.
    out: Option<Arc<Route>>,
    put: Option<Arc<Route>>,
}

/// What the swaps of one change add up to.
#[derive(Default)]
struct Patch {
    swaps: Vec<Swap>,
    edits: Vec<Edit>,
    /// Backends replaced, and (old name, new name) where the name changed.
    replaced: Vec<(BackendId, Arc<Backend>)>,
    renamed: Vec<(String, String, BackendId)>,
    /// Names of backends no plan asked for before, now asked for (each by one plan only).
    introduced: HashSet<String>,
    notes_changed: bool,
}

impl Translator {
    /// The translation after `changed` (Ingresses edited, Services and endpoints changed; their
    /// Services `services`), built from the last one when the change stays local. `None` when it
    /// does not; then nothing has been changed and everything must be translated.
    pub(crate) fn ingresses_changed(
        &mut self,
        snapshot: &Snapshot,
        options: &Options,
        changed: &[(Kind, ObjectKey)],
        services: &HashSet<ObjectKey>,
    ) -> Option<Translation> {
        if self.has_canaries {
            return None;
        }
        let keys = self.local_keys(snapshot, changed, services)?;
        let last = self.last.as_ref()?;
        let objects = backend::Objects {
            snapshot,
            index: &self.index,
        };
        let mut patch = Patch::default();
        for key in &keys {
            let memo = self.plans.get(key)?;
            let ing = snapshot.ingresses.get(key)?;
            let plan = ingress::Plan::new(&objects, options, key, ing);
            let swap = swap(&last.table, &last.local, memo, key, ing, plan, &mut patch)?;
            patch.swaps.push(swap);
        }
        let table = patched(&last.table, &last.local, &patch)?;
        Some(self.commit(options, table, patch))
    }

    /// The Ingresses whose plans a local change makes again: those edited, and those on changed
    /// Services. `None` when the change is not local (an Ingress appeared, went, or changed its
    /// class, age or TLS).
    fn local_keys(
        &self,
        snapshot: &Snapshot,
        changed: &[(Kind, ObjectKey)],
        services: &HashSet<ObjectKey>,
    ) -> Option<Vec<ObjectKey>> {
        let mut keys = Vec::new();
        for (kind, key) in changed {
            match kind {
                Kind::Ingress => {
                    let memo = self.plans.get(key)?;
                    let ing = snapshot.ingresses.get(key)?;
                    if !same_place(&memo.ingress, ing) {
                        return None;
                    }
                    keys.push(key.clone());
                }
                Kind::Service | Kind::Endpoints | Kind::EndpointSlice => {}
                _ => return None,
            }
        }
        keys.extend(
            services
                .iter()
                .filter_map(|s| self.users.get(&keyed::hash_of(s)))
                .flat_map(|users| users.iter())
                .flat_map(|ingress| self.plans.by_hash(ingress))
                .map(|memo| ObjectKey::of(&memo.ingress.metadata)),
        );
        keys.sort();
        keys.dedup();
        Some(keys)
    }

    /// Makes the patch the last translation, and returns it.
    fn commit(&mut self, options: &Options, table: Table, patch: Patch) -> Translation {
        let Patch {
            swaps,
            renamed,
            notes_changed,
            ..
        } = patch;
        let Some(mut last) = self.last.take() else {
            unreachable!("a patch is made from the last translation");
        };
        for (old, name, id) in &renamed {
            last.local.rename(old, name, *id);
        }
        for swap in swaps {
            let hash = keyed::hash_of(&swap.key);
            if let Some(memo) = self.plans.get_mut(&swap.key) {
                let mut plan = swap.plan;
                plan.install(swap.backends, swap.routes);
                crate::relink(&mut self.users, hash, memo.plan.services(), plan.services());
                memo.plan = plan;
                memo.ingress = swap.ingress;
                memo.stale = false;
            }
            if swap.noisy {
                last.noisy.insert(swap.position, swap.key);
            } else {
                last.noisy.remove(&swap.position);
            }
        }
        if notes_changed {
            last.diagnostics = self.assemble_diagnostics(&last);
        }
        last.table = table;
        last.now = options.now;
        let translation = Translation {
            table: last.table.clone(),
            diagnostics: last.diagnostics.clone(),
            ingresses: last.ingresses.clone(),
        };
        self.last = Some(last);
        translation
    }
}

/// How Ingress `key`'s plan `plan` goes in place of its last one (`memo`), added to `patch`;
/// `None` when it cannot.
fn swap(
    table: &Table,
    local: &Local,
    memo: &crate::Memo,
    key: &ObjectKey,
    ing: &Arc<Ingress>,
    plan: ingress::Plan,
    patch: &mut Patch,
) -> Option<Swap> {
    let old = &memo.plan;
    if !old.is_plain() || !plan.is_plain() || old.routes().count() != plan.routes().count() {
        return None;
    }
    let backends = ids(table, local, old, &plan, patch)?;
    let fallback = plan.fallback().and_then(|i| backends[i].1);
    let mut routes = Vec::new();
    for (step, was) in plan.routes().zip(old.routes()) {
        let built = was.built?;
        let id = backends[step.backend].1?;
        let policy = plan.policy(step.host, &local.tls_hosts, fallback);
        let same = built.backend == id && built.policy == policy && built.origin == *step.origin;
        if same {
            routes.push(built.clone());
            continue;
        }
        let route = Arc::new(Route {
            backend: id,
            origin: step.origin.clone(),
            policy,
            order: built.order,
        });
        let (exact, path) = was.origin.map_key();
        patch.edits.push(Edit {
            host: was.host.clone(),
            exact,
            key: path.to_string(),
            out: Some(built.clone()),
            put: None,
        });
        let (exact, path) = step.origin.map_key();
        patch.edits.push(Edit {
            host: step.host.clone(),
            exact,
            key: path.to_string(),
            out: None,
            put: Some(route.clone()),
        });
        routes.push(route);
    }
    let (mut was, mut now) = (Vec::new(), Vec::new());
    old.replay(&mut was);
    plan.replay(&mut now);
    patch.notes_changed |= was != now;
    Some(Swap {
        key: key.clone(),
        ingress: ing.clone(),
        noisy: !now.is_empty(),
        plan,
        position: memo.position,
        backends,
        routes,
    })
}

/// The table id of each of `new`'s backends, when `new` asks for backends in the pattern `old`
/// did, so that no other backend changes place: at every call, the backend of one name in `old`
/// answers to the backend of one name in `new`. A name kept keeps its id; a name only `old` asked
/// for gives its id to a name nobody asked for. Where the target is the same, the table's own
/// backend is kept.
fn ids(
    table: &Table,
    local: &Local,
    old: &ingress::Plan,
    new: &ingress::Plan,
    patch: &mut Patch,
) -> Option<Vec<(Arc<Backend>, Option<BackendId>)>> {
    let (old_calls, new_calls) = (old.calls(), new.calls());
    if old_calls.len() != new_calls.len() {
        return None;
    }
    fn name(plan: &ingress::Plan, i: usize) -> &str {
        plan.backend(i).0.name.as_str()
    }
    let (mut answers, mut forward, mut backward) = (HashMap::new(), HashMap::new(), HashMap::new());
    for (&o, &n) in old_calls.iter().zip(&new_calls) {
        let consistent = *answers.entry(n).or_insert(o) == o
            && *forward.entry(name(old, o)).or_insert(name(new, n)) == name(new, n)
            && *backward.entry(name(new, n)).or_insert(name(old, o)) == name(old, o);
        if !consistent {
            return None;
        }
    }
    let mut out = Vec::with_capacity(new.backend_count());
    for i in 0..new.backend_count() {
        let backend = new.backend(i).0;
        let Some(&o) = answers.get(&i) else {
            // Resolved but never asked for (a fallback without routes): no id.
            out.push((backend.clone(), None));
            continue;
        };
        let (old_backend, id) = old.backend(o);
        let id = id?;
        let served = table.backends.get(id.0)?;
        if backend.name != old_backend.name {
            let alone = local.refs.get(id.0) == Some(&1);
            let fresh = local.id_of(table, &backend.name).is_none();
            if !alone || !fresh || !patch.introduced.insert(backend.name.clone()) {
                return None;
            }
            patch
                .renamed
                .push((old_backend.name.clone(), backend.name.clone(), id));
        }
        let keep = served.name == backend.name && served.target == backend.target;
        let chosen = match patch.replaced.iter().find(|(j, _)| *j == id) {
            // Another plan swapped in already replaced it: share that one.
            Some((_, b)) if b.name == backend.name && b.target == backend.target => b.clone(),
            Some(_) => return None,
            None if keep => served.clone(),
            None => {
                patch.replaced.push((id, backend.clone()));
                backend.clone()
            }
        };
        out.push((chosen, Some(id)));
    }
    Some(out)
}

/// The last table with `patch`'s edits made, when they touch nothing beyond their own paths.
fn patched(table: &Table, local: &Local, patch: &Patch) -> Option<Table> {
    let mut hosts: BTreeMap<HostName, Vec<&Edit>> = BTreeMap::new();
    for edit in &patch.edits {
        hosts
            .entry(HostName::of(&edit.host))
            .or_default()
            .push(edit);
    }
    let mut exact: Option<FastMap<Arc<str>, Arc<VirtualHost>>> = None;
    let mut wildcard: Option<FastMap<Arc<str>, Arc<VirtualHost>>> = None;
    let mut any_host = table.any_host.clone();
    for (name, edits) in &hosts {
        let host = &edits[0].host;
        if local.aliased.contains(host) {
            return None;
        }
        let old = match host {
            HostPattern::Exact(h) => {
                if local.aliases.contains(h) {
                    return None;
                }
                table.exact_hosts.get(h.as_str())
            }
            HostPattern::Wildcard(s) => table.wildcard_hosts.get(s.as_str()),
            HostPattern::Any => table.any_host.as_ref(),
        };
        let vhost = edited(old, name, edits, local)?;
        match host {
            HostPattern::Exact(h) => {
                let map = exact.get_or_insert_with(|| (*table.exact_hosts).clone());
                put(map, &table.exact_hosts, h, vhost);
            }
            HostPattern::Wildcard(s) => {
                let map = wildcard.get_or_insert_with(|| (*table.wildcard_hosts).clone());
                put(map, &table.wildcard_hosts, s, vhost);
            }
            HostPattern::Any => any_host = vhost,
        }
    }
    let mut out = table.clone();
    if let Some(map) = exact {
        out.exact_hosts = Arc::new(map);
    }
    if let Some(map) = wildcard {
        out.wildcard_hosts = Arc::new(map);
    }
    out.any_host = any_host;
    if !patch.replaced.is_empty() {
        out.backends = table.backends.replacing(&patch.replaced);
    }
    Some(out)
}

/// Puts `vhost` (or takes the host out, for `None`) under `name`, keeping the last table's key.
fn put(
    map: &mut FastMap<Arc<str>, Arc<VirtualHost>>,
    last: &FastMap<Arc<str>, Arc<VirtualHost>>,
    name: &str,
    vhost: Option<Arc<VirtualHost>>,
) {
    match vhost {
        Some(vhost) => {
            let key = match last.get_key_value(name) {
                Some((key, _)) => key.clone(),
                None => Arc::from(name),
            };
            map.insert(key, vhost);
        }
        None => {
            map.remove(name);
        }
    }
}

/// A host's pattern as an ordered key, for grouping edits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum HostName {
    Any,
    Exact(String),
    Wildcard(String),
}

impl HostName {
    fn of(host: &HostPattern) -> HostName {
        match host {
            HostPattern::Any => HostName::Any,
            HostPattern::Exact(h) => HostName::Exact(h.clone()),
            HostPattern::Wildcard(s) => HostName::Wildcard(s.clone()),
        }
    }

    fn display(&self) -> String {
        match self {
            HostName::Any => String::new(),
            HostName::Exact(h) => h.clone(),
            HostName::Wildcard(s) => format!("*.{s}"),
        }
    }
}

/// Host `old` (or a new one called `name`) with `edits` made; `None` inside when it is left with
/// no path. `None` when an edit would reach beyond its own path: a path another route claims or
/// claimed too, or a host in regex mode or redirecting elsewhere.
fn edited(
    old: Option<&Arc<VirtualHost>>,
    name: &HostName,
    edits: &[&Edit],
    local: &Local,
) -> Option<Option<Arc<VirtualHost>>> {
    let mut vhost = match old {
        Some(v) if v.regex.is_some() || v.redirect_to.is_some() => return None,
        Some(v) => VirtualHost {
            name: v.name.clone(),
            exact: v.exact.clone(),
            prefix: v.prefix.clone(),
            ..VirtualHost::default()
        },
        None => VirtualHost::new(name.display()),
    };
    // Out first: a path one route leaves may be the path another takes.
    for edit in edits.iter().filter(|e| e.out.is_some()) {
        let map = if edit.exact {
            &mut vhost.exact
        } else {
            &mut vhost.prefix
        };
        let there = map.get(edit.key.as_str())?;
        let leaving = edit.out.as_ref()?;
        if !Arc::ptr_eq(there, leaving)
            || local
                .contested
                .contains(&path_hash(&edit.host, edit.exact, &edit.key))
        {
            return None;
        }
        map.remove(edit.key.as_str());
    }
    for edit in edits.iter() {
        let Some(route) = &edit.put else { continue };
        let map = if edit.exact {
            &mut vhost.exact
        } else {
            &mut vhost.prefix
        };
        if map.contains_key(edit.key.as_str()) {
            return None;
        }
        map.insert(edit.key.clone(), route.clone());
    }
    if vhost.is_empty() {
        return Some(None);
    }
    vhost.app_root = vhost
        .exact
        .values()
        .chain(vhost.prefix.values())
        .filter_map(|r| Some((r.order, r.policy.rules.as_ref()?.app_root.as_ref()?)))
        .min_by_key(|(order, _)| *order)
        .map(|(_, root)| root.clone());
    Some(Some(Arc::new(vhost)))
}

#[cfg(test)]
mod tests;
