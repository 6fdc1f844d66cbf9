//! Reading a set of manifest files and folders into a [`Snapshot`].
//!
//! The source keeps one snapshot and updates it file by file: a change to one file touches only
//! that file's objects, and the snapshot it hands out shares every object (behind `Arc`s) with the
//! source, so neither a re-read nor a [`Load`] copies objects.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use model::{parse_manifests, Diagnostic, Parsed, Severity, SharedObject, Snapshot};

use crate::{Changes, SourceError};

mod index;

use index::{entry_of, same_entry, Index};

/// The result of one read of all paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// Every object read (the last good version of files that now fail to parse).
    pub snapshot: Arc<Snapshot>,
    /// Parse errors, skipped documents and conversions, per file.
    pub diagnostics: Vec<Diagnostic>,
    /// How many manifest files were read.
    pub files: usize,
    /// Goes up whenever the objects or the diagnostics change: two loads from one source with the
    /// same revision hold the same objects and diagnostics.
    pub revision: u64,
    /// The objects that changed since the load of an earlier revision (the one before, unless
    /// nothing changed since).
    pub changes: Changes,
}

/// What identifies the text of a file without keeping it: its length and a hash of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: usize,
    hash: u64,
}

impl Fingerprint {
    fn of(text: &str) -> Self {
        // `DefaultHasher::new()` has fixed keys, so equal texts always hash alike.
        let mut hasher = std::hash::DefaultHasher::new();
        text.hash(&mut hasher);
        Fingerprint {
            len: text.len(),
            hash: hasher.finish(),
        }
    }
}

#[derive(Debug, Default)]
struct FileState {
    /// The text last read.
    text: Option<Fingerprint>,
    /// Objects of the last version of the file that parsed without error.
    good: Option<Vec<SharedObject>>,
    /// Diagnostics of the current text.
    notes: Vec<Diagnostic>,
    /// Why the file could not be read the last time, if it could not.
    read_error: Option<Box<Diagnostic>>,
}

/// A set of manifest files and folders, re-read on demand.
#[derive(Debug)]
pub struct FolderSource {
    roots: Vec<PathBuf>,
    files: BTreeMap<Arc<Path>, FileState>,
    /// Roots that could not be listed at the last full read.
    root_notes: Vec<Diagnostic>,
    index: Index,
    /// The diagnostics of the files as last read.
    diagnostics: Vec<Diagnostic>,
    revision: u64,
    /// What changed between the revision before the current one and the current one.
    changes: Changes,
    /// Something changed since the last [`Load`]…
    dirty: bool,
    /// …and it may change the diagnostics (else they are not assembled again).
    notes_dirty: bool,
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn file_diag(severity: Severity, file: &Path, message: impl Into<String>) -> Diagnostic {
    Diagnostic::file(severity, file.display(), message)
}

impl FolderSource {
    /// A source over `roots` (files or folders). Fails if a root does not exist.
    pub fn new(roots: Vec<PathBuf>) -> Result<Self, SourceError> {
        for root in &roots {
            std::fs::metadata(root).map_err(|source| SourceError::Path {
                path: root.display().to_string(),
                source,
            })?;
        }
        Ok(FolderSource {
            roots,
            files: BTreeMap::new(),
            root_notes: Vec::new(),
            index: Index::default(),
            diagnostics: Vec::new(),
            revision: 0,
            changes: Changes::default(),
            dirty: false,
            notes_dirty: false,
        })
    }

    /// The roots this source reads.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Re-reads every file under the roots. Files whose text is unchanged are not parsed again; a
    /// file that no longer parses keeps serving its last good objects; a root that cannot be listed
    /// keeps all of its files' last objects.
    pub fn load(&mut self) -> Load {
        let first = !self.index.track;
        let mut diagnostics = Vec::new();
        self.read_all(&mut diagnostics);
        if first {
            self.compact();
        }
        if self.root_notes != diagnostics {
            self.root_notes = diagnostics;
            self.dirty = true;
            self.notes_dirty = true;
        }
        self.current()
    }

    /// Packs the maps a first read filled one file at a time (no [`Load`] shares the snapshot
    /// yet, so it is not copied).
    fn compact(&mut self) {
        Arc::make_mut(&mut self.index.snapshot).compact();
        self.files = std::mem::take(&mut self.files).into_iter().collect();
    }

