//! Watching the roots of a [`FolderSource`] and re-reading on change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{MetadataKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::{FolderSource, Load, SourceError};

/// Bursts of file events closer together than this are read once.
const DEBOUNCE: Duration = Duration::from_millis(40);

/// Watches the source's roots forever; after each burst of changes it re-reads them and calls
/// `on_load` if the objects or diagnostics differ from the last read. `last` is the read the caller
/// already acted on.
pub async fn watch(
    mut source: FolderSource,
    last: Load,
    mut on_load: impl FnMut(&Load) + Send,
) -> Result<(), SourceError> {
    // Only the revision is kept: a load that stays alive would make the source copy its snapshot
    // on the next change instead of updating it in place.
    let mut last = last.revision;
    // `None` asks for a full re-read (a watcher error, or the kernel dropped events).
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<Vec<PathBuf>>>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let message = match event {
            // Reading a file is an event too: ignore those, or every read would trigger the next.
            Ok(e) if is_read_only(&e.kind) => return,
            Ok(e) if !e.need_rescan() => Some(e.paths),
            _ => None,
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
        let mut changed: Option<Vec<PathBuf>> = Some(Vec::new());
        if first {
            changed = None;
            first = false;
        } else {
            let Some(message) = rx.recv().await else {
                break;
            };
            merge(&mut changed, message);
            // Coalesce the burst: wait until events stop arriving for a moment.
            while let Ok(Some(message)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                merge(&mut changed, message);
            }
        }
        let (returned, load) = tokio::task::spawn_blocking(move || {
            let load = match changed {
                Some(paths) => source.refresh(&paths),
                None => source.load(),
            };
            (source, load)
        })
        .await
        .map_err(|e| SourceError::Path {
            path: "<reload>".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        source = returned;
        if load.revision != last {
            last = load.revision;
            on_load(&load);
        }
    }
    drop(watcher);
    Ok(())
}

/// Whether an event only reports that something was opened, read or had its access time updated.
fn is_read_only(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))
    )
}

/// Adds an event's paths to the pending set; `None` (re-read everything) absorbs the rest.
fn merge(pending: &mut Option<Vec<PathBuf>>, message: Option<Vec<PathBuf>>) {
    match (pending.as_mut(), message) {
        (Some(paths), Some(more)) => paths.extend(more),
        _ => *pending = None,
    }
}
