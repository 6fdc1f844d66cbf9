//! The one piece of state shared by the control side and the data plane.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::Table;

/// Tables with more routes and backends than this are freed off the publishing thread.
const RELEASE_ELSEWHERE: usize = 1024;

/// Drops a replaced table: a large one on a short-lived thread (freeing tens of thousands of
/// routes takes milliseconds), a small one, one whose host maps live on in the new table (then
/// little is freed), or one a thread cannot be started for, right here.
fn release(old: Arc<Table>) {
    let shared = Arc::strong_count(&old.exact_hosts) > 1;
    if shared || old.backends.len() + old.exact_hosts.len() < RELEASE_ELSEWHERE {
        return;
    }
    // If the thread cannot be started, the closure and the table in it are dropped here.
    let _ = std::thread::Builder::new()
        .name("portcullis-release".into())
        .spawn(move || drop(old));
}

/// The currently served table behind one atomic pointer. Readers never block writers or each other;
/// a request keeps the table it loaded until it finishes.
#[derive(Debug)]
pub struct Published {
    current: ArcSwap<Table>,
    generation: AtomicU64,
    ready: AtomicBool,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            current: ArcSwap::from_pointee(Table::default()),
            generation: AtomicU64::new(0),
            ready: AtomicBool::new(false),
        }
    }
}

impl Published {
    /// An empty table, not yet ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current table (one atomic load).
    pub fn load(&self) -> Guard<Arc<Table>> {
        self.current.load()
    }

    /// The current table as an owned pointer (for long-lived readers such as `/config`).
    pub fn load_full(&self) -> Arc<Table> {
        self.current.load_full()
    }

    /// Replaces the table; returns the new generation number. A large replaced table is freed on
    /// a thread of its own, so the caller can move on as soon as the new table is served.
    pub fn publish(&self, table: Table) -> u64 {
        let old = self.current.swap(Arc::new(table));
        self.ready.store(true, Ordering::Release);
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        release(old);
        generation
    }

    /// How many tables have been published.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a table has been published at least once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