    /// Re-reads only the manifest files named in `changed` (paths from file-system events). A path
    /// that may stand for a folder — an existing folder or folder symlink (a ConfigMap's `..data`
    /// swap), or a vanished path that was not a manifest file — re-reads everything instead.
    pub fn refresh(&mut self, changed: &[PathBuf]) -> Load {
        let mut full = changed.is_empty();
        let mut files = Vec::new();
        for path in changed {
            if !self.covers(path) {
                continue;
            }
            let hidden = self.hidden(path);
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_dir() => full = true,
                Ok(_) if !hidden && is_manifest(path) => files.push(path.clone()),
                Ok(_) => {}
                // Gone: a manifest file was deleted, or something else (maybe a folder) went away.
                Err(_) if !hidden && is_manifest(path) => files.push(path.clone()),
                Err(_) if !hidden => full = true,
                Err(_) => {}
            }
        }
        if full {
            return self.load();
        }
        files.sort();
        files.dedup();
        for path in &files {
            self.read_file(path);
        }
        self.current()
    }

    /// Whether a path is one of the roots or inside a root folder.
    fn covers(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path == r || path.starts_with(r))
    }

    /// Whether a path has a hidden name (a file, or a folder between it and its root): Kubernetes
    /// volume mounts keep old and upcoming versions in hidden `..data`-style folders, and editors
    /// write hidden temporary files.
    fn hidden(&self, path: &Path) -> bool {
        let below_root = self
            .roots
            .iter()
            .filter_map(|r| path.strip_prefix(r).ok())
            .min_by_key(|rest| rest.components().count());
        let Some(rest) = below_root else {
            return false;
        };
        rest.components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    }

    /// Whether a path names a file this source reads: a manifest under a root, with no hidden
    /// name on the way.
    pub(crate) fn reads(&self, path: &Path) -> bool {
        self.covers(path) && is_manifest(path) && !self.hidden(path)
    }

    fn read_file(&mut self, path: &Path) {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let fingerprint = Fingerprint::of(&text);
                if !self.unchanged(path, fingerprint) {
                    let parsed = parse_file(path, &text);
                    self.apply(path, fingerprint, parsed);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.remove_file(path),
            Err(e) => self.record_read_error(path, &e),
        }
    }

    /// Whether a file that could be read has the text it had when last parsed (a read error it had
    /// is cleared either way).
    fn unchanged(&mut self, path: &Path, fingerprint: Fingerprint) -> bool {
        let Some(state) = self.files.get_mut(path) else {
            return false;
        };
        if state.read_error.take().is_some() {
            self.dirty = true;
            self.notes_dirty = true;
        }
        state.good.is_some() && state.text == Some(fingerprint)
    }

    fn remove_file(&mut self, path: &Path) {
        let Some((file, mut state)) = self.files.remove_entry(path) else {
            return;
        };
        let old = state.good.take().unwrap_or_default();
        let orphans = self.index.replace(&self.files, &file, &old, &[]);
        self.index.settle(&self.files, orphans);
        self.dirty = true;
        self.notes_dirty = true;
    }

    fn record_read_error(&mut self, path: &Path, e: &std::io::Error) {
        let diag = file_diag(
            Severity::Error,
            path,
            format!("cannot read ({e}); keeping its last good objects"),
        );
        let state = self.files.entry(Arc::from(path)).or_default();
        if state.read_error.as_deref() != Some(&diag) {
            state.read_error = Some(Box::new(diag));
            self.dirty = true;
            self.notes_dirty = true;
        }
    }

    fn read_all(&mut self, diagnostics: &mut Vec<Diagnostic>) {
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut unreadable_roots: Vec<PathBuf> = Vec::new();
        for root in &self.roots {
            match list_manifests(root) {
                Ok(files) => seen.extend(files),
                Err(e) => {
                    diagnostics.push(file_diag(
                        Severity::Error,
                        root,
                        format!("cannot read ({e}); keeping its last good objects"),
                    ));
                    unreadable_roots.push(root.clone());
                }
            }
        }
        seen.sort();
        seen.dedup();
        // Both lists are in path order: walk them side by side.
        let mut gone: Vec<Arc<Path>> = Vec::new();
        let mut listed = seen.iter().peekable();
        for path in self.files.keys() {
            while listed.next_if(|p| p.as_path() < &**path).is_some() {}
            let found = listed.next_if(|p| p.as_path() == &**path).is_some();
            if !found && !unreadable_roots.iter().any(|r| path.starts_with(r)) {
                gone.push(path.clone());
            }
        }
        for path in gone {
            self.remove_file(&path);
        }
        for (path, outcome) in read_files(&self.files, seen) {
            match outcome {
                Outcome::Same => {
                    self.clear_read_error(&path);
                }
                Outcome::Parsed(fingerprint, parsed) => {
                    self.clear_read_error(&path);
                    self.apply(&path, fingerprint, parsed);
                }
                Outcome::Failed(e) => self.record_read_error(&path, &e),
            }
        }
    }

    /// Forgets that a file could not be read the last time.
    fn clear_read_error(&mut self, path: &Path) {
        if let Some(state) = self.files.get_mut(path) {
            if state.read_error.take().is_some() {
                self.dirty = true;
                self.notes_dirty = true;
            }
        }
    }

    /// Takes in a new parse of a file's text.
    fn apply(&mut self, path: &Path, fingerprint: Fingerprint, parsed: ParsedFile) {
        let ParsedFile {
            objects,
            mut notes,
            failed,
        } = parsed;
        let (file, state) = match self.files.get_key_value(path) {
            Some((file, _)) => {
                let file = file.clone();
                let state = self.files.get_mut(path).expect("looked up above");
                (file, state)
            }
            None => {
                let file: Arc<Path> = Arc::from(path);
                self.dirty = true;
                self.notes_dirty = true;
                (file.clone(), self.files.entry(file).or_default())
            }
        };
        state.text = Some(fingerprint);
        let keep_last_good = failed && state.good.is_some();
        if keep_last_good {
            notes.push(file_diag(
                Severity::Warning,
                path,
                "keeping the objects of its last version that parsed",
            ));
        }
        if state.notes != notes {
            state.notes = notes;
            self.dirty = true;
            self.notes_dirty = true;
        }
        if keep_last_good {
            return;
        }
        // First read of a partly broken file: serve the documents that did parse.
        let had_good = state.good.is_some();
        let old = state.good.take().unwrap_or_default();
        // Objects equal to their previous version keep the previous allocation, so whatever
        // remembers objects by pointer sees them as unchanged.
        let objects: Vec<SharedObject> = objects
            .into_iter()
            .map(|new| old.iter().find(|o| **o == new).cloned().unwrap_or(new))
            .collect();
        if had_good && old == objects {
            state.good = Some(objects);
            return;
        }
        let orphans = self.index.replace(&self.files, &file, &old, &objects);
        if let Some(state) = self.files.get_mut(path) {
            state.good = Some(objects);
        }
        self.dirty = true;
        self.index.settle(&self.files, orphans);
    }

    /// The current objects and diagnostics as a [`Load`].
    fn current(&mut self) -> Load {
        if self.dirty {
            self.dirty = false;
            let snapshot = &self.index.snapshot;
            let objects = std::mem::take(&mut self.index.changed)
                .into_iter()
                .filter(|(id, was)| !same_entry(was.as_ref(), entry_of(snapshot, id).as_ref()))
                .map(|(id, _)| id)
                .collect();
            self.changes = Changes {
                // Before the first read nothing was handed on to count changes from.
                since: if self.index.track {
                    self.revision
                } else {
                    u64::MAX
                },
                objects: Arc::new(objects),
            };
            self.revision += 1;
            let notes = std::mem::take(&mut self.notes_dirty);
            if std::mem::take(&mut self.index.duplicates_touched) || notes {
                self.diagnostics = self.assemble_diagnostics();
            }
        }
        self.index.track = true;
        Load {
            snapshot: self.index.snapshot.clone(),
            diagnostics: self.diagnostics.clone(),
            files: self.files.len(),
            revision: self.revision,
            changes: self.changes.clone(),
        }
    }

    /// The diagnostics of all files in path order, each file's notes followed by a warning for
    /// every object it defines that an earlier definition (in path order) also defines.
    fn assemble_diagnostics(&self) -> Vec<Diagnostic> {
        // (file, position of the object in the file) → warning
        let mut overridden: Vec<((Arc<Path>, usize), Diagnostic)> = Vec::new();
        for id in &self.index.duplicates {
            let defs = self.index.defs_of(&self.files, None, id);
            for pair in defs.windows(2) {
                let (first, def) = (&pair[0], &pair[1]);
                let path: &Path = &def.file;
                overridden.push((
                    (def.file.clone(), def.at),
                    file_diag(
                        Severity::Warning,
                        path,
                        format!(
                            "{} {} is also defined in {}; this later definition wins",
                            id.0,
                            id.1,
                            first.file.display()
                        ),
                    ),
                ));
            }
        }
        overridden.sort_by(|a, b| a.0.cmp(&b.0));
        let mut overridden = overridden.into_iter().peekable();
        let mut diagnostics = self.root_notes.clone();
        for (path, state) in &self.files {
            diagnostics.extend(
                state
                    .notes
                    .iter()
                    .chain(state.read_error.as_deref())
                    .cloned(),
            );
            while let Some(((_, _), d)) = overridden.next_if(|((p, _), _)| **p == **path) {
                diagnostics.push(d);
            }
        }
        diagnostics
    }
}

