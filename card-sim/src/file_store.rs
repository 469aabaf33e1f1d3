//! The simulator's persistent card memory: a [`Store`] kept in a directory on disk.
//!
//! A simulated card must keep its registers across simulator restarts, `kill -9` at any
//! instant and power loss, with the same all-or-nothing commits as
//! [`MemStore`](openpsd_core::store::MemStore): after a crash the card re-opens holding
//! either every write of a commit or none of them.
//!
//! The directory holds:
//!
//! * `state.log`: an 8-byte magic `OPSDSTOR`, a format version (`u32` BE) and the sequence
//!   number of the first frame (`u64` BE), then one frame per commit:
//!   `[len u32 BE][seq u64 BE][payload][first 16 bytes of sha256(len ‖ seq ‖ payload)]`,
//!   where the payload is the commit's writes, each `[id u16 BE][flag u8: 0 delete, 1
//!   set][value len u32 BE][value]`;
//! * `lock`: held with an exclusive advisory lock while a simulator serves the card;
//! * `state.log.tmp`, briefly, while the log is being compacted.
//!
//! Why this design: appending a frame with one write and then `fdatasync` makes the append
//! the commit point, so there is no journal to replay and no record is ever overwritten in
//! place. A crash can only leave a torn *last* frame, which its checksum exposes; re-opening
//! cuts it off, which is exactly "none of the writes". Damage anywhere else (a bad frame
//! with valid frames after it, a gap in the sequence numbers, a frame whose checksum holds
//! but whose content does not parse) cannot come from a crash, so it is reported as
//! [`StoreError::Corrupt`] rather than repaired: silently dropping committed postage
//! accounting would be worse than refusing to start.
//!
//! So that the log does not grow for ever, it is compacted ("shadowed"): the whole current
//! state is written as a single frame into a fresh log under a temporary name, made durable
//! and renamed over the old one. `rename` is atomic, so a crash leaves either the old log
//! or the new one, each complete; a leftover temporary file is never authoritative and is
//! deleted on open.
//!
//! One limit is inherent to the design: damage to the last frame alone looks exactly like a
//! torn append, so that (last) commit is discarded rather than reported.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};

use openpsd_core::crypto::sha256;
use openpsd_core::store::{RecordId, Store, StoreError, Write};

/// Log size above which a commit triggers compaction, unless
/// [`FileStore::with_compaction_threshold`] says otherwise.
pub const DEFAULT_COMPACTION_THRESHOLD: u64 = 64 * 1024;

const LOG: &str = "state.log";
const LOG_TMP: &str = "state.log.tmp";
const LOCK: &str = "lock";

const MAGIC: &[u8; 8] = b"OPSDSTOR";
const VERSION: u32 = 1;
/// Magic, version and the first frame's sequence number.
const HEADER_LEN: usize = 8 + 4 + 8;
/// `len` and `seq`.
const FRAME_HEAD_LEN: usize = 4 + 8;
const TAG_LEN: usize = 16;
const FRAME_OVERHEAD: usize = FRAME_HEAD_LEN + TAG_LEN;
/// `id`, `flag` and `value len` of one write.
const WRITE_HEAD_LEN: usize = 2 + 1 + 4;

/// A card's persistent memory in a directory: an append-only, checksummed log of commits,
/// compacted from time to time, with the whole state kept in RAM for reads.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    /// `state.log`, opened for appending.
    log: File,
    /// Bytes of `log` that hold the header and complete frames.
    log_len: u64,
    next_seq: u64,
    records: BTreeMap<RecordId, Vec<u8>>,
    compaction_threshold: u64,
    /// Set once a write failed in a way that leaves the file's content uncertain; further
    /// commits are refused until the card is re-opened and the log re-read.
    failed: bool,
    /// Held (locked) for as long as the store lives; dropping it releases the lock.
    _lock: File,
}

impl FileStore {
    /// Creates a new, empty card store in `dir` (made if needed).
    ///
    /// Refuses if `dir` already holds a store: creating must never wipe a card.
    pub fn create(dir: &Path) -> Result<Self, StoreError> {
        let existed = dir
            .try_exists()
            .map_err(|e| io_error("cannot look for", dir, &e))?;
        fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, &e))?;
        if !existed {
            // The new directory's own entry must survive power loss too.
            if let Some(parent) = dir.parent() {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                sync_dir(parent)?;
            }
        }
        // Lock before looking for an existing log, so two concurrent creates cannot both
        // find the directory empty.
        let lock = lock(dir)?;
        let log_path = dir.join(LOG);
        if log_path
            .try_exists()
            .map_err(|e| io_error("cannot look for", &log_path, &e))?
        {
            return Err(StoreError::Io(format!(
                "a card store already exists in {}",
                dir.display()
            )));
        }
        let first_seq = 1;
        let contents = header(first_seq);
        let log = replace_log(dir, &contents).map_err(|failed| failed.error)?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
            log,
            log_len: contents.len() as u64,
            next_seq: first_seq,
            records: BTreeMap::new(),
            compaction_threshold: DEFAULT_COMPACTION_THRESHOLD,
            failed: false,
            _lock: lock,
        })
    }

    /// Opens the card store in `dir`, discarding a commit that a crash left half-written.
    ///
    /// A missing store is an error, never a fresh empty card: a mistyped path must not
    /// turn into a blank PSD.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let no_state = || StoreError::Io(format!("no card state in {}", dir.display()));
        let log_path = dir.join(LOG);
        match log_path.try_exists() {
            Ok(true) => {}
            Ok(false) => return Err(no_state()),
            Err(e) => return Err(io_error("cannot look for", &log_path, &e)),
        }
        let lock = lock(dir)?;
        // A temporary log is only ever complete *and* authoritative after its rename; one
        // still lying around is from a compaction that crashed before that point.
        let tmp = dir.join(LOG_TMP);
        match fs::remove_file(&tmp) {
            Ok(()) => {
                record(|| IoOp::Remove(LOG_TMP));
                tracing::warn!(
                    "removed {} left by an interrupted compaction",
                    tmp.display()
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("cannot remove", &tmp, &e)),
        }
        let mut log = match OpenOptions::new().read(true).append(true).open(&log_path) {
            Ok(log) => log,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(no_state()),
            Err(e) => return Err(io_error("cannot open", &log_path, &e)),
        };
        // The log may hold a card's records in clear (an unsealed store): wiped when dropped.
        let mut buf = zeroize::Zeroizing::new(Vec::new());
        log.read_to_end(&mut buf)
            .map_err(|e| io_error("cannot read", &log_path, &e))?;
        let replayed = replay(&buf)?;
        if replayed.good_len < buf.len() {
            tracing::warn!(
                "discarding {} bytes of an interrupted commit at the end of {}",
                buf.len() - replayed.good_len,
                log_path.display()
            );
            // Cut the torn frame off durably before anything is appended behind it; left
            // in place it would sit in front of later frames and read as corruption.
            log.set_len(replayed.good_len as u64)
                .map(|()| record(|| IoOp::SetLen(LOG, replayed.good_len as u64)))
                .and_then(|()| log.sync_all())
                .map(|()| record(|| IoOp::Sync(LOG)))
                .map_err(|e| io_error("cannot truncate", &log_path, &e))?;
        }
        Ok(FileStore {
            dir: dir.to_path_buf(),
            log,
            log_len: replayed.good_len as u64,
            next_seq: replayed.next_seq,
            records: replayed.records,
            compaction_threshold: DEFAULT_COMPACTION_THRESHOLD,
            failed: false,
            _lock: lock,
        })
    }

    /// Compacts the log once it grows beyond `bytes` (and beyond twice the size of the
    /// state itself, so a large state is not rewritten on every commit).
    pub fn with_compaction_threshold(mut self, bytes: u64) -> Self {
        self.compaction_threshold = bytes;
        self
    }

    /// Whether a write failed and the store refuses commits until it is re-opened.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// The directory the card's state is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG)
    }

    /// The size of the log that compaction would write now.
    fn snapshot_len(&self) -> u64 {
        let records: u64 = self
            .records
            .values()
            .map(|v| (WRITE_HEAD_LEN + v.len()) as u64)
            .sum();
        (HEADER_LEN + FRAME_OVERHEAD) as u64 + records
    }

    fn should_compact(&self) -> bool {
        self.log_len > self.compaction_threshold
            && self.log_len > self.snapshot_len().saturating_mul(2)
    }

    /// Rewrites the log as one snapshot frame. Failing is not fatal as long as the old log
    /// is still the one in place: it holds every commit, and compaction is retried later.
    fn compact(&mut self) {
        let seq = self.next_seq;
        let Some(after) = seq.checked_add(1) else {
            return;
        };
        let snapshot = encode_writes(self.records.iter().map(|(id, v)| (*id, Some(v.as_slice()))))
            .and_then(|payload| frame(seq, &payload));
        let contents = match snapshot {
            Ok(frame) => [header(seq), frame].concat(),
            Err(e) => {
                tracing::warn!("cannot compact {}: {e}", self.log_path().display());
                return;
            }
        };
        match replace_log(&self.dir, &contents) {
            Ok(log) => {
                self.log = log;
                self.log_len = contents.len() as u64;
                self.next_seq = after;
            }
            Err(ReplaceFailed {
                error,
                renamed: false,
            }) => {
                tracing::warn!("compaction failed, keeping the old log: {error}");
            }
            Err(ReplaceFailed {
                error,
                renamed: true,
            }) => {
                // The new log is in place but its name may not survive power loss. Appending
                // to it could lose commits if the old log comes back; appending to the old,
                // now unlinked, file would lose them on re-open. Neither is acceptable.
                tracing::error!("compaction could not be made durable: {error}");
                self.failed = true;
            }
        }
    }

    /// Undoes a failed append as far as possible and stops further commits: after a failed
    /// `fsync` the kernel may have dropped the dirty pages, so what the file holds is no
    /// longer known. Re-opening reads it back and finds out.
    fn abandon_append(&mut self) {
        let undone = self
            .log
            .set_len(self.log_len)
            .map(|()| record(|| IoOp::SetLen(LOG, self.log_len)))
            .and_then(|()| self.log.sync_all())
            .map(|()| record(|| IoOp::Sync(LOG)));
        if let Err(e) = undone {
            tracing::error!(
                "cannot undo a failed append to {}: {e}",
                self.log_path().display()
            );
        }
        self.failed = true;
    }
}

