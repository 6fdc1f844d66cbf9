//! Reading a set of manifest files and folders into a [`Snapshot`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use model::{parse_manifests, Diagnostic, Object, Parsed, Severity, Snapshot};

use crate::SourceError;

/// The result of one read of all paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// Every object read (the last good version of files that now fail to parse).
    pub snapshot: Snapshot,
    /// Parse errors, skipped documents and conversions, per file.
    pub diagnostics: Vec<Diagnostic>,
    /// How many manifest files were read.
    pub files: usize,
}

#[derive(Debug, Default)]
struct FileState {
    text: String,
    /// Objects of the last version of the file that parsed without error.
    good: Option<Vec<Object>>,
    /// Diagnostics of the current text.
    notes: Vec<Diagnostic>,
    /// Why the file could not be read the last time, if it could not.
    read_error: Option<Diagnostic>,
}

/// A set of manifest files and folders, re-read on demand.
#[derive(Debug)]
pub struct FolderSource {
    roots: Vec<PathBuf>,
    files: BTreeMap<PathBuf, FileState>,
    /// Roots that could not be listed at the last full read.
    root_notes: Vec<Diagnostic>,
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn file_diag(severity: Severity, file: &Path, message: impl Into<String>) -> Diagnostic {
    Diagnostic::new(severity, "File", file.display(), None, message)
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
        let mut diagnostics = Vec::new();
        self.read_all(&mut diagnostics);
        self.root_notes = diagnostics;
        self.assemble()
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
            let hidden = path
                .file_name()
                .is_none_or(|n| n.to_string_lossy().starts_with('.'));
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
        self.assemble()
    }

    /// Whether a path is one of the roots or inside a root folder.
    fn covers(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path == r || path.starts_with(r))
    }

    fn read_file(&mut self, path: &Path) {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let state = self.files.entry(path.to_path_buf()).or_default();
                state.read_error = None;
                if state.good.is_none() || state.text != text {
                    reparse(path, state, text);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.files.remove(path);
            }
            Err(e) => self.record_read_error(path, &e),
        }
    }

    fn record_read_error(&mut self, path: &Path, e: &std::io::Error) {
        let state = self.files.entry(path.to_path_buf()).or_default();
        state.read_error = Some(file_diag(
            Severity::Error,
            path,
            format!("cannot read ({e}); keeping its last good objects"),
        ));
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
        self.files.retain(|path, _| {
            seen.binary_search(path).is_ok() || unreadable_roots.iter().any(|r| path.starts_with(r))
        });
        let mut jobs = Vec::new();
        for path in &seen {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let state = self.files.entry(path.clone()).or_default();
                    state.read_error = None;
                    if state.good.is_none() || state.text != text {
                        jobs.push((path.clone(), text));
                    }
                }
                Err(e) => self.record_read_error(path, &e),
            }
        }
        for (path, text, parsed) in parse_all(jobs) {
            let state = self.files.entry(path.clone()).or_default();
            apply(&path, state, text, parsed);
        }
    }

    /// The snapshot and diagnostics of the files as last read.
    fn assemble(&self) -> Load {
        let mut diagnostics = self.root_notes.clone();
        let mut snapshot = Snapshot::default();
        let mut origin: BTreeMap<(model::Kind, model::ObjectKey), PathBuf> = BTreeMap::new();
        for (path, state) in &self.files {
            diagnostics.extend(state.notes.iter().chain(&state.read_error).cloned());
            for object in state.good.iter().flatten() {
                let id = (object.kind(), object.key());
                if let Some(first) = origin.get(&id) {
                    diagnostics.push(file_diag(
                        Severity::Warning,
                        path,
                        format!(
                            "{} {} is also defined in {}; this later definition wins",
                            id.0,
                            id.1,
                            first.display()
                        ),
                    ));
                }
                origin.insert(id, path.clone());
                snapshot.insert(object.clone());
            }
        }
        Load {
            snapshot,
            diagnostics,
            files: self.files.len(),
        }
    }
}

