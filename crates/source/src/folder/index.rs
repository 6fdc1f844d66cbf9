//! Which file defines each object, and the snapshot of the winning definitions.
//!
//! Definitions are found by the hash of the object's kind and key, and each says where in its
//! file's objects it is: no copy of any key is kept per object, and whether a definition is of a
//! given object is checked against the object itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use model::{Kind, ObjectKey, SharedObject, Snapshot};

use super::FileState;

/// The kind and key of an object: what a snapshot holds one of.
pub(super) type Id = (Kind, ObjectKey);

pub(super) fn id_of(object: &SharedObject) -> Id {
    (object.kind(), object.key())
}

/// Whether `object` is the object `id` names.
fn is(object: &SharedObject, (kind, key): &Id) -> bool {
    let named = object.named();
    let namespace = match kind {
        Kind::IngressClass => "",
        _ => named.object_namespace(),
    };
    object.kind() == *kind && named.object_name() == key.name && namespace == key.namespace
}

/// The hash definitions of `id` are filed under.
fn id_hash((kind, key): &Id) -> u64 {
    // `DefaultHasher::new()` has fixed keys: equal ids always hash alike.
    let mut hasher = std::hash::DefaultHasher::new();
    kind.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

/// Passes a hash through as it is (the keys of [`Index::defs`] are hashes already).
#[derive(Default)]
pub(super) struct Unmixed(u64);

impl Hasher for Unmixed {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One definition of an object: the file, and the object's place among the file's objects.
#[derive(Clone, Debug)]
pub(super) struct Def {
    pub(super) file: Arc<Path>,
    pub(super) at: usize,
}

/// The definitions filed under one hash, in path order (then order within the file): nearly
/// always the one definition of one object.
#[derive(Debug)]
enum Defs {
    One(Def),
    Many(Vec<Def>),
}

impl Defs {
    fn as_slice(&self) -> &[Def] {
        match self {
            Defs::One(d) => std::slice::from_ref(d),
            Defs::Many(ds) => ds,
        }
    }
}

/// Where the objects of the file being read are, while its state does not hold them yet.
pub(super) struct Current<'a> {
    pub(super) file: &'a Arc<Path>,
    pub(super) objects: &'a [SharedObject],
}

/// Every object of the files' last good versions, and where each is defined.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// The objects; where several files (or one file twice) define an object, the definition read
    /// last in path order.
    pub(super) snapshot: Arc<Snapshot>,
    /// Definitions by the hash of their object's kind and key; the last of an object's wins.
    defs: HashMap<u64, Defs, BuildHasherDefault<Unmixed>>,
    /// Objects defined more than once.
    pub(super) duplicates: HashSet<Id>,
    /// The objects whose entry in `snapshot` changed since the last [`Load`], with the entry they
    /// had then (held, so a new object cannot take its place unnoticed)…
    ///
    /// [`Load`]: super::Load
    pub(super) changed: BTreeMap<Id, Option<SharedObject>>,
    /// …once there was a first one (before it, everything is new).
    pub(super) track: bool,
    /// An object defined more than once (or becoming so) was touched: where the warnings about
    /// it go may have changed.
    pub(super) duplicates_touched: bool,
}

/// The object a definition points at.
fn object_at<'a>(
    files: &'a BTreeMap<Arc<Path>, FileState>,
    current: Option<&Current<'a>>,
    def: &Def,
) -> Option<&'a SharedObject> {
    match current {
        Some(c) if c.file == &def.file => c.objects.get(def.at),
        _ => files.get(&*def.file)?.good.as_ref()?.get(def.at),
    }
}

impl Index {
    /// The definitions of `id`, in path order; the last wins.
    pub(super) fn defs_of(
        &self,
        files: &BTreeMap<Arc<Path>, FileState>,
        current: Option<&Current<'_>>,
        id: &Id,
    ) -> Vec<Def> {
        let Some(defs) = self.defs.get(&id_hash(id)) else {
            return Vec::new();
        };
        defs.as_slice()
            .iter()
            .filter(|d| object_at(files, current, d).is_some_and(|o| is(o, id)))
            .cloned()
            .collect()
    }

    /// Records that `file` now defines `new` instead of `old` (`files` holds the other files).
    /// Returns the objects `old` defined, whose winning definition [`Index::settle`] must look up
    /// once the file's state holds `new`.
    pub(super) fn replace(
        &mut self,
        files: &BTreeMap<Arc<Path>, FileState>,
        file: &Arc<Path>,
        old: &[SharedObject],
        new: &[SharedObject],
    ) -> Vec<Id> {
        let mut orphans = Vec::with_capacity(old.len());
        for (at, object) in old.iter().enumerate() {
            let id = id_of(object);
            if self.duplicates.contains(&id) {
                self.duplicates_touched = true;
            }
            self.forget(id_hash(&id), file, at);
            orphans.push(id);
        }
        let current = Current { file, objects: new };
        for (at, object) in new.iter().enumerate() {
            let id = id_of(object);
            self.file_def(
                id_hash(&id),
                Def {
                    file: file.clone(),
                    at,
                },
            );
            let defs = self.defs_of(files, Some(&current), &id);
            let wins = defs
                .last()
                .is_some_and(|d| Arc::ptr_eq(&d.file, file) && d.at == at);
            if wins {
                let snapshot = Arc::make_mut(&mut self.snapshot);
                let before = entry_of(snapshot, &id);
                if !same_entry(before.as_ref(), Some(object)) {
                    snapshot.insert_shared(object.clone());
                    if self.track {
                        self.changed.entry(id.clone()).or_insert(before);
                    }
                }
            }
            if defs.len() > 1 {
                self.duplicates.insert(id);
                self.duplicates_touched = true;
            }
        }
        orphans
    }