impl Store for FileStore {
    fn read(&self, id: RecordId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.records.get(&id).cloned())
    }

    fn ids(&self) -> Result<Vec<RecordId>, StoreError> {
        Ok(self.records.keys().copied().collect())
    }

    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        if self.failed {
            return Err(StoreError::Io(format!(
                "an earlier write to {} failed; re-open the card",
                self.log_path().display()
            )));
        }
        let payload = encode_writes(writes.iter().map(|w| (w.id, w.value.as_deref())))?;
        let frame = frame(self.next_seq, &payload)?;
        let next_seq = self
            .next_seq
            .checked_add(1)
            .ok_or_else(|| StoreError::Io("commit sequence number exhausted".into()))?;
        // One write of the whole frame, then fdatasync: the commit point. Only after it
        // does RAM change, so a failed commit leaves the card as it was.
        if let Err(e) = self
            .log
            .write_all(&frame)
            .map(|()| record(|| IoOp::Append(LOG, frame.clone())))
            .and_then(|()| self.log.sync_data())
            .map(|()| record(|| IoOp::Sync(LOG)))
        {
            self.abandon_append();
            return Err(io_error("cannot commit to", &self.log_path(), &e));
        }
        self.log_len += frame.len() as u64;
        self.next_seq = next_seq;
        for w in writes {
            let replaced = match &w.value {
                Some(v) => self.records.insert(w.id, v.clone()),
                None => self.records.remove(&w.id),
            };
            // A value replaced may be a secret in clear (an unsealed store's keys).
            if let Some(mut old) = replaced {
                zeroize::Zeroize::zeroize(&mut old);
            }
        }
        // The commit is durable whatever compaction does, so its failure is not the
        // commit's failure.
        if self.should_compact() {
            self.compact();
        }
        Ok(())
    }

    /// Compacts now, whatever the log's size: afterwards the file holds the current records
    /// only, not the earlier frames (a revoked key's scalar among them). If the rewrite
    /// fails the old log stays, and with it the old frames, until a later compaction.
    fn forget_history(&mut self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Io(format!(
                "an earlier write to {} failed; re-open the card",
                self.log_path().display()
            )));
        }
        self.compact();
        if self.failed || self.log_len != self.snapshot_len() {
            return Err(StoreError::Io(format!(
                "cannot rewrite {} without its earlier frames",
                self.log_path().display()
            )));
        }
        Ok(())
    }
}

fn io_error(what: &str, path: &Path, e: &io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot sync directory", dir, &e))
}

/// Takes the card's exclusive lock, so two simulators never serve (and write) one card.
fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error("cannot open", &path, &e))?;
    // A lock that was just released can look held for an instant: a process that forked
    // holds a copy of the descriptor until its child execs, and a simulator that was just
    // killed until the kernel closes its files. A short grace tells those from a card that
    // is really being served.
    for _ in 0..LOCK_GRACE_TRIES {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) => std::thread::sleep(LOCK_GRACE_STEP),
            Err(TryLockError::Error(e)) => return Err(io_error("cannot lock", &path, &e)),
        }
    }
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Io(format!(
            "card state in use by another process: {}",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(io_error("cannot lock", &path, &e)),
    }
}

/// How long [`lock`] waits for a lock that is only briefly held: 25 × 20 ms.
const LOCK_GRACE_TRIES: u32 = 25;
const LOCK_GRACE_STEP: std::time::Duration = std::time::Duration::from_millis(20);

fn header(first_seq: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_be_bytes());
    h.extend_from_slice(&first_seq.to_be_bytes());
    h
}

fn tag(signed: &[u8]) -> [u8; TAG_LEN] {
    let digest = sha256(signed);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&digest[..TAG_LEN]);
    tag
}

fn frame(seq: u64, payload: &[u8]) -> Result<Vec<u8>, StoreError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| StoreError::Io("commit too large for one log frame".into()))?;
    let mut f = Vec::with_capacity(FRAME_OVERHEAD + payload.len());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(payload);
    let tag = tag(&f);
    f.extend_from_slice(&tag);
    Ok(f)
}

