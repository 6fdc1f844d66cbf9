//! The one piece of state shared by the control side and the data plane.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::Table;

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

    /// Replaces the table; returns the new generation number.
    pub fn publish(&self, table: Table) -> u64 {
        self.current.store(Arc::new(table));
        self.ready.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
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
