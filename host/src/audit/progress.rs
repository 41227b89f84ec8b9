//! What the audit writer and the store thread share: how far the trail got, whether it
//! works, and the shape of an admin change's job. Both threads depend on this module and
//! the writer on the store thread, never the other way round.
//!
//! Invariants: each health flag is written by one thread only (`journal` by the writer,
//! `store` by the store thread); [`Stored`] changes only under its lock, every change wakes
//! the threads waiting on it, and `durable` is never past `stored`.
//!
//! Threat: a trail that silently stops storing while calls are still acknowledged.

use crate::storage::Tx;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The longest a reader waits for the store thread to store what the writer acknowledged,
/// and the writer for a journal half to be stored durably.
pub(super) const CATCH_UP: Duration = Duration::from_secs(10);

/// Runs a change in the writer's transaction; false when the change refused (the
/// transaction is then aborted).
pub(super) type Job = Box<dyn FnOnce(&Tx<'_>) -> bool + Send>;

/// How far the trail got: acknowledged (journaled) by the writer; stored, and stored
/// durably, by the store thread (sequence numbers).
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) acked: AtomicU64,
    pub(super) state: Mutex<Stored>,
    /// Signalled whenever `state` changes.
    pub(super) changed: Condvar,
}

/// What the store holds (see [`Progress`]).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stored {
    /// The last record in the store.
    pub(super) stored: u64,
    /// The last record in the store durably.
    pub(super) durable: u64,
    /// Durable commits that failed so far (the writer waiting for one learns of it).
    pub(super) failures: u64,
}

impl Progress {
    pub(super) fn lock(&self) -> MutexGuard<'_, Stored> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Stored)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

/// Whether the trail works: calls are refused up front while either part fails.
#[derive(Debug)]
pub(super) struct Health {
    /// The last journal commit succeeded.
    pub(super) journal: AtomicBool,
    /// The last copy into the store succeeded.
    pub(super) store: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            journal: AtomicBool::new(true),
            store: AtomicBool::new(true),
        }
    }
}

impl Health {
    pub(super) fn ok(&self) -> bool {
        self.journal.load(Ordering::Acquire) && self.store.load(Ordering::Acquire)
    }
}