fn encode_writes<'a>(
    writes: impl Iterator<Item = (RecordId, Option<&'a [u8]>)>,
) -> Result<Vec<u8>, StoreError> {
    let mut payload = Vec::new();
    for (id, value) in writes {
        let (flag, bytes) = match value {
            Some(v) => (1u8, v),
            None => (0u8, &[][..]),
        };
        let len = u32::try_from(bytes.len())
            .map_err(|_| StoreError::Io(format!("record {id:#06x} too large")))?;
        payload.extend_from_slice(&id.to_be_bytes());
        payload.push(flag);
        payload.extend_from_slice(&len.to_be_bytes());
        payload.extend_from_slice(bytes);
    }
    Ok(payload)
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The frame starting at `at`, if it is complete, its checksum holds and its sequence
/// number passes `seq_ok` (checked first, so scanning for frames need not hash at every
/// offset). Returns its sequence number, payload and end offset.
fn parse_frame(buf: &[u8], at: usize, seq_ok: impl Fn(u64) -> bool) -> Option<(u64, &[u8], usize)> {
    let len = usize::try_from(be_u32(buf, at)?).ok()?;
    let seq = be_u64(buf, at.checked_add(4)?)?;
    if !seq_ok(seq) {
        return None;
    }
    let signed_end = at.checked_add(FRAME_HEAD_LEN)?.checked_add(len)?;
    let end = signed_end.checked_add(TAG_LEN)?;
    let signed = buf.get(at..signed_end)?;
    let stored = buf.get(signed_end..end)?;
    (tag(signed) == stored).then_some((seq, &signed[FRAME_HEAD_LEN..], end))
}

type Decoded<'a> = Vec<(RecordId, Option<&'a [u8]>)>;

fn decode_writes(payload: &[u8]) -> Result<Decoded<'_>, StoreError> {
    let mut writes = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let Some((&[id0, id1, flag, l0, l1, l2, l3], tail)) =
            rest.split_first_chunk::<WRITE_HEAD_LEN>()
        else {
            return Err(StoreError::Corrupt("truncated write in a commit"));
        };
        let len = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3]))
            .map_err(|_| StoreError::Corrupt("record length out of range"))?;
        let (value, tail) = tail
            .split_at_checked(len)
            .ok_or(StoreError::Corrupt("truncated record value in a commit"))?;
        let value = match (flag, len) {
            (0, 0) => None,
            (1, _) => Some(value),
            _ => return Err(StoreError::Corrupt("bad write flag in a commit")),
        };
        writes.push((u16::from_be_bytes([id0, id1]), value));
        rest = tail;
    }
    Ok(writes)
}

struct Replayed {
    records: BTreeMap<RecordId, Vec<u8>>,
    next_seq: u64,
    /// Length of the header plus every complete frame; anything beyond is a torn append.
    good_len: usize,
}

fn replay(buf: &[u8]) -> Result<Replayed, StoreError> {
    // The header is written once, by rename, so it is never torn: short means damaged.
    if buf.len() < HEADER_LEN {
        return Err(StoreError::Corrupt("log shorter than its header"));
    }
    if !buf.starts_with(MAGIC) {
        return Err(StoreError::Corrupt("not an openpsd card store (bad magic)"));
    }
    if be_u32(buf, MAGIC.len()) != Some(VERSION) {
        return Err(StoreError::Corrupt("unsupported card store format version"));
    }
    let mut expected =
        be_u64(buf, MAGIC.len() + 4).ok_or(StoreError::Corrupt("log shorter than its header"))?;
    let mut records = BTreeMap::new();
    let mut at = HEADER_LEN;
    while at < buf.len() {
        let Some((seq, payload, end)) = parse_frame(buf, at, |_| true) else {
            if later_frame_follows(buf, at, expected) {
                return Err(StoreError::Corrupt(
                    "damaged commit followed by later commits",
                ));
            }
            break;
        };
        if seq != expected {
            return Err(StoreError::Corrupt("gap in the commit sequence"));
        }
        for (id, value) in decode_writes(payload)? {
            match value {
                Some(v) => records.insert(id, v.to_vec()),
                None => records.remove(&id),
            };
        }
        expected = expected
            .checked_add(1)
            .ok_or(StoreError::Corrupt("commit sequence number overflow"))?;
        at = end;
    }
    Ok(Replayed {
        records,
        next_seq: expected,
        good_len: at,
    })
}

/// Whether a valid frame starts anywhere after the bad one at `bad`. A torn append is
/// always the last thing in the file, so if one does, the bad frame was damaged after it
/// was committed. The damaged frame's length may be wrong too, so every offset is tried;
/// only sequence numbers that could follow `expected` within the remaining bytes are
/// hashed.
///
/// Offsets inside the bad frame's own writes (heads and values, as far as they decode
/// within its length field) are not tried: a torn append whose values hold the image of a
/// frame (a card stores bytes a host sent it, and the tag is an unkeyed hash a host can
/// compute), even one starting in a write head and running on into the next value, is
/// still a torn append, not damage (found by the `state_file_log` fuzz target and a
/// review). A damaged length field could then make the tag's bytes read as one more write
/// that hides the next frame; that case is caught by [`damaged_length_then_frame`].
fn later_frame_follows(buf: &[u8], bad: usize, expected: u64) -> bool {
    let remaining = (buf.len() - bad) as u64;
    let max_seq = expected.saturating_add(remaining / FRAME_OVERHEAD as u64 + 1);
    let plausible = |seq: u64| (expected..=max_seq).contains(&seq);
    let chain = write_chain(buf, bad);
    (chain.covered.end.max(bad + 1)..buf.len()).any(|at| parse_frame(buf, at, plausible).is_some())
        || damaged_length_then_frame(buf, bad, &chain.ends, plausible)
}

/// Whether the frame at `bad` is a whole committed frame whose length field alone was
/// damaged (its tag holds for the length that ends it at one of its write boundaries),
/// with a valid frame right after it.
fn damaged_length_then_frame(
    buf: &[u8],
    bad: usize,
    ends: &[usize],
    plausible: impl Fn(u64) -> bool + Copy,
) -> bool {
    ends.iter().any(|&end| {
        let Some(len) = end
            .checked_sub(bad + FRAME_HEAD_LEN)
            .and_then(|n| u32::try_from(n).ok())
        else {
            return false;
        };
        let (Some(rest), Some(stored)) = (
            buf.get(bad + 4..end),
            buf.get(end..end.saturating_add(TAG_LEN)),
        ) else {
            return false;
        };
        // The later frame first: it is cheap to refuse (its sequence number), and a zero
        // tail has a write boundary every 7 bytes.
        if parse_frame(buf, end + TAG_LEN, plausible).is_none() {
            return false;
        }
        let mut signed = len.to_be_bytes().to_vec();
        signed.extend_from_slice(rest);
        tag(&signed) == stored
    })
}

/// The writes of the frame at `at`, as far as their heads decode.
struct WriteChain {
    /// The bytes the frame's writes cover (from the frame's start to the end of its last
    /// write that decodes, or of a value the file's end cuts off), within the frame's own
    /// length (a damaged write length then hides no later frame) and the file.
    covered: core::ops::Range<usize>,
    /// The payload's start and where each whole write ends, up to the end of the file
    /// whatever the frame's length field says: the places the payload may really end.
    ends: Vec<usize>,
}

