//! The audit trail's write-ahead journal: where a batch of sealed records becomes durable
//! before its calls are acknowledged, with one write and one data sync.
//!
//! The file (`audit.journal`, 0600, beside the store) has a fixed size and is filled with
//! zeros when it is created, so appending never allocates blocks and a sync flushes data
//! only. It is used as two halves: batches fill one half while the store thread makes the
//! records of the other durable in redb, so the journal never waits for redb on a call's
//! path unless redb falls a whole half behind. Each batch is written at a 4 KiB boundary (a
//! sync never rewrites a page that holds acknowledged frames) as frames of `magic (4) | len
//! (4, LE) | seq (8, LE) | check (16) | record`, where `check` is BLAKE3 over `len | seq |
//! record`.
//!
//! Invariants: a half is read from its start and its run ends at the first frame that is
//! torn, fails its check, or does not continue the sequence (`seq` one more than the frame
//! before), so frames left over from before the half was started again (all with smaller
//! sequence numbers) are never taken for new ones. The writer moves into a half only after
//! a durable store commit holding every record in it, and starts the journal over (offset
//! 0) only when the store durably holds everything journaled, so recovery (replaying the
//! frames the store lacks, from both halves in sequence order) never has a gap to fill.
//!
//! Threat: a crash (process or power) losing records of acknowledged calls, and a torn
//! write being replayed as a record.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size of the journal file. At 4 KiB a batch, 512 batches fit in each half.
pub const CAPACITY: u64 = 4 << 20;
/// Size of each half.
pub const HALF: u64 = CAPACITY / 2;
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
    /// The half being filled (0 or 1).
    half: u64,
    /// Where the next batch goes (inside `half`).
    offset: u64,
    /// The frame bytes of the next batch (reused).
    buf: Vec<u8>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("half", &self.half)
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
    /// returns it with the records it holds, in sequence order (the caller skips those its
    /// store already has). The next batch goes at offset 0: write only after the returned
    /// records are durable elsewhere.
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
        let records = merge(&bytes)?;
        if (bytes.len() as u64) < CAPACITY {
            // Cut short (by hand, or by a full disk at creation): grow it back with zeros
            // past what it holds, so appends never allocate.
            zero_fill(&file, bytes.len() as u64)?;
        }
        Ok((
            Self {
                file,
                path: path.to_owned(),
                half: 0,
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

    /// Whether `records` fit as one batch after what is written in the current half.
    pub fn fits(&self, records: &[(u64, Vec<u8>)]) -> bool {
        self.offset + framed(records) <= self.half_end()
    }

    /// Whether `records` fit as one batch in an empty half.
    pub fn fits_a_half(records: &[(u64, Vec<u8>)]) -> bool {
        framed(records) <= HALF
    }

    /// The half being filled (0 or 1).
    pub fn half(&self) -> usize {
        self.half as usize
    }

    fn half_end(&self) -> u64 {
        (self.half + 1) * HALF
    }

    /// Moves to the start of the other half. Only once the store durably holds every
    /// record in it.
    pub fn switch(&mut self) {
        self.half ^= 1;
        self.offset = self.half * HALF;
    }

    /// Starts again at offset 0. Only once the store durably holds every journaled record.
    pub fn restart(&mut self) {
        self.half = 0;
        self.offset = 0;
    }

    /// Writes `records` (sequence number, sealed bytes) as one batch and syncs it. When
    /// this returns Ok the records survive a crash. The batch must fit ([`Journal::fits`]);
    /// when it fails, the next batch is written at the same place.
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
        if end > self.half_end() {
            return Err(std::io::Error::other("audit journal batch does not fit"));
        }
        // Zero the rest of the last page: a frame left over from before a restart must not
        // start right after this batch (it would fail the sequence check anyway; zeros
        // make the end of the journal plain to see).
        let padded = end.div_ceil(ALIGN) * ALIGN;
        self.buf.resize(
            self.buf.len() + (padded.min(self.half_end()) - end) as usize,
            0,
        );
        self.file.write_all_at(&self.buf, self.offset)?;
        self.file.sync_data()?;
        self.offset = padded;
        Ok(())
    }
}

/// Bytes of `records` as frames.
fn framed(records: &[(u64, Vec<u8>)]) -> u64 {
    records.iter().map(|(_, r)| (HEADER + r.len()) as u64).sum()
}

/// The records of both halves (each read from its start; the run from offset 0 may go on
/// into the second half), by sequence number. The same number twice with different bytes
/// is corruption.
fn merge(bytes: &[u8]) -> std::io::Result<Records> {
    let mut all = std::collections::BTreeMap::new();
    let second = bytes.get(HALF as usize..).unwrap_or_default();
    for (seq, record) in frames(bytes).into_iter().chain(frames(second)) {
        match all.get(&seq) {
            Some(seen) if *seen != record => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("two different records numbered {seq}"),
                ));
            }
            _ => {
                all.insert(seq, record);
            }
        }
    }
    Ok(all.into_iter().collect())
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
    fn frames_left_from_before_a_restart_are_not_replayed() {
        let (_dir, path, mut j) = fresh();
        // Three pages of old frames, then a restart and one new batch in the first page.
        for s in 1..=3 {
            j.append(&[rec(s, 3000)]).unwrap();
        }
        j.restart();
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
    fn a_batch_larger_than_a_half_is_refused() {
        let (_dir, _, mut j) = fresh();
        let big = [rec(1, HALF as usize)];
        assert!(!j.fits(&big));
        assert!(!Journal::fits_a_half(&big));
        assert!(j.append(&big).is_err());
        // Nor does a batch spill over into the other half.
        let (_dir, _, mut j) = fresh();
        let half_page = [rec(1, (HALF / 2) as usize)];
        assert!(j.fits(&half_page));
        j.append(&half_page).unwrap();
        assert!(!j.fits(&[rec(2, (HALF / 2) as usize)]));
        assert!(j.append(&[rec(2, (HALF / 2) as usize)]).is_err());
    }

    #[test]
    fn both_halves_are_replayed_in_sequence_order() {
        let (_dir, path, mut j) = fresh();
        // Half 0: 1-4, half 1: 5-8, then half 0 again from its start: 9-10 over 1-2; the
        // frames 3-4 left after them are old, and so is nothing else.
        j.append(&[rec(1, 900), rec(2, 900)]).unwrap();
        j.append(&[rec(3, 900), rec(4, 900)]).unwrap();
        j.switch();
        assert_eq!(j.half(), 1);
        j.append(&[rec(5, 100), rec(6, 100)]).unwrap();
        j.append(&[rec(7, 100), rec(8, 100)]).unwrap();
        drop(j);
        let (mut j, back) = Journal::open(&path).unwrap();
        assert_eq!(
            back,
            (1..=8)
                .map(|s| rec(s, if s < 5 { 900 } else { 100 }))
                .collect::<Vec<_>>()
        );
        // The reopened journal writes from offset 0, after the caller stored 1-8.
        j.append(&[rec(9, 100), rec(10, 100)]).unwrap();
        drop(j);
        let (_, back) = Journal::open(&path).unwrap();
        let seqs: Vec<u64> = back.iter().map(|(s, _)| *s).collect();
        // 9-10 from half 0 (its run stops at the old frame 3), 5-8 from half 1.
        assert_eq!(seqs, [5, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn one_number_with_two_different_records_is_corruption() {
        let (_dir, path, mut j) = fresh();
        j.append(&[rec(1, 100)]).unwrap();
        j.switch();
        j.append(&[(1, b"something else".to_vec())]).unwrap();
        drop(j);
        let err = Journal::open(&path).err().unwrap();
        assert!(
            err.to_string().contains("two different records numbered 1"),
            "{err}"
        );
    }
}
