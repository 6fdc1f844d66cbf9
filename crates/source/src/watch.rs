//! Watching the roots of a [`FolderSource`] and re-reading on change.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, MetadataKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::{FolderSource, Load, SourceError};

/// A burst of file events is read once, when no event has arrived for this long while some
/// manifest may still be half written (created or modified, and not yet closed)…
const DEBOUNCE: Duration = Duration::from_millis(40);
/// …or for this long once every manifest named so far is complete: closed after writing, renamed
/// into place (as editors, `kubectl cp` and ConfigMap volume updates do) or deleted. Events the
/// kernel reports together arrive well within it; a change that needs no full translation (new
/// endpoints) is then served a few milliseconds after it was written.
const SETTLE: Duration = Duration::from_millis(1);

/// What the watcher passes to the reading loop.
enum Message {
    /// Paths named by one event; `writing`: the event says a file is being written (created or
    /// modified) rather than finished.
    Paths { paths: Vec<PathBuf>, writing: bool },
    /// Read everything again (a watcher error, or the kernel dropped events).
    Rescan,
}

/// The changes of one burst: what to re-read, and which manifests are still being written.
struct Burst {
    /// `None`: everything.
    changed: Option<Vec<PathBuf>>,
    writing: HashSet<PathBuf>,
}

impl Burst {
    fn new() -> Self {
        Burst {
            changed: Some(Vec::new()),
            writing: HashSet::new(),
        }
    }

    fn add(&mut self, source: &FolderSource, message: Message) {
        match message {
            Message::Paths { paths, writing } => {
                for path in &paths {
                    if !source.reads(path) {
                        continue;
                    }
                    if writing {
                        self.writing.insert(path.clone());
                    } else {
                        self.writing.remove(path);
                    }
                }
                if let Some(changed) = &mut self.changed {
                    changed.extend(paths);
                }
            }
            Message::Rescan => self.changed = None,
        }
    }

    /// How long to wait for more events before reading.
    fn quiet_time(&self) -> Duration {
        if self.writing.is_empty() && self.changed.is_some() {
            SETTLE
        } else {
            DEBOUNCE
        }
    }
}

/// Watches the source's roots forever; after each burst of changes it re-reads them and calls
/// `on_load` (on a blocking thread) if the objects or diagnostics differ from the last read. `last`
/// is the read the caller already acted on.
pub async fn watch(
    mut source: FolderSource,
    last: Load,
    mut on_load: impl FnMut(&Load) + Send + 'static,
) -> Result<(), SourceError> {
    // Only the revision is kept: a load that stays alive would make the source copy its snapshot
    // on the next change instead of updating it in place.
    let mut last = {
        let revision = last.revision;
        drop(last);
        revision
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let message = match event {
            // Reading a file is an event too: ignore those, or every read would trigger the next.
            Ok(e) if is_read_only(&e.kind) => return,
            Ok(e) if !e.need_rescan() => Message::Paths {
                writing: is_writing(&e.kind),
                paths: e.paths,
            },
            _ => Message::Rescan,
        };
        let _ = tx.send(message);
    })
    .map_err(|source| SourceError::Watch {
        path: String::new(),
        source,
    })?;
    for root in source.roots().to_vec() {
        let (target, mode) = if root.is_dir() {
            (root.clone(), RecursiveMode::Recursive)
        } else {
            // Watch the folder, so replacing the file by rename is seen.
            let parent = root
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            (parent, RecursiveMode::NonRecursive)
        };
        watcher
            .watch(&target, mode)
            .map_err(|source| SourceError::Watch {
                path: target.display().to_string(),
                source,
            })?;
    }
    // Anything that changed between the caller's read and the watches being set up produced no
    // event: read everything once more right away; after that, only what events name.
    let mut first = true;
    loop {
        let mut burst = Burst::new();
        if first {
            burst.changed = None;
            first = false;
        } else {
            let Some(message) = rx.recv().await else {
                break;
            };
            burst.add(&source, message);
            // Coalesce the burst: wait until events stop arriving for a moment.
            while let Ok(Some(message)) = tokio::time::timeout(burst.quiet_time(), rx.recv()).await
            {
                burst.add(&source, message);
            }
        }
        let changed = burst.changed;
        // Reading and acting on the read happen on one blocking thread: no hand-over back to the
        // runtime sits between a change and `on_load`, and the runtime stays free meanwhile.
        let (returned, callback, revision) = tokio::task::spawn_blocking(move || {
            let load = match changed {
                Some(paths) => source.refresh(&paths),
                None => source.load(),
            };
            if load.revision != last {
                on_load(&load);
            }
            (source, on_load, load.revision)
        })
        .await
        .map_err(|e| SourceError::Path {
            path: "<reload>".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        source = returned;
        on_load = callback;
        last = revision;
    }
    drop(watcher);
    Ok(())
}

/// Whether an event only reports that something was opened, read or had its access time updated
/// (closing a file after writing it is not one of those: it says the write is complete).
fn is_read_only(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
        EventKind::Access(_) => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => true,
        _ => false,
    }
}

/// Whether an event says its files are being written: created or modified, and so perhaps not
/// complete until they are closed. Unknown kinds count as being written.
fn is_writing(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(CreateKind::Folder) => false,
        EventKind::Create(_) => true,
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => true,
        EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Metadata(_)) => false,
        EventKind::Access(_) | EventKind::Remove(_) => false,
        EventKind::Any | EventKind::Other => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, RemoveKind, RenameMode};

    #[test]
    fn completed_writes_settle_sooner_than_writes_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let source = FolderSource::new(vec![root.clone()]).unwrap();
        let file = root.join("a.yaml");
        let paths = |writing| Message::Paths {
            paths: vec![file.clone()],
            writing,
        };

        let mut burst = Burst::new();
        burst.add(
            &source,
            paths(is_writing(&EventKind::Create(CreateKind::File))),
        );
        burst.add(
            &source,
            paths(is_writing(&EventKind::Modify(ModifyKind::Data(
                DataChange::Any,
            )))),
        );
        assert_eq!(burst.quiet_time(), DEBOUNCE, "still being written");
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(!is_read_only(&closed));
        burst.add(&source, paths(is_writing(&closed)));
        assert_eq!(burst.quiet_time(), SETTLE, "closed after writing");

        // A file renamed into place is complete; a hidden temporary file being written is not
        // something the source reads, so it does not hold the burst back.
        let mut burst = Burst::new();
        let temp = root.join(".a.yaml.tmp");
        burst.add(
            &source,
            Message::Paths {
                paths: vec![temp.clone()],
                writing: true,
            },
        );
        burst.add(
            &source,
            Message::Paths {
                paths: vec![temp, file.clone()],
                writing: is_writing(&EventKind::Modify(ModifyKind::Name(RenameMode::Both))),
            },
        );
        assert_eq!(burst.quiet_time(), SETTLE);
        assert_eq!(burst.changed.as_ref().map(Vec::len), Some(3));

        burst.add(
            &source,
            paths(is_writing(&EventKind::Remove(RemoveKind::File))),
        );
        assert_eq!(burst.quiet_time(), SETTLE);
        burst.add(&source, Message::Rescan);
        assert_eq!(
            burst.quiet_time(),
            DEBOUNCE,
            "a full re-read waits for the burst to end"
        );
        assert!(burst.changed.is_none());
        assert!(is_read_only(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
    }
}