fn write_chain(buf: &[u8], at: usize) -> WriteChain {
    let payload = at + FRAME_HEAD_LEN;
    let frame_end = be_u32(buf, at)
        .and_then(|len| usize::try_from(len).ok())
        .and_then(|len| payload.checked_add(len))
        .map_or(buf.len(), |end| end.min(buf.len()));
    // A frame without writes ends where its payload starts.
    let mut ends = vec![payload];
    let mut reach = payload.min(frame_end);
    let mut p = payload;
    while let Some(&[_, _, flag, l0, l1, l2, l3]) = buf
        .get(p..)
        .and_then(|rest| rest.first_chunk::<WRITE_HEAD_LEN>())
    {
        let Ok(len) = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])) else {
            break;
        };
        let start = p + WRITE_HEAD_LEN;
        let Some(end) = start.checked_add(len).filter(|&e| e <= buf.len()) else {
            // A value cut off by the end of the file: the tear itself.
            if flag == 1 && p < frame_end {
                reach = frame_end;
            }
            break;
        };
        match (flag, len) {
            (0, 0) | (1, _) => {}
            _ => break,
        }
        if p < frame_end {
            reach = end.min(frame_end);
        }
        ends.push(end);
        p = end;
    }
    WriteChain {
        covered: at..reach,
        ends,
    }
}

/// One commit's writes as a log frame carries them: `(id, Some(value))` sets a record,
/// `(id, None)` deletes it.
pub type LogCommit = Vec<(RecordId, Option<Vec<u8>>)>;

/// The bytes of a `state.log` whose first frame is `first_seq` and which holds `commits`,
/// exactly as [`FileStore`] appends them (its header, then one frame per commit). For
/// tests and fuzzing of [`read_log`].
pub fn write_log(first_seq: u64, commits: &[LogCommit]) -> Result<Vec<u8>, StoreError> {
    let mut out = header(first_seq);
    let mut seq = first_seq;
    for c in commits {
        let payload = encode_writes(c.iter().map(|(id, v)| (*id, v.as_deref())))?;
        out.extend_from_slice(&frame(seq, &payload)?);
        seq = seq
            .checked_add(1)
            .ok_or(StoreError::Corrupt("commit sequence number overflow"))?;
    }
    Ok(out)
}

/// What [`FileStore::open`] makes of a `state.log`'s bytes: the records, and the length
/// of the header plus every complete frame (anything beyond is a torn append, which open
/// cuts off). Damage a crash cannot cause is [`StoreError::Corrupt`].
pub fn read_log(bytes: &[u8]) -> Result<(BTreeMap<RecordId, Vec<u8>>, usize), StoreError> {
    let r = replay(bytes)?;
    Ok((r.records, r.good_len))
}

/// Why [`replace_log`] failed, and whether `state.log` had already been replaced.
struct ReplaceFailed {
    error: StoreError,
    renamed: bool,
}

/// Atomically makes `contents` the whole of `state.log`: written under a temporary name,
/// made durable, renamed over the log, then the directory made durable so the rename is.
/// Returns the new log, open for appending.
fn replace_log(dir: &Path, contents: &[u8]) -> Result<File, ReplaceFailed> {
    let tmp = dir.join(LOG_TMP);
    let log = dir.join(LOG);
    let before_rename = |error| ReplaceFailed {
        error,
        renamed: false,
    };
    match fs::remove_file(&tmp) {
        Ok(()) => record(|| IoOp::Remove(LOG_TMP)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(before_rename(io_error("cannot remove", &tmp, &e))),
    }
    let written = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file| {
            record(|| IoOp::Create(LOG_TMP));
            file.write_all(contents)?;
            record(|| IoOp::Append(LOG_TMP, contents.to_vec()));
            file.sync_all()?;
            record(|| IoOp::Sync(LOG_TMP));
            Ok(file)
        });
    let file = match written {
        Ok(file) => file,
        Err(e) => {
            // Best effort: a leftover is harmless (removed on open), only untidy.
            let _ = fs::remove_file(&tmp);
            return Err(before_rename(io_error("cannot write", &tmp, &e)));
        }
    };
    if let Err(e) = fs::rename(&tmp, &log) {
        let _ = fs::remove_file(&tmp);
        return Err(before_rename(io_error("cannot rename over", &log, &e)));
    }
    record(|| IoOp::Rename(LOG_TMP, LOG));
    // The handle follows the inode, so it is now the open `state.log`.
    sync_dir(dir).map_err(|error| ReplaceFailed {
        error,
        renamed: true,
    })?;
    record(|| IoOp::SyncDir);
    Ok(file)
}

/// One change the store made to its directory, as the power-loss tests replay them
/// (`tests::power`): files by name within the card's directory.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Debug)]
enum IoOp {
    /// A new, empty file.
    Create(&'static str),
    /// Bytes appended (the log is opened for appending only).
    Append(&'static str, Vec<u8>),
    SetLen(&'static str, u64),
    /// `fsync`/`fdatasync` of the file.
    Sync(&'static str),
    Rename(&'static str, &'static str),
    Remove(&'static str),
    /// `fsync` of the directory.
    SyncDir,
}

#[cfg(test)]
thread_local! {
    /// The changes made on this thread since a test started recording.
    static TRACE: std::cell::RefCell<Option<Vec<IoOp>>> = const { std::cell::RefCell::new(None) };
}

/// Records a change that succeeded, in a test that asked for it; nothing otherwise.
#[cfg(test)]
fn record(op: impl FnOnce() -> IoOp) {
    TRACE.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            v.push(op());
        }
    });
}

#[cfg(not(test))]
#[inline(always)]
fn record(_: impl FnOnce() -> IoOp) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: RecordId, v: &[u8]) -> Write {
        Write {
            id,
            value: Some(v.to_vec()),
        }
    }

    fn del(id: RecordId) -> Write {
        Write { id, value: None }
    }

    fn state(s: &FileStore) -> Vec<(RecordId, Vec<u8>)> {
        s.ids()
            .unwrap()
            .into_iter()
            .map(|id| (id, s.read(id).unwrap().unwrap()))
            .collect()
    }

