//! The audit trail's write-ahead journal: where a batch of sealed records becomes durable
//! before its calls are acknowledged, with one write and one data sync.
//!
//! The file (`audit.journal`, 0600, beside the store) has a fixed size and is filled with
//! zeros when it is created, so appending never allocates blocks and a sync flushes data
//! only. Each batch is written at a 4 KiB boundary (a sync never rewrites a page that holds
//! acknowledged frames) as frames of `magic (4) | len (4, LE) | seq (8, LE) | check (16) |
//! record`, where `check` is BLAKE3 over `len | seq | record`. The writer copies journaled
//! records into the store without waiting for a sync, and when the journal is full it
//! commits the store durably and starts again at offset 0.
//!
//! Invariants: frames are read from offset 0 and the journal ends at the first frame that
//! is torn, fails its check, or does not continue the sequence (`seq` one more than the
//! frame before), so frames left over from before a restart at offset 0 (all with smaller
//! sequence numbers) are never taken for new ones. The journal is reset only after a
//! durable store commit that holds every record in it, so recovery (replaying the frames
//! the store lacks) never has a gap to fill.
//!
//! Threat: a crash (process or power) losing records of acknowledged calls, and a torn
//! write being replayed as a record.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size of the journal file. At 4 KiB a batch at least 1,024 batches fit before the store
/// must be committed durably.
pub const CAPACITY: u64 = 4 << 20;
/// Batches start at multiples of this.
const ALIGN: u64 = 4096;
const MAGIC: &[u8; 4] = b"WAJ1";
const HEADER: usize = 32;

/// Records as (sequence number, sealed bytes).
pub type Records = Vec<(u64, Vec<u8>)>;

