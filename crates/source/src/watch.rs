//! Watching the roots of a [`FolderSource`] and re-reading on change.

use std::path::Path;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::{FolderSource, Load, SourceError};

/// Bursts of file events closer together than this are read once.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Watches the source's roots forever; after each burst of changes it re-reads them and calls
/// `on_load` if the objects or diagnostics differ from the last read. `last` is the read the caller
/// already acted on.
pub async fn watch(
    mut source: FolderSource,
    mut last: Load,
    mut on_load: impl FnMut(&Load) + Send,
) -> Result<(), SourceError> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel already means "something changed"; nothing is lost by dropping this.
            let _ = tx.try_send(());
        }
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
    // event: read once more right away, then after every burst of events.
    let mut pending = true;
    loop {
        if !pending {
            if rx.recv().await.is_none() {
                break;
            }
            // Coalesce the burst: wait until events stop arriving for a moment.
            while tokio::time::timeout(DEBOUNCE, rx.recv())
                .await
                .is_ok_and(|e| e.is_some())
            {}
        }
        pending = false;
        let (returned, load) = tokio::task::spawn_blocking(move || {
            let load = source.load();
            (source, load)
        })
        .await
        .map_err(|e| SourceError::Path {
            path: "<reload>".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        source = returned;
        if load != last {
            on_load(&load);
            last = load;
        }
    }
    drop(watcher);
    Ok(())
}