    fn card_dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("card");
        (tmp, dir)
    }

    fn assert_corrupt(dir: &Path, context: &str) {
        match FileStore::open(dir) {
            Err(StoreError::Corrupt(_)) => {}
            other => panic!("{context}: expected Corrupt, got {other:?}"),
        }
    }

    fn assert_io_containing(result: Result<FileStore, StoreError>, needle: &str) {
        match result {
            Err(StoreError::Io(msg)) => assert!(msg.contains(needle), "{msg:?} lacks {needle:?}"),
            other => panic!("expected Io({needle:?}), got {other:?}"),
        }
    }

    #[test]
    fn commit_then_reopen_round_trips() {
        let (_tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir).unwrap();
        assert_eq!(s.ids().unwrap(), Vec::<RecordId>::new());
        s.commit(&[set(0x0101, b"one"), set(0x0102, b"two"), set(0x0103, b"")])
            .unwrap();
        s.commit(&[set(0x0101, b"uno"), del(0x0102), del(0x0999)])
            .unwrap();
        let expected = vec![(0x0101, b"uno".to_vec()), (0x0103, Vec::new())];
        assert_eq!(state(&s), expected);
        drop(s);

        let mut s = FileStore::open(&dir).unwrap();
        assert_eq!(state(&s), expected);
        assert_eq!(s.read(0x0102).unwrap(), None);
        assert_eq!(s.ids().unwrap(), vec![0x0101, 0x0103]);
        s.commit(&[del(0x0101)]).unwrap();
        drop(s);
        let s = FileStore::open(&dir).unwrap();
        assert_eq!(s.ids().unwrap(), vec![0x0103]);
    }

    #[test]
    fn empty_commit_writes_nothing() {
        let (_tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir).unwrap();
        let len = fs::metadata(dir.join(LOG)).unwrap().len();
        s.commit(&[]).unwrap();
        assert_eq!(fs::metadata(dir.join(LOG)).unwrap().len(), len);
        assert_eq!(s.log_len, len);
    }

    #[test]
    fn write_log_is_what_the_store_appends_and_read_log_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStore::create(dir.path()).unwrap();
        s.commit(&[
            Write {
                id: 1,
                value: Some(b"one".to_vec()),
            },
            Write {
                id: 2,
                value: Some(Vec::new()),
            },
        ])
        .unwrap();
        s.commit(&[Write { id: 1, value: None }]).unwrap();
        let bytes = fs::read(dir.path().join(LOG)).unwrap();
        let want = write_log(
            1,
            &[
                vec![(1, Some(b"one".to_vec())), (2, Some(Vec::new()))],
                vec![(1, None)],
            ],
        )
        .unwrap();
        assert_eq!(bytes, want);
        let (records, good) = read_log(&bytes).unwrap();
        assert_eq!(good, bytes.len());
        assert_eq!(
            records.into_iter().collect::<Vec<_>>(),
            vec![(2, Vec::new())]
        );
    }

    #[test]
    fn open_without_a_store_is_an_error_not_an_empty_card() {
        let (_tmp, dir) = card_dir();
        assert_io_containing(FileStore::open(&dir), "no card state in");
        fs::create_dir_all(&dir).unwrap();
        assert_io_containing(FileStore::open(&dir), "no card state in");
        // Failing to open must not have created anything a later open would accept.
        assert_io_containing(FileStore::open(&dir), "no card state in");
    }

    #[test]
    fn create_refuses_an_existing_store() {
        let (_tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir).unwrap();
        s.commit(&[set(1, b"keep me")]).unwrap();
        drop(s);
        assert_io_containing(FileStore::create(&dir), "already exists");
        let s = FileStore::open(&dir).unwrap();
        assert_eq!(s.read(1).unwrap(), Some(b"keep me".to_vec()));
    }

    #[test]
    fn bad_header_is_corrupt() {
        let (_tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir).unwrap();
        s.commit(&[set(1, b"x")]).unwrap();
        drop(s);
        let good = fs::read(dir.join(LOG)).unwrap();

        let mut bad_magic = good.clone();
        bad_magic[..8].copy_from_slice(b"NOTACARD");
        fs::write(dir.join(LOG), &bad_magic).unwrap();
        assert_corrupt(&dir, "bad magic");

        let mut bad_version = good.clone();
        bad_version[11] = 2;
        fs::write(dir.join(LOG), &bad_version).unwrap();
        assert_corrupt(&dir, "bad version");

        fs::write(dir.join(LOG), &good[..HEADER_LEN - 1]).unwrap();
        assert_corrupt(&dir, "short header");

        fs::write(dir.join(LOG), b"").unwrap();
        assert_corrupt(&dir, "empty log");
    }

    /// Kill or power loss during the last append: every length the log can have between
    /// commit N-1 and commit N re-opens as N-1 (or N once the frame is whole), and the card
    /// keeps working afterwards.
    #[test]
    fn crash_at_every_byte_of_the_last_commit() {
        let (_tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir).unwrap();
        s.commit(&[set(1, b"a"), set(2, b"b")]).unwrap();
        s.commit(&[set(3, b"c")]).unwrap();
        let before_len = s.log_len;
        let before = state(&s);
        s.commit(&[set(1, b"A-new"), del(2), set(4, &[0xAB; 40])])
            .unwrap();
        let after_len = s.log_len;
        let after = state(&s);
        drop(s);
        let full = fs::read(dir.join(LOG)).unwrap();
        assert_eq!(full.len() as u64, after_len);

        for cut in before_len..=after_len {
            fs::write(dir.join(LOG), &full[..usize::try_from(cut).unwrap()]).unwrap();
            let mut s = FileStore::open(&dir).unwrap();
            let (mut expected, expected_len) = if cut == after_len {
                (after.clone(), after_len)
            } else {
                (before.clone(), before_len)
            };
            assert_eq!(state(&s), expected, "cut at {cut}");
            assert_eq!(
                fs::metadata(dir.join(LOG)).unwrap().len(),
                expected_len,
                "cut at {cut}"
            );

            s.commit(&[set(9, b"later")]).unwrap();
            drop(s);
            expected.push((9, b"later".to_vec()));
            let s = FileStore::open(&dir).unwrap();
            assert_eq!(state(&s), expected, "commit after cut at {cut}");
        }
    }

    /// A record value may hold any bytes a host sent the card, the image of a log frame
    /// among them: an append torn inside such a value is still a torn append (found by the
    /// 1-hour run of the `state_file_log` fuzz target), not damage followed by later commits.
    #[test]
    fn torn_append_whose_value_holds_a_frame_image_is_discarded() {
        let (_tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir).unwrap();
        s.commit(&[set(1, b"a")]).unwrap();
        let before_len = s.log_len;
        let before = state(&s);
        let next = s.next_seq;
        // Images of the frames that could follow, inside one value, with padding after.
        let mut value = Vec::new();
        for seq in next..next + 3 {
            value.extend(
                frame(
                    seq,
                    &encode_writes([(7, Some(&b"x"[..]))].into_iter()).unwrap(),
                )
                .unwrap(),
            );
        }
        value.extend_from_slice(&[0x55; 16]);
        s.commit(&[set(2, &value)]).unwrap();
        let after_len = s.log_len;
        drop(s);
        let full = fs::read(dir.join(LOG)).unwrap();
        for cut in before_len..after_len {
            fs::write(dir.join(LOG), &full[..usize::try_from(cut).unwrap()]).unwrap();
            let s = FileStore::open(&dir).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(state(&s), before, "cut at {cut}");
        }
    }

    /// The image may also start in a write's head (its length field read as the frame's
    /// length) and run on through the next write's head into its value, where a host put
    /// the tag it computed (the tag is an unkeyed hash): still a torn append (found by a
    /// review).
    #[test]
    fn torn_append_with_a_frame_image_across_write_heads_is_discarded() {
        let (_tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir).unwrap();
        s.commit(&[set(1, b"a")]).unwrap();
        let before_len = s.log_len;
        let before = state(&s);
        let next = s.next_seq;
        // w1's value starts with the next sequence number; w2's carries the tag of
        // len(w1) ‖ value1 ‖ w2's head ‖ value2[0].
        let mut value1 = next.to_be_bytes().to_vec();
        value1.extend_from_slice(&[0xAA; 4]);
        let w1_len = u32::try_from(value1.len()).unwrap();
        let w2_len: u32 = 40;
        let mut signed = w1_len.to_be_bytes().to_vec();
        signed.extend_from_slice(&value1);
        signed.extend_from_slice(&2u16.to_be_bytes());
        signed.push(1);
        signed.extend_from_slice(&w2_len.to_be_bytes());
        signed.push(0x55);
        let mut value2 = vec![0x55];
        value2.extend_from_slice(&tag(&signed));
        value2.resize(40, 0x77);
        s.commit(&[set(1, &value1), set(2, &value2)]).unwrap();
        let after_len = s.log_len;
        drop(s);
        let full = fs::read(dir.join(LOG)).unwrap();
        // The image is whole once value2's 17th byte is written.
        let image_at = full
            .windows(signed.len())
            .position(|w| w == signed)
            .expect("the image is in the log");
        assert!(
            parse_frame(&full, image_at, |_| true).is_some(),
            "a valid frame image"
        );
        for cut in before_len..after_len {
            fs::write(dir.join(LOG), &full[..usize::try_from(cut).unwrap()]).unwrap();
            let s = FileStore::open(&dir).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(state(&s), before, "cut at {cut}");
        }
    }

    /// A damaged length field whose frame's tag then reads as one more write (flag `01`)
    /// must not hide the commits after it behind that write's "value".
    #[test]
    fn a_damaged_length_whose_tag_reads_as_a_write_is_still_damage() {
        let tag_at = HEADER_LEN + FRAME_HEAD_LEN + WRITE_HEAD_LEN + 2;
        let (image, _) = (0u16..4096)
            .map(|v| {
                let commits = vec![
                    vec![(1, Some(v.to_be_bytes().to_vec()))],
                    vec![(2, Some(b"later".to_vec()))],
                ];
                let mut image = write_log(1, &commits).unwrap();
                // The length's top byte: the frame now runs past the end of the file.
                image[HEADER_LEN] ^= 0x01;
                (image, v)
            })
            .find(|(image, _)| image[tag_at + 2] == 1)
            .expect("a value whose frame's tag has 01 as its third byte");
        assert!(
            matches!(read_log(&image), Err(StoreError::Corrupt(_))),
            "damage before a later commit must be refused"
        );
        // The same for a frame without writes (its payload ends where it starts): its tag,
        // which depends on the sequence number alone, read as a write.
        let mut image = (1u64..100_000)
            .map(|first| write_log(first, &[vec![], vec![(2, Some(b"later".to_vec()))]]).unwrap())
            .find(|image| image[HEADER_LEN + FRAME_HEAD_LEN + 2] == 1)
            .expect("a sequence number whose empty frame's tag has 01 as its third byte");
        image[HEADER_LEN] ^= 0x01;
        assert!(
            matches!(read_log(&image), Err(StoreError::Corrupt(_))),
            "damage to an empty commit before a later one must be refused"
        );
    }

    /// Power loss can also leave the file at its full new length with the tail never
    /// written (zeros) or half-written (old junk).
    #[test]
    fn torn_tail_of_zeros_or_junk_is_discarded() {
        let (_tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir).unwrap();
        s.commit(&[set(1, b"first")]).unwrap();
        let before_len = usize::try_from(s.log_len).unwrap();
        let before = state(&s);
        s.commit(&[set(1, b"second"), set(2, b"more")]).unwrap();
        drop(s);
        let full = fs::read(dir.join(LOG)).unwrap();

        for fill in [0x00u8, 0xFF, 0x5A] {
            for from in before_len..full.len() {
                let mut torn = full.clone();
                torn[from..].iter_mut().for_each(|b| *b = fill);
                if torn == full {
                    continue;
                }
                fs::write(dir.join(LOG), &torn).unwrap();
                let s = FileStore::open(&dir).unwrap();
                assert_eq!(state(&s), before, "fill {fill:#x} from {from}");
                assert_eq!(usize::try_from(s.log_len).unwrap(), before_len);
            }
        }
    }

    #[test]
    fn damage_before_the_last_commit_is_corrupt_not_repaired() {
        let (_tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir).unwrap();
        s.commit(&[set(1, b"first")]).unwrap();
        s.commit(&[set(2, b"second"), del(1)]).unwrap();
        let last_start = usize::try_from(s.log_len).unwrap();
        s.commit(&[set(3, b"third")]).unwrap();
        drop(s);
        let good = fs::read(dir.join(LOG)).unwrap();

        // Every byte of the header and of the frames that have a frame after them.
        for at in 0..last_start {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            fs::write(dir.join(LOG), &bad).unwrap();
            assert_corrupt(&dir, &format!("bit flipped at {at}"));
            assert_eq!(
                fs::read(dir.join(LOG)).unwrap(),
                bad,
                "log altered after flip at {at}"
            );
        }
    }

    /// Builds a log by hand from (seq, payload) frames.
    fn write_raw_log(dir: &Path, first_seq: u64, frames: &[(u64, Vec<u8>)]) {
        let mut log = header(first_seq);
        for (seq, payload) in frames {
            log.extend(frame(*seq, payload).unwrap());
        }
        fs::write(dir.join(LOG), log).unwrap();
    }

    fn payload(writes: &[Write]) -> Vec<u8> {
        encode_writes(writes.iter().map(|w| (w.id, w.value.as_deref()))).unwrap()
    }

    #[test]
    fn sequence_gap_is_corrupt() {
        let (_tmp, dir) = card_dir();
        drop(FileStore::create(&dir).unwrap());
        let p = payload(&[set(1, b"x")]);

        write_raw_log(&dir, 1, &[(1, p.clone()), (2, p.clone())]);
        assert_eq!(FileStore::open(&dir).unwrap().next_seq, 3);

        write_raw_log(&dir, 1, &[(1, p.clone()), (3, p.clone())]);
        assert_corrupt(&dir, "gap");
        write_raw_log(&dir, 1, &[(2, p.clone())]);
        assert_corrupt(&dir, "first frame does not match header");
        write_raw_log(&dir, 5, &[(5, p.clone()), (5, p.clone())]);
        assert_corrupt(&dir, "repeated seq");
    }

    #[test]
    fn frame_with_good_checksum_but_bad_content_is_corrupt() {
        let (_tmp, dir) = card_dir();
        drop(FileStore::create(&dir).unwrap());
        let good = payload(&[set(1, b"x")]);

        let mut bad_flag = good.clone();
        bad_flag[2] = 2;
        write_raw_log(&dir, 1, &[(1, bad_flag)]);
        assert_corrupt(&dir, "bad flag");

        let mut delete_with_value = good.clone();
        delete_with_value[2] = 0;
        write_raw_log(&dir, 1, &[(1, delete_with_value)]);
        assert_corrupt(&dir, "delete carrying a value");

        write_raw_log(&dir, 1, &[(1, good[..good.len() - 1].to_vec())]);
        assert_corrupt(&dir, "value cut short");

        write_raw_log(&dir, 1, &[(1, good[..3].to_vec())]);
        assert_corrupt(&dir, "write head cut short");
    }

    #[test]
    fn compaction_shrinks_the_log_and_keeps_the_state() {
        let (_tmp, dir) = card_dir();
        let threshold = 1024;
        let mut s = FileStore::create(&dir)
            .unwrap()
            .with_compaction_threshold(threshold);
        let mut appended = 0u64;
        for i in 0u32..300 {
            let before = s.log_len;
            s.commit(&[
                set(1, &i.to_be_bytes()),
                // Filler: the low byte of `i` (it wraps past 255).
                set(2 + (i % 5) as u16, &[i.to_le_bytes()[0]; 20]),
            ])
            .unwrap();
            appended += s.log_len.saturating_sub(before);
            assert!(
                s.log_len <= threshold + 64,
                "log not compacted: {}",
                s.log_len
            );
            assert_eq!(fs::metadata(dir.join(LOG)).unwrap().len(), s.log_len);
        }
        assert!(
            appended > 4 * threshold,
            "test did not cross the threshold often"
        );
        let expected = state(&s);
        let seq = s.next_seq;
        drop(s);

        let mut s = FileStore::open(&dir).unwrap();
        assert_eq!(state(&s), expected);
        assert_eq!(s.next_seq, seq);
        assert!(!dir.join(LOG_TMP).exists());
        s.commit(&[del(1)]).unwrap();
        drop(s);
        let s = FileStore::open(&dir).unwrap();
        assert_eq!(s.read(1).unwrap(), None);
        assert_eq!(s.ids().unwrap(), vec![2, 3, 4, 5, 6]);
    }

    #[test]
    fn large_state_is_not_rewritten_on_every_commit() {
        let (_tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir)
            .unwrap()
            .with_compaction_threshold(256);
        s.commit(&[set(1, &[7; 1000])]).unwrap();
        let snapshot = s.log_len;
        s.commit(&[set(2, b"small")]).unwrap();
        assert!(
            s.log_len > snapshot,
            "compacted although the log is mostly live data"
        );
    }

    /// A crash at any point of compaction leaves the old log (plus a temporary file of any
    /// length) or the new one; both re-open to the same state.
    #[test]
    fn crash_at_any_point_of_compaction_leaves_a_complete_log() {
        let (tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir)
            .unwrap()
            .with_compaction_threshold(u64::MAX);
        for i in 0u8..20 {
            s.commit(&[set(u16::from(i % 4), &[i; 30])]).unwrap();
        }
        drop(s);
        let twin = tmp.path().join("twin");
        fs::create_dir(&twin).unwrap();
        fs::copy(dir.join(LOG), twin.join(LOG)).unwrap();

        let last = [set(9, b"last"), del(0)];
        let mut s = FileStore::open(&dir)
            .unwrap()
            .with_compaction_threshold(u64::MAX);
        s.commit(&last).unwrap();
        let expected = state(&s);
        let uncompacted_len = s.log_len;
        drop(s);
        let old_log = fs::read(dir.join(LOG)).unwrap();

        let mut s = FileStore::open(&twin)
            .unwrap()
            .with_compaction_threshold(512);
        s.commit(&last).unwrap();
        assert_eq!(state(&s), expected);
        assert!(s.log_len < uncompacted_len / 2, "twin was not compacted");
        drop(s);
        let new_log = fs::read(twin.join(LOG)).unwrap();

        for cut in 0..=new_log.len() {
            fs::write(dir.join(LOG), &old_log).unwrap();
            fs::write(dir.join(LOG_TMP), &new_log[..cut]).unwrap();
            let s = FileStore::open(&dir).unwrap();
            assert_eq!(state(&s), expected, "tmp cut at {cut}");
            assert!(!dir.join(LOG_TMP).exists(), "tmp left at cut {cut}");
        }
        fs::write(dir.join(LOG), &new_log).unwrap();
        let s = FileStore::open(&dir).unwrap();
        assert_eq!(state(&s), expected);
    }

    #[test]
    fn second_open_is_refused_while_the_first_lives() {
        let (_tmp, dir) = card_dir();
        let first = FileStore::create(&dir).unwrap();
        assert_io_containing(
            FileStore::open(&dir),
            "card state in use by another process",
        );
        assert_io_containing(
            FileStore::create(&dir),
            "card state in use by another process",
        );
        drop(first);
        let reopened = FileStore::open(&dir).unwrap();
        assert_io_containing(
            FileStore::open(&dir),
            "card state in use by another process",
        );
        drop(reopened);
        FileStore::open(&dir).unwrap();
    }

    #[test]
    fn forget_history_leaves_no_earlier_value_in_the_file() {
        let (_tmp, dir) = card_dir();
        let mut s = FileStore::create(&dir).unwrap();
        let secret = [0x5Au8; 32];
        s.commit(&[set(1, &secret), set(2, b"other")]).unwrap();
        s.commit(&[set(1, b"erased")]).unwrap();
        let has = |dir: &Path| {
            fs::read(dir.join(LOG))
                .unwrap()
                .windows(secret.len())
                .any(|w| w == secret)
        };
        // An append-only log keeps the old frame...
        assert!(has(&dir));
        s.forget_history().unwrap();
        // ...until it is rewritten: the current records only, and they read back.
        assert!(!has(&dir));
        assert!(!dir.join(LOG_TMP).exists());
        let before = state(&s);
        drop(s);
        let mut s = FileStore::open(&dir).unwrap();
        assert_eq!(state(&s), before);
        s.commit(&[set(3, b"after")]).unwrap();
        drop(s);
        assert_eq!(state(&FileStore::open(&dir).unwrap()).len(), 3);
    }
}