/// What parsing one file's text produced.
struct ParsedFile {
    objects: Vec<Object>,
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
            Ok(Parsed::Object(o)) => out.objects.push(o),
            Ok(Parsed::Converted { object, from }) => {
                out.notes.push(Diagnostic::new(
                    Severity::Info,
                    object.kind().as_str(),
                    object.key(),
                    Some("apiVersion".into()),
                    format!("read as networking.k8s.io/v1 (written as {from})"),
                ));
                out.objects.push(object);
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
    out
}

fn apply(path: &Path, state: &mut FileState, text: String, parsed: ParsedFile) {
    let ParsedFile {
        objects,
        mut notes,
        failed,
    } = parsed;
    if failed && state.good.is_some() {
        notes.push(file_diag(
            Severity::Warning,
            path,
            "keeping the objects of its last version that parsed",
        ));
    } else {
        // First read of a partly broken file: serve the documents that did parse.
        state.good = Some(objects);
    }
    state.text = text;
    state.notes = notes;
}

fn reparse(path: &Path, state: &mut FileState, text: String) {
    let parsed = parse_file(path, &text);
    apply(path, state, text, parsed);
}

/// Parses many files on all cores (a cold start with thousands of files is YAML-bound).
fn parse_all(jobs: Vec<(PathBuf, String)>) -> Vec<(PathBuf, String, ParsedFile)> {
    let parse_batch = |batch: Vec<(PathBuf, String)>| {
        batch
            .into_iter()
            .map(|(path, text)| {
                let parsed = parse_file(&path, &text);
                (path, text, parsed)
            })
            .collect::<Vec<_>>()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || jobs.len() < 64 {
        return parse_batch(jobs);
    }
    let chunk = jobs.len().div_ceil(threads);
    let mut jobs = jobs;
    let mut batches = Vec::new();
    while !jobs.is_empty() {
        let rest = jobs.split_off(jobs.len().min(chunk));
        batches.push(std::mem::replace(&mut jobs, rest));
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .into_iter()
            .map(|batch| scope.spawn(move || parse_batch(batch)))
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
mod tests {
    use super::*;

    const SVC: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n";

    #[test]
    fn reads_nested_folders_and_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.yaml"), SVC).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let mut src = FolderSource::new(vec![dir.path().to_path_buf()]).unwrap();
        let first = src.load();
        assert_eq!(first.snapshot.services.len(), 1);
        assert!(first.diagnostics.is_empty(), "{:?}", first.diagnostics);

        std::fs::write(dir.path().join("sub/a.yaml"), "kind: [broken").unwrap();
        let second = src.load();
        assert_eq!(second.snapshot, first.snapshot, "last good objects stay");
        assert!(second
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error && d.object.ends_with("a.yaml")));

        std::fs::remove_file(dir.path().join("sub/a.yaml")).unwrap();
        assert!(
            src.load().snapshot.is_empty(),
            "a deleted file's objects go"
        );
    }

    #[test]
    fn refresh_reads_only_named_files_and_rescans_for_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("a.yaml"), SVC).unwrap();
        std::fs::write(root.join("b.yaml"), SVC.replace("name: a", "name: b")).unwrap();
        let mut src = FolderSource::new(vec![root.clone()]).unwrap();
        assert_eq!(src.load().snapshot.services.len(), 2);

        // A changed file named by an event is re-read; an unnamed change waits for its event.
        std::fs::write(root.join("a.yaml"), SVC.replace("port: 80", "port: 81")).unwrap();
        std::fs::write(root.join("c.yaml"), SVC.replace("name: a", "name: c")).unwrap();
        let load = src.refresh(&[root.join("a.yaml"), root.join(".a.yaml.swp")]);
        assert_eq!(load.snapshot.services.len(), 2);
        let a = &load.snapshot.services[&model::ObjectKey::new("default", "a")];
        assert_eq!(a.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port, 81);

        // A deleted file named by an event goes.
        std::fs::remove_file(root.join("b.yaml")).unwrap();
        let load = src.refresh(&[root.join("b.yaml")]);
        assert!(!load
            .snapshot
            .services
            .contains_key(&model::ObjectKey::new("default", "b")));

        // A new folder makes the whole tree be read again (and so c.yaml is found).
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/d.yaml"), SVC.replace("name: a", "name: d")).unwrap();
        let load = src.refresh(&[root.join("sub")]);
        assert_eq!(load.snapshot.services.len(), 3, "a, c and d");
        // Paths outside the roots are ignored.
        assert_eq!(src.refresh(&["/elsewhere/x.yaml".into()]), load);
    }

    #[test]
    fn missing_root_is_an_error() {
        assert!(FolderSource::new(vec!["/nonexistent/portcullis".into()]).is_err());
    }

    #[test]
    fn hidden_folders_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("..2024_01_01")).unwrap();
        std::fs::write(dir.path().join("..2024_01_01/a.yaml"), SVC).unwrap();
        let mut src = FolderSource::new(vec![dir.path().to_path_buf()]).unwrap();
        assert!(src.load().snapshot.is_empty());
    }
}
