//! Structured logging to the host.
//!
//! Records go to the host's log (`tracing`), attributed to the calling skill. The host
//! truncates oversized messages and drops records past a per-call budget, so logging can
//! never be used to exhaust the host. Never log secrets.

use crate::bindings::warden::skill::log as wit;

/// Severity of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very fine-grained detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the skill handled.
    Warn,
    /// A failure.
    Error,
}

/// Emits a record with key/value fields.
pub fn emit(level: Level, message: &str, fields: &[(&str, &str)]) {
    let level = match level {
        Level::Trace => wit::Level::Trace,
        Level::Debug => wit::Level::Debug,
        Level::Info => wit::Level::Info,
        Level::Warn => wit::Level::Warn,
        Level::Error => wit::Level::Error,
    };
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    wit::emit(level, message, &fields);
}

/// Emits a debug record.
pub fn debug(message: &str) {
    emit(Level::Debug, message, &[]);
}

/// Emits an info record.
pub fn info(message: &str) {
    emit(Level::Info, message, &[]);
}

/// Emits a warning.
pub fn warn(message: &str) {
    emit(Level::Warn, message, &[]);
}

/// Emits an error record.
pub fn error(message: &str) {
    emit(Level::Error, message, &[]);
}