/// The open journal and where the next batch goes.
pub struct Journal {
    file: File,
    path: PathBuf,
    offset: u64,
    /// The frame bytes of the next batch (reused).
    buf: Vec<u8>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

fn check(len: u32, seq: u64, record: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(record);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

impl Journal {
    /// Opens the journal at `path`, creating it (zero-filled, 0600) if it is missing, and
    /// returns it with the records it holds, in order (the caller skips those its store
    /// already has). The next batch goes at offset 0: call [`Journal::reset`] only after
    /// the returned records are durable elsewhere.
    pub fn open(path: &Path) -> std::io::Result<(Self, Records)> {
        if !path.exists() {
            create_zeroed(path)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let records = frames(&bytes);
        if (bytes.len() as u64) < CAPACITY {
            // Cut short (by hand, or by a full disk at creation): grow it back with zeros
            // past what it holds, so appends never allocate.
            zero_fill(&file, bytes.len() as u64)?;
        }
        Ok((
            Self {
                file,
                path: path.to_owned(),
                offset: 0,
                buf: Vec::new(),
            },
            records,
        ))
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `records` fit as one batch after what is written.
    pub fn fits(&self, records: &[(u64, Vec<u8>)]) -> bool {
        let framed: u64 = records.iter().map(|(_, r)| (HEADER + r.len()) as u64).sum();
        self.offset + framed <= CAPACITY
    }

    /// Starts again at offset 0. Only once the store durably holds every journaled record.
    pub fn reset(&mut self) {
        self.offset = 0;
    }

    /// Writes `records` (sequence number, sealed bytes) as one batch and syncs it. When
    /// this returns Ok the records survive a crash. The batch must fit ([`Journal::fits`]).
    pub fn append(&mut self, records: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
        self.buf.clear();
        for (seq, record) in records {
            let len = u32::try_from(record.len())
                .map_err(|_| std::io::Error::other("audit record larger than 4 GiB"))?;
            self.buf.extend_from_slice(MAGIC);
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(&seq.to_le_bytes());
            self.buf.extend_from_slice(&check(len, *seq, record));
            self.buf.extend_from_slice(record);
        }
        let end = self.offset + self.buf.len() as u64;
        if end > CAPACITY {
            return Err(std::io::Error::other("audit journal batch does not fit"));
        }
        // Zero the rest of the last page: a frame left over from before a reset must not
        // start right after this batch (it would fail the sequence check anyway; zeros
        // make the end of the journal plain to see).
        let padded = end.div_ceil(ALIGN) * ALIGN;
        self.buf
            .resize(self.buf.len() + (padded.min(CAPACITY) - end) as usize, 0);
        self.file.write_all_at(&self.buf, self.offset)?;
        self.file.sync_data()?;
        self.offset = padded;
        Ok(())
    }
}

/// Writes zeros from `from` to [`CAPACITY`] (so the blocks exist before any append) and
/// syncs the file.
fn zero_fill(file: &File, from: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < CAPACITY {
        let n = (CAPACITY - at).min(zeros.len() as u64);
        file.write_all_at(&zeros[..n as usize], at)?;
        at += n;
    }
    file.sync_all()
}

/// Creates `path` filled with [`CAPACITY`] zero bytes, synced with its directory.
fn create_zeroed(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("journal.tmp");
    let file = crate::datadir::private_file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    zero_fill(&file, 0)?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The valid, contiguous run of frames from offset 0 (batches start at 4 KiB boundaries;
/// the zeros after a batch end it).
fn frames(bytes: &[u8]) -> Records {
    let mut out: Records = Vec::new();
    let mut at = 0usize;
    loop {
        if bytes.get(at..at + 4) != Some(MAGIC.as_slice()) {
            // The end of a batch: zeros to the next page, where the next batch starts.
            let next = (at as u64).div_ceil(ALIGN) as usize * ALIGN as usize;
            let padding = bytes.get(at..next.min(bytes.len())).unwrap_or_default();
            if next == at || padding.iter().any(|&b| b != 0) {
                break;
            }
            at = next;
            if bytes.get(at..at + 4) != Some(MAGIC.as_slice()) {
                break;
            }
        }
        let Some(head) = bytes.get(at..at + HEADER) else {
            break;
        };
        let len = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
        let Some(record) = bytes.get(at + HEADER..at + HEADER + len as usize) else {
            break;
        };
        if head[16..32] != check(len, seq, record) {
            break;
        }
        if out.last().is_some_and(|(prev, _)| seq != prev + 1) {
            break;
        }
        out.push((seq, record.to_vec()));
        at += HEADER + len as usize;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, len: usize) -> (u64, Vec<u8>) {
        (seq, vec![b'a' + (seq % 26) as u8; len])
    }

    /// A new journal in a temporary directory, and its path.
    fn fresh() -> (tempfile::TempDir, PathBuf, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let (j, old) = Journal::open(&path).unwrap();
        assert!(old.is_empty());
        (dir, path, j)
    }

    #[test]
    fn batches_come_back_in_order_after_reopening() {
        let (_dir, path, mut j) = fresh();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), CAPACITY);
        let a: Vec<_> = (1..=3).map(|s| rec(s, 700)).collect();
        let b: Vec<_> = (4..=9).map(|s| rec(s, 5000)).collect();
        j.append(&a).unwrap();
        j.append(&b).unwrap();
        drop(j);
        let (_, back) = Journal::open(&path).unwrap();
        assert_eq!(back, [a, b].concat());
    }

    #[test]
    fn frames_left_from_before_a_reset_are_not_replayed() {
        let (_dir, path, mut j) = fresh();
        // Three pages of old frames, then a reset and one new batch in the first page.
        for s in 1..=3 {
            j.append(&[rec(s, 3000)]).unwrap();
        }
        j.reset();
        j.append(&[rec(4, 100)]).unwrap();
        drop(j);
        let (_, back) = Journal::open(&path).unwrap();
        assert_eq!(back, vec![rec(4, 100)]);
    }

    #[test]
    fn a_torn_or_altered_frame_ends_the_journal() {
        let (_dir, path, mut j) = fresh();
        j.append(&[rec(1, 100), rec(2, 100)]).unwrap();
        j.append(&[rec(3, 100)]).unwrap();
        drop(j);
        // Flip a byte of record 2: 1 survives, 2 and everything after it do not.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 100 + HEADER + 10] ^= 1;
        assert_eq!(frames(&bytes), vec![rec(1, 100)]);
        // A frame cut short by a crash (its record past the end of the file).
        let cut = &bytes[..HEADER + 50];
        assert!(frames(cut).is_empty());
    }

    #[test]
    fn a_journal_cut_short_keeps_its_frames_and_grows_back() {
        let (_dir, path, mut j) = fresh();
        j.append(&[rec(1, 100), rec(2, 100)]).unwrap();
        drop(j);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(ALIGN).unwrap();
        drop(file);
        let (_, back) = Journal::open(&path).unwrap();
        assert_eq!(back, vec![rec(1, 100), rec(2, 100)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), CAPACITY);
    }

    #[test]
    fn a_batch_larger_than_the_journal_is_refused() {
        let (_dir, _, mut j) = fresh();
        let big = [rec(1, CAPACITY as usize)];
        assert!(!j.fits(&big));
        assert!(j.append(&big).is_err());
    }
}
