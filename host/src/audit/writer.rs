//! The writer: callers queue serialized records; one thread chains, journals (one write and
//! one data sync per batch) and acknowledges them, then copies them into redb.
//!
//! Invariants: a caller is woken only after its record's journal sync returned; a full
//! queue refuses rather than grows; a failed journal write fails every caller in the batch
//! and the chain resumes from the last acknowledged record; the journal starts over only
//! after a durable redb commit holding all it holds; an admin change is committed in the
//! transaction that stores its record (after every record queued before it), or not at
//! all.
//!
//! Threat: acknowledged calls whose record is lost in a crash.

use super::chain::{ChainKey, decode, seal};
use super::journal::Journal;
use super::{AuditError, UsageMap};
use crate::storage::{Store, StoreError, Tx, Usage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most records committed in one transaction.
pub(super) const MAX_BATCH: usize = 1024;
/// Records queued before further callers are refused (each caller waits for its own record,
/// so this is only reached with that many requests under way at once).
pub(super) const QUEUE: usize = 16_384;
/// The longest the writer waits for more records before it commits.
pub(super) const LINGER_MAX: Duration = Duration::from_millis(1);
/// Journaled records the writer lets wait before it copies them into the store (it copies
/// sooner when nothing is queued, or when a reader asks).
pub(super) const APPLY_BATCH: usize = 512;
/// The longest a reader waits for the writer to store what it acknowledged.
pub(super) const CATCH_UP: Duration = Duration::from_secs(10);

/// A request under way that will append a record (see [`AuditLog::expect`]): the writer
/// counts them to judge how many records are about to arrive.
pub struct Expected(pub(super) Arc<Queue>);

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expected")
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A record on its way to the writer: its JSON body and usage delta are made on the
/// caller's thread, so the writer only chains, MACs and commits.
pub(super) struct Pending {
    pub(super) body: Vec<u8>,
    pub(super) usage: Option<(String, Usage)>,
    pub(super) done: oneshot::Sender<Answer>,
    /// An admin change to commit with this record (see `PendingRecord::commit`).
    pub(super) change: Option<Change>,
    /// The request's place among those under way ([`AuditLog::expect`]), given up when
    /// the record is answered: a record already written is not one to wait for.
    pub(super) _expected: Option<Expected>,
}

impl Pending {
    /// Answers the caller. The request stops counting as under way first, so that a caller
    /// woken by the answer never finds its own record still counted.
    pub(super) fn answer(self, result: Result<u64, String>) {
        drop(self._expected);
        let _ = self.done.send((result, self.body));
    }
}

/// Runs a change in the writer's transaction; false when the change refused (the
/// transaction is then aborted).
pub(super) type Job = Box<dyn FnOnce(&Tx<'_>) -> bool + Send>;

/// An admin change and the record written instead of its own when the transaction that
/// would store both fails (the request's outcome is then an error).
pub(super) struct Change {
    pub(super) job: Job,
    pub(super) lost: Vec<u8>,
}

/// The writer's answer: the sequence number (or why the commit failed), and the body's
/// buffer, handed back so that the caller's thread frees what it allocated (a free from
/// another thread costs the allocator more).
pub(super) type Answer = (Result<u64, String>, Vec<u8>);

/// The writer's queue, shared with the callers.
pub(super) struct Queue {
    /// The longest the writer waits for more records ([`LINGER_MAX`] but in tests).
    pub(super) linger: Duration,
    pub(super) state: Mutex<QueueState>,
    /// Signalled when the queue reaches what the sleeping writer waits for, and on close.
    pub(super) ready: Condvar,
    /// Requests under way whose record is not yet answered (see [`AuditLog::expect`]).
    pub(super) inflight: AtomicUsize,
}

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) pending: Vec<Pending>,
    /// How many queued records wake the sleeping writer (0: it is not asleep). Callers
    /// signal only when their record reaches it, so a batch costs the writer one wake-up.
    pub(super) wake_at: usize,
    /// Set when the log is dropped: the writer commits what is queued and stops.
    pub(super) closed: bool,
    /// A reader waits for every acknowledged record to be in the store.
    pub(super) flush: bool,
}

/// What [`Queue::next_batch`] saw besides the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Next {
    /// A reader asked for the store to catch up.
    pub(super) flush: bool,
}