/// Power loss, not just process death: the store's changes are recorded and replayed into a
/// model disk that keeps only what was synced, plus a seeded random part of the rest.
///
/// The model: a file's content is durable up to its last `fsync` (`fdatasync`); each later
/// append or truncation survives whole, not at all, or torn at 512-byte sectors. Directory
/// changes (create, rename, remove) are durable after the directory's `fsync`; of the later
/// ones a random *prefix* survives (file systems journal metadata in order). The power is
/// cut after every recorded change, and the store re-opened from each surviving image must
/// hold exactly the records of the last commit that returned, or of the one in flight.
#[cfg(test)]
mod power {
    use super::*;
    use std::collections::BTreeMap;

    const SECTOR: usize = 512;

    enum Change {
        Write { at: usize, data: Vec<u8> },
        SetLen(usize),
    }

    #[derive(Default)]
    struct Inode {
        durable: Vec<u8>,
        current: Vec<u8>,
        pending: Vec<Change>,
    }

    #[derive(Clone)]
    enum DirOp {
        Link(&'static str, usize),
        Rename(&'static str, &'static str),
        Remove(&'static str),
    }

    /// The disk after a prefix of the recorded changes.
    #[derive(Default)]
    struct Model {
        inodes: Vec<Inode>,
        names: BTreeMap<&'static str, usize>,
        durable_names: BTreeMap<&'static str, usize>,
        dir_pending: Vec<DirOp>,
    }

    impl Model {
        fn apply(&mut self, op: &IoOp) {
            match op {
                IoOp::Create(n) => {
                    self.inodes.push(Inode::default());
                    let id = self.inodes.len() - 1;
                    self.names.insert(n, id);
                    self.dir_pending.push(DirOp::Link(n, id));
                }
                IoOp::Append(n, data) => {
                    let f = &mut self.inodes[self.names[n]];
                    let at = f.current.len();
                    f.current.extend_from_slice(data);
                    f.pending.push(Change::Write {
                        at,
                        data: data.clone(),
                    });
                }
                IoOp::SetLen(n, len) => {
                    let len = usize::try_from(*len).unwrap();
                    let f = &mut self.inodes[self.names[n]];
                    f.current.resize(len, 0);
                    f.pending.push(Change::SetLen(len));
                }
                IoOp::Sync(n) => {
                    let f = &mut self.inodes[self.names[n]];
                    f.durable = f.current.clone();
                    f.pending.clear();
                }
                IoOp::Rename(from, to) => {
                    let id = self.names.remove(from).unwrap();
                    self.names.insert(to, id);
                    self.dir_pending.push(DirOp::Rename(from, to));
                }
                IoOp::Remove(n) => {
                    self.names.remove(n);
                    self.dir_pending.push(DirOp::Remove(n));
                }
                IoOp::SyncDir => {
                    self.durable_names = self.names.clone();
                    self.dir_pending.clear();
                }
            }
        }

        /// What a power cut now leaves: file name → content.
        fn crash(&self, rng: &mut Rng) -> BTreeMap<&'static str, Vec<u8>> {
            let mut names = self.durable_names.clone();
            let keep = rng.below(self.dir_pending.len() + 1);
            for op in &self.dir_pending[..keep] {
                match op {
                    DirOp::Link(n, id) => {
                        names.insert(n, *id);
                    }
                    DirOp::Rename(from, to) => {
                        if let Some(id) = names.remove(from) {
                            names.insert(to, id);
                        }
                    }
                    DirOp::Remove(n) => {
                        names.remove(n);
                    }
                }
            }
            names
                .into_iter()
                .map(|(n, id)| {
                    let f = &self.inodes[id];
                    let mut image = f.durable.clone();
                    for c in &f.pending {
                        match c {
                            Change::SetLen(len) => {
                                if rng.below(2) == 0 {
                                    image.resize(*len, 0);
                                }
                            }
                            Change::Write { at, data } => match rng.below(3) {
                                0 => write_at(&mut image, *at, data),
                                1 => {}
                                _ => {
                                    let mut from = 0;
                                    while from < data.len() {
                                        let end = ((at + from) / SECTOR + 1) * SECTOR - at;
                                        let to = end.min(data.len());
                                        if rng.below(2) == 0 {
                                            write_at(&mut image, at + from, &data[from..to]);
                                        }
                                        from = to;
                                    }
                                }
                            },
                        }
                    }
                    (n, image)
                })
                .collect()
        }
    }