/// What parsing one file's text produced.
struct ParsedFile {
    objects: Vec<SharedObject>,
    notes: Vec<Diagnostic>,
    failed: bool,
}

fn parse_file(path: &Path, text: &str) -> ParsedFile {
    let origin = path.display().to_string();
    let mut out = ParsedFile {
        objects: Vec::new(),
        notes: Vec::new(),
        failed: false,
    };
    for parsed in parse_manifests(text, &origin) {
        match parsed {
            Ok(Parsed::Object(o)) => out.objects.push(o.into()),
            Ok(Parsed::Converted { object, from }) => {
                out.notes.push(Diagnostic::new(
                    Severity::Info,
                    object.kind(),
                    &object.key(),
                    Some("apiVersion".into()),
                    format!("read as networking.k8s.io/v1 (written as {from})"),
                ));
                out.objects.push(object.into());
            }
            Ok(Parsed::Skipped { kind, name }) => out.notes.push(file_diag(
                Severity::Info,
                path,
                format!("skipped {kind} {name}: not a kind Portcullis reads"),
            )),
            Err(e) => {
                out.failed = true;
                out.notes.push(file_diag(Severity::Error, path, e.detail()));
            }
        }
    }
    // Kept for as long as the file is: no room for objects that never come.
    out.objects.shrink_to_fit();
    out
}