impl Queue {
    pub(super) fn new(linger: Duration) -> Self {
        Self {
            linger,
            state: Mutex::default(),
            ready: Condvar::new(),
            inflight: AtomicUsize::new(0),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn push(&self, pending: Pending) -> Result<(), AuditError> {
        let mut state = self.lock();
        if state.closed {
            return Err(AuditError::Unavailable("the audit writer stopped".into()));
        }
        if state.pending.len() >= QUEUE {
            return Err(AuditError::Unavailable("the audit queue is full".into()));
        }
        state.pending.push(pending);
        let wake = state.wake_at != 0 && state.pending.len() >= state.wake_at;
        if wake {
            state.wake_at = 0;
        }
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lock().pending.is_empty()
    }

    pub(super) fn request_flush(&self) {
        self.lock().flush = true;
        self.ready.notify_one();
    }

    /// Waits for the next batch and moves it into `batch` (empty when only a reader's
    /// flush woke the writer); None once closed and empty.
    ///
    /// After the first record, while fewer records are queued than half the requests under
    /// way (the others will append soon), the writer sleeps until enough have arrived or
    /// the linger time has passed, so one sync covers many calls. Half, not all: the rest
    /// are served by the next commit, so the cores keep working during this one's sync. A
    /// lone caller never waits.
    pub(super) fn next_batch(&self, batch: &mut Vec<Pending>) -> Option<Next> {
        let mut state = self.lock();
        while state.pending.is_empty() && !state.flush {
            if state.closed {
                return None;
            }
            state.wake_at = 1;
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let deadline = Instant::now() + self.linger;
        while !state.pending.is_empty() {
            let want = (self.inflight.load(Ordering::Acquire) / 2).min(MAX_BATCH);
            let now = Instant::now();
            if state.pending.len() >= want || state.closed || state.flush || now >= deadline {
                break;
            }
            state.wake_at = want;
            state = self
                .ready
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        state.wake_at = 0;
        let n = state.pending.len().min(MAX_BATCH);
        batch.extend(state.pending.drain(..n));
        Some(Next {
            flush: std::mem::take(&mut state.flush),
        })
    }
}

/// How far the writer got: acknowledged (journaled) and stored, by sequence number.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) acked: AtomicU64,
    pub(super) stored: Mutex<u64>,
    pub(super) stored_changed: Condvar,
}

impl Progress {
    pub(super) fn lock(&self) -> MutexGuard<'_, u64> {
        self.stored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn set_stored(&self, seq: u64) {
        *self.lock() = seq;
        self.stored_changed.notify_all();
    }
}

/// Whether the debug-build fault injection (`WARDEN_FAILPOINTS`, comma-separated) names
/// `point`: `audit-commit` fails every commit, `audit-change` the transaction of every
/// admin change after the change ran. Release builds never fail on purpose.
pub(super) fn failpoint(point: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var(crate::env::FAILPOINTS).is_ok_and(|v| v.split(',').any(|f| f == point))
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = point;
        false
    }
}

/// The writer thread's state: the chain's head, the journal, the records journaled but not
/// yet in the store, and what it shares with [`AuditLog`].
pub(super) struct Writer {
    pub(super) queue: Arc<Queue>,
    pub(super) progress: Arc<Progress>,
    pub(super) store: Arc<Store>,
    pub(super) journal: Journal,
    pub(super) key: ChainKey,
    pub(super) usage: Arc<Mutex<UsageMap>>,
    pub(super) healthy: Arc<AtomicBool>,
    /// Sequence number and MAC of the last acknowledged record.
    pub(super) seq: u64,
    pub(super) prev: String,
    /// Journaled records not yet in the store, and their usage.
    pub(super) unstored: Vec<(u64, Vec<u8>)>,
    pub(super) unstored_usage: HashMap<String, Usage>,
    /// The last copy into the store failed (calls are refused until one succeeds).
    pub(super) store_failed: bool,
    /// Debug-build fault injection: every commit fails.
    pub(super) fail: bool,
    /// Debug-build fault injection: every admin change's transaction fails.
    pub(super) fail_change: bool,
}

impl Writer {
    /// Commits batches until the log is closed and its queue empty, then stores everything
    /// durably.
    pub(super) fn run(mut self) {
        let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
        while let Some(next) = self.queue.next_batch(&mut batch) {
            // Records queued before a change are committed before it, and those after it
            // after it, so the chain's order is the order of arrival.
            while let Some(at) = batch.iter().position(|p| p.change.is_some()) {
                let mut after = batch.split_off(at);
                let change = after.remove(0);
                if !batch.is_empty() {
                    self.commit(&mut batch);
                }
                self.apply_change(change);
                batch.append(&mut after);
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
            // Idle is judged after the sync: what arrived meanwhile goes first.
            if next.flush || self.unstored.len() >= APPLY_BATCH || self.queue.is_empty() {
                self.store_journaled(false);
            }
        }
        self.store_journaled(true);
    }

    /// Chains `batch` after the last record, makes it durable in the journal, and answers
    /// every caller: with its sequence number, or with the error when that failed (the
    /// chain then resumes from the last acknowledged record). When the journal is full, it
    /// first stores everything journaled durably and starts the journal over; a batch too
    /// large for the journal goes straight into the store, durably.
    pub(super) fn commit(&mut self, batch: &mut Vec<Pending>) {
        let mut sealed = Vec::with_capacity(batch.len());
        let mut deltas: HashMap<String, Usage> = HashMap::new();
        let mut prev = self.prev.clone();
        for (p, seq) in batch.iter_mut().zip(self.seq + 1..) {
            let (mac, bytes) = seal(&self.key, seq, &prev, &p.body);
            prev = mac;
            sealed.push((seq, bytes));
            if let Some((k, d)) = p.usage.take() {
                deltas.entry(k).or_default().add(&d);
            }
        }
        match self.make_durable(&sealed, &deltas) {
            Ok(direct) => {
                let first = self.seq + 1;
                self.seq += batch.len() as u64;
                self.prev = prev;
                self.healthy.store(!self.store_failed, Ordering::Release);
                let mut usage = self
                    .usage
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (k, d) in &deltas {
                    usage.entry(k.clone()).or_default().add(d);
                    if !direct {
                        self.unstored_usage.entry(k.clone()).or_default().add(d);
                    }
                }
                drop(usage);
                if direct {
                    self.progress.set_stored(self.seq);
                } else {
                    self.unstored.append(&mut sealed);
                }
                // Readers that learn of a record from its answer must find it acknowledged.
                self.progress.acked.store(self.seq, Ordering::Release);
                for (p, seq) in batch.drain(..).zip(first..) {
                    p.answer(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "audit commit failed; refusing the calls");
                self.healthy.store(false, Ordering::Release);
                for p in batch.drain(..) {
                    p.answer(Err(e.clone()));
                }
            }
        }
    }

    /// Commits an admin change and its record in one durable store transaction, after
    /// every journaled record (copied in the same transaction). When the change refuses,
    /// nothing is written and the caller finishes its record as usual; when the
    /// transaction fails, the change is not applied and the request is journaled as an
    /// error instead (when the journal still works).
    pub(super) fn apply_change(&mut self, mut p: Pending) {
        let Some(Change { job, lost }) = p.change.take() else {
            return;
        };
        if self.fail {
            p.answer(Err("commit refused (failpoint audit-commit)".to_owned()));
            self.healthy.store(false, Ordering::Release);
            return;
        }
        let seq = self.seq + 1;
        let (mac, sealed) = seal(&self.key, seq, &self.prev, &p.body);
        let own = p.usage.take();
        let mut usage = self.unstored_usage.clone();
        if let Some((k, d)) = &own {
            usage.entry(k.clone()).or_default().add(d);
        }
        let usage: Vec<(String, Usage)> = usage.into_iter().collect();
        let fail = self.fail_change;
        let unstored = &self.unstored;
        let result = self.store.atomically(|tx| {
            if !job(tx) {
                return Ok(false);
            }
            let mut records = Vec::with_capacity(unstored.len() + 1);
            records.extend_from_slice(unstored);
            records.push((seq, sealed));
            tx.append_audit(&records, &usage)?;
            if fail {
                return Err(StoreError::Corrupt(
                    "commit refused (failpoint audit-change)".into(),
                ));
            }
            Ok(true)
        });
        match result {
            Ok(false) => {
                p.answer(Ok(0));
            }
            Ok(true) => {
                self.seq = seq;
                self.prev = mac;
                self.unstored.clear();
                self.unstored_usage.clear();
                if let Some((k, d)) = &own {
                    self.usage
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(k.clone())
                        .or_default()
                        .add(d);
                }
                self.store_failed = false;
                self.healthy.store(true, Ordering::Release);
                self.progress.set_stored(seq);
                self.progress.acked.store(seq, Ordering::Release);
                p.answer(Ok(seq));
            }
            Err(e) => {
                let e = e.to_string();
                tracing::error!(error = %e, "an admin change and its record could not be committed; the change is not applied");
                self.store_failed = true;
                self.healthy.store(false, Ordering::Release);
                // Before answering, so that the caller's next request finds the trail's
                // health as it now is: the store is retried at once.
                let (done, _) = oneshot::channel();
                self.commit(&mut vec![Pending {
                    body: lost,
                    usage: own,
                    done,
                    change: None,
                    _expected: None,
                }]);
                self.store_journaled(false);
                p.answer(Err(e));
            }
        }
    }

    /// Makes `sealed` durable: in the journal, after storing everything journaled durably
    /// and starting the journal over when it is full, or (larger than the whole journal)
    /// straight in the store. Ok(true) for the latter.
    pub(super) fn make_durable(
        &mut self,
        sealed: &[(u64, Vec<u8>)],
        deltas: &HashMap<String, Usage>,
    ) -> Result<bool, String> {
        if self.fail {
            return Err("commit refused (failpoint audit-commit)".to_owned());
        }
        if !self.journal.fits(sealed) {
            if !self.store_journaled(true) {
                return Err("the audit trail could not be stored".to_owned());
            }
            self.journal.reset();
        }
        if self.journal.fits(sealed) {
            return self
                .journal
                .append(sealed)
                .map(|()| false)
                .map_err(|e| format!("audit journal {}: {e}", self.journal.path().display()));
        }
        let usage: Vec<(String, Usage)> =
            deltas.iter().map(|(k, d)| (k.clone(), d.clone())).collect();
        self.store
            .append_audit(sealed, &usage, true)
            .map(|()| true)
            .map_err(|e| e.to_string())
    }

    /// Copies the journaled records into the store with their usage, durably or not (the
    /// journal holds them durably already). A durable copy also persists every earlier one,
    /// so the journal may start over after it. False when the store failed: the records
    /// stay journaled and the next copy retries them, and calls are refused meanwhile.
    pub(super) fn store_journaled(&mut self, durable: bool) -> bool {
        if self.unstored.is_empty() && !durable {
            return true;
        }
        let usage: Vec<(String, Usage)> = self.unstored_usage.drain().collect();
        let result = if self.fail {
            Err("store refused (failpoint audit-commit)".to_owned())
        } else {
            self.store
                .append_audit(&self.unstored, &usage, durable)
                .map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => {
                self.unstored.clear();
                self.progress.set_stored(self.seq);
                if self.store_failed {
                    self.store_failed = false;
                    self.healthy.store(true, Ordering::Release);
                }
                true
            }
            Err(e) => {
                if !self.store_failed {
                    tracing::error!(error = %e, records = self.unstored.len(), "storing journaled audit records failed; refusing calls");
                }
                self.unstored_usage.extend(usage);
                self.store_failed = true;
                self.healthy.store(false, Ordering::Release);
                false
            }
        }
    }
}

/// Replays into `store` the journaled records it lacks (after a crash), durably, and
/// returns the journal, ready to start over. Fails when the journal does not continue the
/// store's trail (records would be missing in between).
pub fn recover(store: &Store) -> Result<Journal, AuditError> {
    let path = journal_path(store);
    let (journal, records) = Journal::open(&path)
        .map_err(|e| AuditError::Unavailable(format!("audit journal {}: {e}", path.display())))?;
    let last = store.last_audit()?.map_or(0, |(seq, _)| seq);
    let missing: Vec<(u64, Vec<u8>)> = records.into_iter().filter(|(s, _)| *s > last).collect();
    if let Some((first, _)) = missing.first()
        && *first != last + 1
    {
        return Err(AuditError::Unavailable(format!(
            "audit journal {} continues at record {first} but the store ends at record {last}",
            path.display()
        )));
    }
    // What the reopened store holds is durable, so the journal may start over once the
    // missing records are durable too.
    if missing.is_empty() {
        return Ok(journal);
    }
    let mut usage: HashMap<String, Usage> = HashMap::new();
    for (_, bytes) in &missing {
        if let Some((k, d)) = decode(bytes).and_then(|r| r.usage()) {
            usage.entry(k).or_default().add(&d);
        }
    }
    tracing::warn!(
        records = missing.len(),
        from = last + 1,
        "replaying audit records from the journal"
    );
    store.append_audit(&missing, &usage.into_iter().collect::<Vec<_>>(), true)?;
    Ok(journal)
}

pub(super) fn journal_path(store: &Store) -> std::path::PathBuf {
    crate::datadir::journal_of(store.path())
}
