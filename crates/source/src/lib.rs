//! Sources of [`Snapshot`]s. A source never builds routes; it only reads objects.
//!
//! [`FolderSource`] reads a set of manifest files and folders; [`watch`] re-reads them whenever
//! something under them changes (editors, `kubectl cp` and ConfigMap mounts replace files by
//! rename or symlink swap, so folders are watched, not file inodes). [`cluster`] watches a
//! Kubernetes API server instead and hands on the same [`Snapshot`]s.
//!
//! [`Snapshot`]: model::Snapshot
#![forbid(unsafe_code)]

pub mod cluster;
mod folder;
mod watch;

pub use folder::{FolderSource, Load};
pub use watch::watch;

use std::sync::Arc;

use model::{Kind, ObjectKey};

/// What changed in a snapshot a source hands on, since the snapshot of an earlier revision: what
/// lets translation do no more work than the change needs (`translate::Translator`'s
/// `translate_changed`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The revision the changes are counted from: they are complete only for a consumer that
    /// acted on the snapshot of that revision (`u64::MAX`: not known, as after a first read).
    pub since: u64,
    /// Every object added, changed or removed since then (changes translation cannot see, such as
    /// an Ingress's status, may be left out), by kind and key, each once.
    pub objects: Arc<Vec<(Kind, ObjectKey)>>,
}

/// Errors that stop a source from running at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A path given on the command line does not exist or cannot be read.
    #[error("{path}: {source}")]
    Path {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Kubernetes API cannot be used (configuration, client, or the initial lists).
    #[error("{0}")]
    Cluster(String),
    /// The file-system watcher could not be set up.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: notify::Error,
    },
}
