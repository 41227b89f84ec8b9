//! The writer: callers queue serialized records; one thread chains, journals (one write and
//! one data sync per batch) and acknowledges them, then hands them to the store thread
//! (`copier.rs`), which copies them into redb off the calls' path.
//!
//! Invariants: a caller is woken only after its record's journal sync returned; a full
//! queue refuses rather than grows; a failed journal write fails every caller in the batch
//! and the chain resumes from the last acknowledged record; the writer moves into a journal
//! half only once the store durably holds every record in it, and starts the journal over
//! only once the store durably holds everything journaled (after an admin change or a batch
//! too large for a half, which are stored durably, not journaled), so the journal and the
//! store together always hold every acknowledged record without a gap; an admin change is
//! committed in the transaction that stores its record (after every record queued before
//! it), or not at all.
//!
//! Threat: acknowledged calls whose record is lost in a crash.

use super::chain::{ChainKey, decode, seal};
use super::copier::{Inbox, Msg};
use super::journal::Journal;
use super::progress::{CATCH_UP, Health, Job, Progress};
use super::{AuditError, UsageMap};
use crate::storage::{Store, Usage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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

    /// Waits for the next batch and moves it into `batch`; false once closed and empty.
    ///
    /// After the first record, while fewer records are queued than half the requests under
    /// way (the others will append soon), the writer sleeps until enough have arrived or
    /// the linger time has passed, so one sync covers many calls. Half, not all: the rest
    /// are served by the next commit, so the cores keep working during this one's sync. A
    /// lone caller never waits.
    pub(super) fn next_batch(&self, batch: &mut Vec<Pending>) -> bool {
        let mut state = self.lock();
        while state.pending.is_empty() {
            if state.closed {
                return false;
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
            if state.pending.len() >= want || state.closed || now >= deadline {
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
        true
    }
}

/// Whether the debug-build fault injection (`WARDEN_FAILPOINTS`, comma-separated) names
/// `point`: `audit-commit` fails every commit and copy, `audit-change` the transaction of
/// every admin change after the change ran. Release builds never fail on purpose.
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

/// The writer thread's state: the chain's head, the journal, and what it shares with
/// [`super::AuditLog`] and the store thread.
pub(super) struct Writer {
    pub(super) queue: Arc<Queue>,
    pub(super) progress: Arc<Progress>,
    pub(super) journal: Journal,
    pub(super) key: ChainKey,
    pub(super) usage: Arc<Mutex<UsageMap>>,
    pub(super) health: Arc<Health>,
    /// Sequence number and MAC of the last acknowledged record.
    pub(super) seq: u64,
    pub(super) prev: String,
    /// The last record journaled in each half (0: none the store may lack).
    pub(super) halves: [u64; 2],
    /// The store thread's inbox, and the thread (joined when the writer stops).
    pub(super) copier: Arc<Inbox>,
    pub(super) copier_thread: Option<std::thread::JoinHandle<()>>,
    /// Debug-build fault injection: every commit fails.
    pub(super) fail: bool,
}

impl Writer {
    /// Commits batches until the log is closed and its queue empty, then waits for the
    /// store thread to store everything durably.
    pub(super) fn run(mut self) {
        let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
        while self.queue.next_batch(&mut batch) {
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
        }
        self.copier.close();
        if let Some(thread) = self.copier_thread.take() {
            let _ = thread.join();
        }
    }

    /// Chains `batch` after the last record, makes it durable in the journal, hands it to
    /// the store thread and answers every caller: with its sequence number, or with the
    /// error when that failed (the chain then resumes from the last acknowledged record).
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
                self.health.journal.store(true, Ordering::Release);
                let mut usage = self
                    .usage
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (k, d) in &deltas {
                    usage.entry(k.clone()).or_default().add(d);
                }
                drop(usage);
                // Handed over before the answers: a reader that learns of a record from
                // its answer and asks the store thread to catch up finds it on its way.
                if !direct {
                    self.copier.send(Msg::Records(sealed, deltas));
                }
                // Readers that learn of a record from its answer must find it acknowledged.
                self.progress.acked.store(self.seq, Ordering::Release);
                for (p, seq) in batch.drain(..).zip(first..) {
                    p.answer(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "audit commit failed; refusing the calls");
                self.health.journal.store(false, Ordering::Release);
                for p in batch.drain(..) {
                    p.answer(Err(e.clone()));
                }
            }
        }
    }

    /// Commits an admin change and its record in one durable store transaction (run by the
    /// store thread after every record journaled before it). When the change refuses,
    /// nothing is written and the caller finishes its record as usual; when the
    /// transaction fails, the change is not applied and the request is journaled as an
    /// error instead (when the journal still works).
    pub(super) fn apply_change(&mut self, mut p: Pending) {
        let Some(Change { job, lost }) = p.change.take() else {
            return;
        };
        if self.fail {
            p.answer(Err("commit refused (failpoint audit-commit)".to_owned()));
            self.health.journal.store(false, Ordering::Release);
            return;
        }
        let seq = self.seq + 1;
        let (mac, sealed) = seal(&self.key, seq, &self.prev, &p.body);
        let own = p.usage.take();
        let usage = own.clone();
        match self.copier.call(|reply| Msg::Change {
            job,
            record: (seq, sealed),
            usage,
            reply,
        }) {
            Ok(false) => {
                p.answer(Ok(0));
            }
            Ok(true) => {
                self.seq = seq;
                self.prev = mac;
                if let Some((k, d)) = &own {
                    self.usage
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(k.clone())
                        .or_default()
                        .add(d);
                }
                // The store durably holds every record up to this one, which the journal
                // lacks: the journal starts over, so that no gap precedes what follows.
                self.restart_journal();
                self.progress.acked.store(seq, Ordering::Release);
                p.answer(Ok(seq));
            }
            Err(e) => {
                tracing::error!(error = %e, "an admin change and its record could not be committed; the change is not applied");
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
                let _ = self.copier.call(Msg::Store);
                p.answer(Err(e));
            }
        }
    }

    /// Makes `sealed` durable: in the journal (moving to the other half when this one is
    /// full, once the store durably holds what that half holds), or, larger than a half,
    /// straight in the store, durably, through the store thread. Ok(true) for the latter.
    pub(super) fn make_durable(
        &mut self,
        sealed: &[(u64, Vec<u8>)],
        deltas: &HashMap<String, Usage>,
    ) -> Result<bool, String> {
        if self.fail {
            return Err("commit refused (failpoint audit-commit)".to_owned());
        }
        if !self.journal.fits(sealed) {
            if !Journal::fits_a_half(sealed) {
                let usage = deltas.clone();
                self.copier.call(|reply| Msg::Direct {
                    records: sealed.to_vec(),
                    usage,
                    reply,
                })?;
                self.restart_journal();
                return Ok(true);
            }
            let (here, next) = (self.journal.half(), self.journal.half() ^ 1);
            self.wait_durable(self.halves[next])?;
            // The half left behind is asked for now, so that it is durable long before
            // the writer comes back to it.
            self.copier.send(Msg::Durable(self.halves[here]));
            self.journal.switch();
            self.halves[next] = 0;
        }
        self.journal
            .append(sealed)
            .map_err(|e| format!("audit journal {}: {e}", self.journal.path().display()))?;
        if let Some((last, _)) = sealed.last() {
            self.halves[self.journal.half()] = *last;
        }
        Ok(false)
    }

    /// Starts the journal over: only when the store durably holds every record so far.
    fn restart_journal(&mut self) {
        self.journal.restart();
        self.halves = [0, 0];
    }

    /// Waits until the store durably holds record `seq` (asking the store thread for it);
    /// an error when a durable commit fails meanwhile or it takes longer than
    /// [`CATCH_UP`].
    fn wait_durable(&self, seq: u64) -> Result<(), String> {
        let failures = {
            let state = self.progress.lock();
            if state.durable >= seq {
                return Ok(());
            }
            state.failures
        };
        self.copier.send(Msg::Durable(seq));
        let deadline = Instant::now() + CATCH_UP;
        let mut state = self.progress.lock();
        while state.durable < seq {
            let now = Instant::now();
            if state.failures > failures || now >= deadline {
                return Err("the audit trail could not be stored".to_owned());
            }
            state = self
                .progress
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        Ok(())
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
    if let Some(w) = missing.windows(2).find(|w| w[1].0 != w[0].0 + 1) {
        return Err(AuditError::Unavailable(format!(
            "audit journal {} lacks the records between {} and {}",
            path.display(),
            w[0].0,
            w[1].0
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