    fn write_at(image: &mut Vec<u8>, at: usize, data: &[u8]) {
        if image.len() < at + data.len() {
            image.resize(at + data.len(), 0);
        }
        image[at..at + data.len()].copy_from_slice(data);
    }

    /// SplitMix64, seeded: a failing seed replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            usize::try_from((z ^ (z >> 31)) % n as u64).unwrap()
        }
    }

    fn records(s: &FileStore) -> BTreeMap<RecordId, Vec<u8>> {
        s.records.clone()
    }

    /// Commits shaped like a card's: a few registers rewritten together, a record deleted,
    /// a value longer than a sector now and then; compaction every few commits.
    fn workload(s: &mut FileStore, i: u16) {
        let big = vec![u8::try_from(i % 251).unwrap(); 700];
        let w: Vec<Write> = match i % 4 {
            0 => vec![
                Write {
                    id: 0x0101,
                    value: Some(i.to_be_bytes().to_vec()),
                },
                Write {
                    id: 0x0102,
                    value: Some((i * 3).to_be_bytes().to_vec()),
                },
            ],
            1 => vec![Write {
                id: 0x0200 + i,
                value: Some(big),
            }],
            2 => vec![
                Write {
                    id: 0x0200 + i - 1,
                    value: None,
                },
                Write {
                    id: 0x0101,
                    value: Some(vec![0xAA; 40]),
                },
            ],
            _ => vec![Write {
                id: 0x0300,
                value: Some(vec![u8::try_from(i).unwrap(); 300]),
            }],
        };
        s.commit(&w).unwrap();
    }

    #[test]
    fn power_cut_after_every_write_and_sync_keeps_exactly_the_committed_records() {
        let seeds: u64 = std::env::var("OPENPSD_POWER_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("card");
        fs::create_dir(&dir).unwrap();
        TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
        let len = || TRACE.with(|t| t.borrow().as_ref().map_or(0, Vec::len));
        // (trace length when the commit returned, the records then).
        let mut done = Vec::new();
        let mut s = FileStore::create(&dir)
            .unwrap()
            .with_compaction_threshold(2_000);
        done.push((len(), records(&s)));
        for i in 1..=24 {
            workload(&mut s, i);
            done.push((len(), records(&s)));
        }
        drop(s);
        let trace = TRACE.with(|t| t.borrow_mut().take()).unwrap();
        let compactions = trace
            .iter()
            .filter(|op| matches!(op, IoOp::Rename(..)))
            .count();
        assert!(compactions >= 3, "only {compactions} log replacements");

        let mut model = Model::default();
        let mut runs = 0;
        for cut in 0..=trace.len() {
            if cut > 0 {
                model.apply(&trace[cut - 1]);
            }
            let returned = done.iter().filter(|(at, _)| *at <= cut).count();
            for seed in 0..seeds {
                let mut rng = Rng(seed ^ (cut as u64) << 20);
                let image = model.crash(&mut rng);
                let d = tmp.path().join(format!("cut{cut}-{seed}"));
                fs::create_dir(&d).unwrap();
                for (name, bytes) in &image {
                    fs::write(d.join(name), bytes).unwrap();
                }
                let ctx = format!("cut after change {cut} of {}, seed {seed}", trace.len());
                match FileStore::open(&d) {
                    Ok(mut s) => {
                        let got = records(&s);
                        let ok_last = returned > 0 && got == done[returned - 1].1;
                        let ok_next = done.get(returned).is_some_and(|(_, r)| *r == got);
                        assert!(
                            ok_last || ok_next,
                            "{ctx}: {} records, not the state of commit {} or {}",
                            got.len(),
                            returned,
                            returned + 1
                        );
                        // Usable after the cut: one more commit survives a clean re-open.
                        s.commit(&[Write {
                            id: 0x7777,
                            value: Some(b"after".to_vec()),
                        }])
                        .unwrap();
                        drop(s);
                        let s = FileStore::open(&d).unwrap();
                        assert_eq!(
                            s.records.get(&0x7777).map(Vec::as_slice),
                            Some(&b"after"[..])
                        );
                    }
                    Err(e) => assert!(
                        returned == 0,
                        "{ctx}: the card does not open after {returned} returned commits: {e}"
                    ),
                }
                fs::remove_dir_all(&d).unwrap();
                runs += 1;
            }
        }
        eprintln!(
            "file store power loss: {} cut points × {seeds} seeds = {runs} re-opens, {compactions} compactions",
            trace.len() + 1
        );
    }
}
