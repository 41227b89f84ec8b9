//! The store thread: copies the records the writer journaled (and acknowledged) into redb
//! with their usage counters, off the calls' path, and commits redb durably when the writer
//! needs a journal half back or an admin change is to be committed with its record.
//!
//! The writer hands over each batch after its journal sync; the thread sleeps until
//! [`APPLY_BATCH`] records wait, a reader asks for the store to catch up, the writer asks
//! for something else, or records have waited [`IDLE`], and then copies everything waiting
//! in one transaction that does not sync (the journal holds those records durably). Each
//! message is handled in the order it was sent, so a transaction always holds every record
//! sent before it.
//!
//! Invariants: the store holds records in sequence order without gaps; a record handed
//! over stays in memory until a commit holding it succeeds (a failed copy is retried by the
//! next one, and calls are refused meanwhile); `durable` in [`Progress`] never exceeds what
//! a synced commit holds; a direct batch or an admin change's record that failed to commit
//! is dropped (it was never acknowledged).
//!
//! Threat: acknowledged calls whose record never reaches the store, and a slow store
//! stalling every call's acknowledgement.

use super::progress::{CATCH_UP, Health, Job, Progress};
use crate::storage::{Store, StoreError, Usage};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Records that wake the store thread to copy them.
pub(super) const APPLY_BATCH: usize = 512;
/// The longest a record waits to be copied when fewer than [`APPLY_BATCH`] arrive.
pub(super) const IDLE: Duration = Duration::from_millis(50);

/// The answer to a message that waits for one: Ok(true) when committed, Ok(false) when an
/// admin change refused, or why the commit failed.
pub(super) type Reply = SyncSender<Result<bool, String>>;

/// What the writer asks of the store thread.
pub(super) enum Msg {
    /// Journaled and acknowledged records, with their usage: copy them.
    Records(Vec<(u64, Vec<u8>)>, HashMap<String, Usage>),
    /// Make the store durably hold every record up to this one.
    Durable(u64),
    /// Records too large for the journal: commit them durably after what is waiting.
    Direct {
        records: Vec<(u64, Vec<u8>)>,
        usage: HashMap<String, Usage>,
        reply: Reply,
    },
    /// An admin change: run it and commit its record with what is waiting, durably.
    Change {
        job: Job,
        record: (u64, Vec<u8>),
        usage: Option<(String, Usage)>,
        reply: Reply,
    },
    /// Copy what is waiting now and say whether that worked.
    Store(Reply),
}

/// The store thread's inbox, shared with the writer and the readers.
#[derive(Default)]
pub(super) struct Inbox {
    state: Mutex<InboxState>,
    ready: Condvar,
}

#[derive(Default)]
struct InboxState {
    msgs: Vec<Msg>,
    /// Records in `msgs`.
    records: usize,
    /// A message other than records is waiting.
    urgent: bool,
    /// A reader waits for every acknowledged record to be stored.
    flush: bool,
    /// The writer stopped: store everything durably and stop.
    closed: bool,
}