/// What reading one file found.
enum Outcome {
    /// The text it had when last parsed.
    Same,
    /// A new text, parsed.
    Parsed(Fingerprint, ParsedFile),
    /// It could not be read.
    Failed(std::io::Error),
}

/// Reads many files, and parses those whose text is not the one last parsed (`files`), on all
/// cores: a cold start with thousands of files is YAML-bound. Each text is dropped as soon as it
/// is parsed, so the texts of all files are never held at once. Files that read as they were
/// last parsed, with no read error to forget, are left out: a re-read of an unchanged folder
/// holds nothing per file.
fn read_files(
    files: &BTreeMap<Arc<Path>, FileState>,
    paths: Vec<PathBuf>,
) -> Vec<(PathBuf, Outcome)> {
    let read = |path: PathBuf| {
        let outcome = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let fingerprint = Fingerprint::of(&text);
                let state = files.get(path.as_path());
                let same = state.is_some_and(|s| s.good.is_some() && s.text == Some(fingerprint));
                if same {
                    if state.is_some_and(|s| s.read_error.is_none()) {
                        return None;
                    }
                    Outcome::Same
                } else {
                    Outcome::Parsed(fingerprint, parse_file(&path, &text))
                }
            }
            Err(e) => Outcome::Failed(e),
        };
        Some((path, outcome))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || paths.len() < 64 {
        return paths.into_iter().filter_map(read).collect();
    }
    let chunk = paths.len().div_ceil(threads);
    let mut paths = paths;
    let mut batches = Vec::new();
    while !paths.is_empty() {
        let rest = paths.split_off(paths.len().min(chunk));
        batches.push(std::mem::replace(&mut paths, rest));
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                scope.spawn(move || batch.into_iter().filter_map(read).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn list_manifests(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(root)?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            // Kubernetes volume mounts keep old versions in hidden `..data`-style folders.
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if is_manifest(&path) {
                out.push(path);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