    /// Takes out the definition of object `at` of `file`, filed under `hash`.
    fn forget(&mut self, hash: u64, file: &Arc<Path>, at: usize) {
        let Some(defs) = self.defs.get_mut(&hash) else {
            return;
        };
        match defs {
            Defs::One(d) if Arc::ptr_eq(&d.file, file) && d.at == at => {
                self.defs.remove(&hash);
            }
            Defs::One(_) => {}
            Defs::Many(ds) => {
                ds.retain(|d| !(Arc::ptr_eq(&d.file, file) && d.at == at));
                if let [only] = ds.as_slice() {
                    *defs = Defs::One(only.clone());
                }
            }
        }
    }

    /// Files a definition under `hash`, after those of files before its own in path order.
    fn file_def(&mut self, hash: u64, def: Def) {
        use std::collections::hash_map::Entry;
        match self.defs.entry(hash) {
            Entry::Vacant(e) => {
                e.insert(Defs::One(def));
            }
            Entry::Occupied(mut e) => {
                let defs = e.get_mut();
                let mut list = match std::mem::replace(defs, Defs::Many(Vec::new())) {
                    Defs::One(d) => vec![d],
                    Defs::Many(ds) => ds,
                };
                let at = list.partition_point(|d| (&*d.file, d.at) <= (&*def.file, def.at));
                list.insert(at, def);
                *defs = Defs::Many(list);
            }
        }
    }

    /// Puts the winning definition of each object in `ids` into the snapshot (or takes the object
    /// out when nothing defines it any more).
    pub(super) fn settle(&mut self, files: &BTreeMap<Arc<Path>, FileState>, ids: Vec<Id>) {
        for id in ids {
            let defs = self.defs_of(files, None, &id);
            let winner = defs.last().and_then(|d| object_at(files, None, d));
            let snapshot = Arc::make_mut(&mut self.snapshot);
            let before = entry_of(snapshot, &id);
            if !same_entry(before.as_ref(), winner) {
                match winner {
                    Some(object) => snapshot.insert_shared(object.clone()),
                    None => snapshot.remove(id.0, &id.1),
                };
                if self.track {
                    self.changed.entry(id.clone()).or_insert(before);
                }
            }
            if defs.len() > 1 {
                self.duplicates_touched = true;
            } else {
                self.duplicates_touched |= self.duplicates.remove(&id);
            }
        }
    }
}

/// The snapshot's current entry for an object.
pub(super) fn entry_of(snapshot: &Snapshot, (kind, key): &Id) -> Option<SharedObject> {
    Some(match kind {
        Kind::Ingress => SharedObject::Ingress(snapshot.ingresses.get(key)?.clone()),
        Kind::IngressClass => {
            SharedObject::IngressClass(snapshot.ingress_classes.get(key)?.clone())
        }
        Kind::Service => SharedObject::Service(snapshot.services.get(key)?.clone()),
        Kind::EndpointSlice => {
            SharedObject::EndpointSlice(snapshot.endpoint_slices.get(key)?.clone())
        }
        Kind::Endpoints => SharedObject::Endpoints(snapshot.endpoints.get(key)?.clone()),
        Kind::Secret => SharedObject::Secret(snapshot.secrets.get(key)?.clone()),
        Kind::ConfigMap => SharedObject::ConfigMap(snapshot.config_maps.get(key)?.clone()),
    })
}

/// Whether two entries of a snapshot are the same allocation (or both absent).
pub(super) fn same_entry(a: Option<&SharedObject>, b: Option<&SharedObject>) -> bool {
    a.map(pointer_of) == b.map(pointer_of)
}

/// The pointer a shared object has in a snapshot.
fn pointer_of(object: &SharedObject) -> *const () {
    match object {
        SharedObject::Ingress(o) => Arc::as_ptr(o).cast(),
        SharedObject::IngressClass(o) => Arc::as_ptr(o).cast(),
        SharedObject::Service(o) => Arc::as_ptr(o).cast(),
        SharedObject::EndpointSlice(o) => Arc::as_ptr(o).cast(),
        SharedObject::Endpoints(o) => Arc::as_ptr(o).cast(),
        SharedObject::Secret(o) => Arc::as_ptr(o).cast(),
        SharedObject::ConfigMap(o) => Arc::as_ptr(o).cast(),
    }
}