/// What woke the store thread besides its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Woken {
    pub(super) flush: bool,
    pub(super) closed: bool,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `msg`. Records wake the thread only when they complete [`APPLY_BATCH`], so a
    /// busy writer costs it one wake-up per copy, not one per batch.
    pub(super) fn send(&self, msg: Msg) {
        let mut state = self.lock();
        let wake = match &msg {
            Msg::Records(records, _) => {
                let before = state.records;
                state.records += records.len();
                before < APPLY_BATCH && state.records >= APPLY_BATCH
            }
            _ => {
                state.urgent = true;
                true
            }
        };
        state.msgs.push(msg);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Sends the message `make` builds around a reply channel and waits for the reply.
    pub(super) fn call(&self, make: impl FnOnce(Reply) -> Msg) -> Result<bool, String> {
        let (reply, answer) = sync_channel(1);
        self.send(make(reply));
        answer
            .recv()
            .unwrap_or_else(|_| Err("the audit store thread stopped".to_owned()))
    }

    /// Asks for every acknowledged record to be stored (readers, and retries after a
    /// failed copy).
    pub(super) fn request_flush(&self) {
        self.lock().flush = true;
        self.ready.notify_one();
    }

    /// The writer stopped.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Waits until there is a reason to work and moves the messages into `msgs`.
    pub(super) fn next(&self, msgs: &mut Vec<Msg>) -> Woken {
        let mut state = self.lock();
        while !(state.closed || state.flush || state.urgent || state.records >= APPLY_BATCH) {
            if state.records == 0 {
                state = self
                    .ready
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            let (next, waited) = self
                .ready
                .wait_timeout(state, IDLE)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state = next;
            if waited.timed_out() {
                break;
            }
        }
        msgs.append(&mut state.msgs);
        state.records = 0;
        state.urgent = false;
        Woken {
            flush: std::mem::take(&mut state.flush),
            closed: state.closed,
        }
    }
}

/// The store thread's state: what was handed over but is not in the store yet.
pub(super) struct Copier {
    pub(super) inbox: Arc<Inbox>,
    pub(super) store: Arc<Store>,
    pub(super) progress: Arc<Progress>,
    pub(super) health: Arc<Health>,
    /// Acknowledged records not yet in the store, and their usage.
    pub(super) unstored: Vec<(u64, Vec<u8>)>,
    pub(super) unstored_usage: HashMap<String, Usage>,
    /// The last record in the store, and in it durably.
    pub(super) stored: u64,
    pub(super) durable: u64,
    /// Debug-build fault injection: every copy fails (`audit-commit`), every admin
    /// change's transaction fails (`audit-change`).
    pub(super) fail: bool,
    pub(super) fail_change: bool,
}

impl Copier {
    /// Handles messages until the writer stops, then stores everything durably.
    pub(super) fn run(mut self) {
        let mut msgs = Vec::new();
        loop {
            let woken = self.inbox.next(&mut msgs);
            for msg in msgs.drain(..) {
                self.handle(msg);
            }
            if woken.closed {
                let _ = self.commit(Vec::new(), HashMap::new(), true);
                return;
            }
            if woken.flush || !self.unstored.is_empty() {
                let _ = self.commit(Vec::new(), HashMap::new(), false);
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Records(mut records, usage) => {
                self.unstored.append(&mut records);
                for (k, d) in usage {
                    self.unstored_usage.entry(k).or_default().add(&d);
                }
            }
            Msg::Durable(seq) => {
                if self.durable < seq {
                    let _ = self.commit(Vec::new(), HashMap::new(), true);
                }
            }
            Msg::Direct {
                records,
                usage,
                reply,
            } => {
                let _ = reply.send(self.commit(records, usage, true).map(|()| true));
            }
            Msg::Change {
                job,
                record,
                usage,
                reply,
            } => {
                let _ = reply.send(self.change(job, record, usage));
            }
            Msg::Store(reply) => {
                let _ = reply.send(
                    self.commit(Vec::new(), HashMap::new(), false)
                        .map(|()| true),
                );
            }
        }
    }

    /// Commits what is waiting and then `extra` (records never acknowledged, dropped when
    /// the commit fails), durably or not. A durable commit also makes every earlier one
    /// durable.
    fn commit(
        &mut self,
        extra: Vec<(u64, Vec<u8>)>,
        extra_usage: HashMap<String, Usage>,
        durable: bool,
    ) -> Result<(), String> {
        if self.unstored.is_empty() && extra.is_empty() && (!durable || self.durable == self.stored)
        {
            return Ok(());
        }
        let waiting = self.unstored.len();
        self.unstored.extend(extra);
        let mut usage = self.unstored_usage.clone();
        for (k, d) in &extra_usage {
            usage.entry(k.clone()).or_default().add(d);
        }
        let usage: Vec<(String, Usage)> = usage.into_iter().collect();
        let result = if self.fail {
            Err("store refused (failpoint audit-commit)".to_owned())
        } else {
            self.store
                .append_audit(&self.unstored, &usage, durable)
                .map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => {
                let last = self.unstored.last().map_or(self.stored, |(seq, _)| *seq);
                self.unstored.clear();
                self.unstored_usage.clear();
                self.stored_up_to(last, durable);
                Ok(())
            }
            Err(e) => {
                self.unstored.truncate(waiting);
                self.failed(&e, durable);
                Err(e)
            }
        }
    }

    /// Runs an admin change and commits its record with everything waiting, durably, in
    /// one transaction: Ok(false) when the change refused (nothing is written).
    fn change(
        &mut self,
        job: Job,
        record: (u64, Vec<u8>),
        own: Option<(String, Usage)>,
    ) -> Result<bool, String> {
        let seq = record.0;
        let mut usage = self.unstored_usage.clone();
        if let Some((k, d)) = &own {
            usage.entry(k.clone()).or_default().add(d);
        }
        let usage: Vec<(String, Usage)> = usage.into_iter().collect();
        let fail = self.fail || self.fail_change;
        let unstored = &self.unstored;
        let result = self.store.atomically(|tx| {
            if !job(tx) {
                return Ok(false);
            }
            let mut records = Vec::with_capacity(unstored.len() + 1);
            records.extend_from_slice(unstored);
            records.push(record);
            tx.append_audit(&records, &usage)?;
            if fail {
                return Err(StoreError::Corrupt(
                    "commit refused (failpoint audit-change)".into(),
                ));
            }
            Ok(true)
        });
        match result {
            Ok(false) => Ok(false),
            Ok(true) => {
                self.unstored.clear();
                self.unstored_usage.clear();
                self.stored_up_to(seq, true);
                Ok(true)
            }
            Err(e) => {
                let e = e.to_string();
                self.failed(&e, true);
                Err(e)
            }
        }
    }

    fn stored_up_to(&mut self, seq: u64, durable: bool) {
        self.stored = seq;
        if durable {
            self.durable = seq;
        }
        self.progress.update(|s| {
            s.stored = seq;
            if durable {
                s.durable = seq;
            }
        });
        self.health.store.store(true, Ordering::Release);
    }

    fn failed(&mut self, error: &str, durable: bool) {
        if self.health.store.swap(false, Ordering::AcqRel) {
            tracing::error!(
                error,
                records = self.unstored.len(),
                "storing journaled audit records failed; refusing calls"
            );
        }
        if durable {
            self.progress.update(|s| s.failures += 1);
        }
    }
}

/// Waits until the store holds record `seq`, asking `inbox` to catch up; an error after
/// [`CATCH_UP`].
pub(super) fn wait_stored(inbox: &Inbox, progress: &Progress, seq: u64) -> Result<(), (u64, u64)> {
    let mut state = progress.lock();
    if state.stored >= seq {
        return Ok(());
    }
    drop(state);
    inbox.request_flush();
    let deadline = std::time::Instant::now() + CATCH_UP;
    state = progress.lock();
    while state.stored < seq {
        let now = std::time::Instant::now();
        if now >= deadline {
            return Err((seq, state.stored));
        }
        state = progress
            .changed
            .wait_timeout(state, deadline - now)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
    Ok(())
}
