//! The slot through which a request's pending audit record passes from the `/mcp` layer to
//! the stage that finishes it.
//!
//! Invariant: the record is taken at most once; whoever takes it finishes it, and if nobody
//! does, dropping the last handle writes it as an error (see `audit::PendingRecord`).

use crate::audit::PendingRecord;
use std::sync::{Arc, Mutex};

/// The slot through which a request's pending audit record passes from the transport to
/// the stage that finishes it: the JSON-RPC guard (refusals), the MCP handler (`tools/call`
/// and `tools/list`, which it takes over), or, for everything else, the `/mcp` layer once
/// the response is known. Whoever takes it finishes it; if nobody does, dropping the last
/// handle writes it as an error.
#[derive(Clone, Debug)]
pub struct AuditSlot(Arc<Mutex<SlotState>>);

#[derive(Debug)]
struct SlotState {
    record: Option<PendingRecord>,
    /// The MCP handler will take the record (`tools/call`, `tools/list`).
    handler_owned: bool,
}

impl AuditSlot {
    /// A slot holding `record`.
    pub fn new(record: PendingRecord) -> Self {
        Self(Arc::new(Mutex::new(SlotState {
            record: Some(record),
            handler_owned: false,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the record (once).
    pub fn take(&self) -> Option<PendingRecord> {
        self.lock().record.take()
    }

    /// Puts back a record taken but not finished (an admin change that refused), for the
    /// layer to finish from the response.
    pub fn put_back(&self, record: PendingRecord) {
        self.lock().record = Some(record);
    }

    /// Sets fields of the record still in the slot (e.g. the task an admin request votes
    /// on), so whoever finishes it records them.
    pub fn annotate(&self, f: impl FnOnce(&mut crate::audit::AuditRecord)) {
        if let Some(r) = self.lock().record.as_mut() {
            f(r.record());
        }
    }

    /// Names the request (the JSON-RPC method) and whether the MCP handler finishes it.
    pub fn name(&self, request: &str, handler_owned: bool) {
        let mut state = self.lock();
        if let Some(r) = state.record.as_mut() {
            r.record().request = request.to_owned();
        }
        state.handler_owned = handler_owned;
    }

    /// The record, unless the handler will finish it (it is still running on a stream).
    pub fn take_unless_handler_owned(&self, success: bool) -> Option<PendingRecord> {
        let mut state = self.lock();
        if state.handler_owned && success {
            return None;
        }
        state.record.take()
    }
}
