//! Power loss for tests: a SQLite VFS that remembers what was written since each file's
//! last `fsync` and, when the power is cut, leaves every file at its last synced content
//! plus a seeded random part of the writes that followed (whole, dropped, or torn at
//! 512-byte sectors), like SQLite's own crash-test VFS (`src/test6.c`).
//!
//! A `kill -9` keeps the page cache, so a test that only kills processes passes without a
//! single `fsync`; this layer does not.
//!
//! How it works: [`install`] registers the VFS as SQLite's default, wrapping the default
//! unix VFS (its locks, its `-shm` shared memory and its reads are the real ones). Files
//! under a [`Disk`]'s root are *tracked*: each keeps a durable image (its content at the
//! last `xSync`, or when first opened) and the writes and truncations since. Every other
//! file passes straight through. A tracked `xSync` does not call the kernel's `fsync` (the
//! model is the durability, and the tests run faster): it makes the pending writes durable.
//!
//! [`Disk::cut_at_sync`] arms a cut at the n-th `xSync` from now, counted over every file of
//! the disk (one machine, one power supply). That sync fails (`SQLITE_IOERR_FSYNC`) and the
//! disk is off: every later write, sync, truncation, delete, read or open of its files fails
//! too, so nothing after the cut becomes durable. Once the program closed every connection
//! (stopped its services), [`Disk::recover`] writes the surviving images to the files,
//! removes the `-shm` files (RAM is gone) and powers the disk on again.
//!
//! What is not modelled: directory entries (a database created during the test survives
//! even if its directory was never synced; SQLite syncs the directory of a new WAL itself),
//! and garbage in a torn sector (the drive writes whole sectors or none, SQLite's
//! "powersafe overwrite" assumption, which its unix VFS makes by default).
//!
//! Test support only: behind the `crash-test` feature, never in a service binary.
#![allow(unsafe_code)] // The VFS is C callbacks over SQLite's FFI; each block says why it holds.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rusqlite::ffi;

/// The VFS's name, and the default once [`install`]ed.
pub const VFS_NAME: &str = "openpsd-crash";

/// Sector size for torn writes.
const SECTOR: usize = 512;

/// One change since a file's last sync.
#[derive(Clone, Debug)]
enum Op {
    Write { at: usize, data: Vec<u8> },
    Truncate { len: usize },
}

#[derive(Debug, Default)]
struct FileState {
    /// The content that survives for sure; `None`: no such file durably.
    durable: Option<Vec<u8>>,
    /// Writes and truncations since the last sync, in order.
    pending: Vec<Op>,
}

#[derive(Debug, Default)]
struct DiskState {
    files: HashMap<PathBuf, FileState>,
    /// Syncs since the disk was made or last recovered.
    syncs: u64,
    /// The sync that cuts the power (its index in `syncs`).
    cut_at: Option<u64>,
    off: bool,
    /// Tracked files open now.
    open: usize,
}

/// A tracked directory tree: one machine's disk, with one power supply.
#[derive(Debug)]
pub struct Disk {
    root: PathBuf,
    state: Mutex<DiskState>,
}

/// What [`Disk::recover`] did, for a test's message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Writes since the last sync that survived whole.
    pub kept: usize,
    /// Writes lost whole.
    pub dropped: usize,
    /// Writes of which some sectors survived and others not.
    pub torn: usize,
}

fn disks() -> MutexGuard<'static, Vec<Arc<Disk>>> {
    static DISKS: OnceLock<Mutex<Vec<Arc<Disk>>>> = OnceLock::new();
    DISKS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Disk {
    /// Tracks every SQLite file under `root` (which must exist) from now on, after
    /// [`install`]ing the VFS. Files opened before are not tracked by their open handles:
    /// make the disk before the program opens its databases.
    pub fn new(root: &Path) -> std::io::Result<Arc<Disk>> {
        install()?;
        let disk = Arc::new(Disk {
            root: root.canonicalize()?,
            state: Mutex::default(),
        });
        disks().push(Arc::clone(&disk));
        Ok(disk)
    }

    fn state(&self) -> MutexGuard<'_, DiskState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Syncs so far (since made or last recovered).
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// Cuts the power at the `n`-th sync from now (0: the next one).
    pub fn cut_at_sync(&self, n: u64) {
        let mut s = self.state();
        s.cut_at = Some(s.syncs.saturating_add(n));
    }

    /// Takes back a cut armed by [`Disk::cut_at_sync`] that has not happened yet; answers
    /// whether one was pending (a test that armed a cut its run did not reach).
    pub fn disarm(&self) -> bool {
        let mut s = self.state();
        let pending = !s.off && s.cut_at.is_some_and(|at| at >= s.syncs);
        s.cut_at = None;
        pending
    }

    /// Cuts the power now, between two syncs.
    pub fn cut_now(&self) {
        self.state().off = true;
    }

    /// Whether the power is off.
    pub fn is_off(&self) -> bool {
        self.state().off
    }

    /// After a cut, with every connection to the disk's files closed: leaves each file at
    /// its durable content plus a random part of its unsynced writes (seeded by `seed`),
    /// removes the `-shm` files and powers the disk on. Without a cut it cuts first.
    pub fn recover(&self, seed: u64) -> std::io::Result<Recovered> {
        let mut s = self.state();
        if s.open != 0 {
            return Err(std::io::Error::other(format!(
                "{} SQLite files under {} are still open: close every connection first",
                s.open,
                self.root.display()
            )));
        }
        let mut rng = SplitMix(seed);
        let mut done = Recovered::default();
        let mut paths: Vec<PathBuf> = s.files.keys().cloned().collect();
        paths.sort();
        for path in paths {
            let Some(f) = s.files.get(&path) else {
                continue;
            };
            let image = survive(f, &mut rng, &mut done);
            match image {
                Some(bytes) => std::fs::write(&path, bytes)?,
                None => match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                },
            }
            let mut shm = path.clone().into_os_string();
            shm.push("-shm");
            match std::fs::remove_file(&shm) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        *s = DiskState::default();
        Ok(done)
    }

    fn tracks(&self, path: &Path) -> bool {
        path.starts_with(&self.root)
    }
}

/// Stops tracking `disk` (its files pass straight through afterwards).
pub fn forget(disk: &Arc<Disk>) {
    disks().retain(|d| !Arc::ptr_eq(d, disk));
}

/// The image of `f` after a power cut.
fn survive(f: &FileState, rng: &mut SplitMix, done: &mut Recovered) -> Option<Vec<u8>> {
    // A file that never was durable does not come back, whatever was written to it.
    let mut image = f.durable.clone()?;
    for op in &f.pending {
        match op {
            Op::Truncate { len } => {
                if rng.below(2) == 0 {
                    image.truncate(*len);
                }
            }
            Op::Write { at, data } => match rng.below(3) {
                0 => {
                    write_at(&mut image, *at, data);
                    done.kept += 1;
                }
                1 => done.dropped += 1,
                _ => {
                    // Torn: each sector the write touches survives or not.
                    let mut from = 0;
                    while from < data.len() {
                        let sector_end = ((at + from) / SECTOR + 1) * SECTOR;
                        let to = (sector_end - at).min(data.len());
                        if rng.below(2) == 0 {
                            write_at(&mut image, at + from, &data[from..to]);
                        }
                        from = to;
                    }
                    done.torn += 1;
                }
            },
        }
    }
    Some(image)
}

fn write_at(image: &mut Vec<u8>, at: usize, data: &[u8]) {
    let end = at + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[at..end].copy_from_slice(data);
}

fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { at, data } => write_at(image, *at, data),
        Op::Truncate { len } => image.truncate(*len),
    }
}

/// A small seeded generator (SplitMix64): the same seed, the same surviving writes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The unix VFS this one wraps.
struct Orig(*mut ffi::sqlite3_vfs);
// SAFETY: SQLite's VFS objects are immutable once registered and thread-safe to call.
unsafe impl Send for Orig {}
// SAFETY: as above.
unsafe impl Sync for Orig {}

static ORIG: OnceLock<Orig> = OnceLock::new();

/// Registers the crash VFS as SQLite's default (once per process); every connection opened
/// afterwards goes through it. Untracked files behave exactly as before.
pub fn install() -> std::io::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find(NULL)` initializes SQLite and returns the default VFS,
        // a static object; we copy it and only replace the name, the file size and the
        // callbacks that open or delete files. The copy and its name are leaked, so they
        // live as long as SQLite may use them.
        unsafe {
            let orig = ffi::sqlite3_vfs_find(std::ptr::null());
            if orig.is_null() {
                return Err("no default SQLite VFS".to_owned());
            }
            let _ = ORIG.set(Orig(orig));
            let mut vfs = *orig;
            let name = CString::new(VFS_NAME).map_err(|e| e.to_string())?;
            vfs.zName = name.into_raw();
            vfs.pNext = std::ptr::null_mut();
            let own = c_int::try_from(size_of::<CrashFile>()).map_err(|e| e.to_string())?;
            vfs.szOsFile = own
                .checked_add((*orig).szOsFile)
                .ok_or("file size overflow")?;
            vfs.xOpen = Some(x_open);
            vfs.xDelete = Some(x_delete);
            let vfs = Box::into_raw(Box::new(vfs));
            let rc = ffi::sqlite3_vfs_register(vfs, 1);
            if rc != ffi::SQLITE_OK {
                return Err(format!("sqlite3_vfs_register: {rc}"));
            }
        }
        Ok(())
    })
    .clone()
    .map_err(std::io::Error::other)
}

fn orig() -> *mut ffi::sqlite3_vfs {
    ORIG.get().map_or(std::ptr::null_mut(), |o| o.0)
}

/// Our file object: SQLite's base, the real unix file right behind it in the same
/// allocation, and the tracked path's disk.
#[repr(C)]
struct CrashFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    tracked: Option<(Arc<Disk>, PathBuf)>,
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

/// The disk tracking `path`, if any.
fn disk_of(path: &Path) -> Option<Arc<Disk>> {
    disks().iter().find(|d| d.tracks(path)).cloned()
}

/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn path_of(name: *const c_char) -> Option<PathBuf> {
    if name.is_null() {
        return None;
    }
    // SAFETY: SQLite passes NUL-terminated names (the caller's contract).
    let s = unsafe { CStr::from_ptr(name) };
    Some(PathBuf::from(s.to_string_lossy().into_owned()))
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let me = file.cast::<CrashFile>();
    // SAFETY: SQLite allocated `szOsFile` bytes at `file` (ours, then the real file's),
    // 8-byte aligned; `name` is null or a NUL-terminated path.
    unsafe {
        let real = file
            .cast::<u8>()
            .add(size_of::<CrashFile>())
            .cast::<ffi::sqlite3_file>();
        let path = path_of(name);
        let tracked = path
            .as_deref()
            .and_then(|p| disk_of(p).map(|d| (d, p.to_path_buf())));
        if let Some((disk, path)) = &tracked {
            let mut s = disk.state();
            if s.off {
                (*file).pMethods = std::ptr::null();
                return ffi::SQLITE_CANTOPEN;
            }
            s.files.entry(path.clone()).or_insert_with(|| FileState {
                durable: std::fs::read(path).ok(),
                pending: Vec::new(),
            });
            s.open += 1;
        }
        let o = orig();
        let Some(open) = (*o).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = open(o, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            if let Some((disk, _)) = &tracked {
                disk.state().open -= 1;
            }
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        std::ptr::write(
            me,
            CrashFile {
                base: ffi::sqlite3_file {
                    pMethods: &raw const METHODS,
                },
                real,
                tracked,
            },
        );
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    // SAFETY: `name` is a NUL-terminated path; the original VFS is static.
    unsafe {
        let disk = path_of(name).and_then(|p| disk_of(&p).map(|d| (d, p)));
        let o = orig();
        let Some(delete) = (*o).xDelete else {
            return ffi::SQLITE_IOERR_DELETE;
        };
        let Some((disk, path)) = disk else {
            return delete(o, name, sync_dir);
        };
        let mut s = disk.state();
        if s.off {
            return ffi::SQLITE_IOERR_DELETE;
        }
        let rc = delete(o, name, sync_dir);
        if rc == ffi::SQLITE_OK {
            // A delete is taken as durable at once (SQLite deletes a WAL only after the
            // checkpoint that made it useless was synced).
            s.files.insert(path, FileState::default());
        }
        rc
    }
}

/// The real file and the tracking of `file`.
///
/// # Safety
/// `file` was opened by [`x_open`] and not closed.
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, Option<&'a (Arc<Disk>, PathBuf)>) {
    // SAFETY: the caller's contract: `file` is a live `CrashFile`.
    unsafe {
        let me = file.cast::<CrashFile>();
        ((*me).real, (*me).tracked.as_ref())
    }
}

/// The real file's methods.
///
/// # Safety
/// `real` is an open real file.
unsafe fn m(real: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: an open unix file's methods are a static table.
    unsafe { &*(*real).pMethods }
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `file` is ours and SQLite closes it once; we drop our fields after the real
    // close and never touch it again.
    unsafe {
        let me = file.cast::<CrashFile>();
        let real = (*me).real;
        let rc = m(real).xClose.map_or(ffi::SQLITE_OK, |f| f(real));
        if let Some((disk, _)) = &(*me).tracked {
            let mut s = disk.state();
            s.open = s.open.saturating_sub(1);
        }
        std::ptr::drop_in_place(me);
        (*file).pMethods = std::ptr::null();
        rc
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: forwarding to the real file with SQLite's own arguments.
    unsafe {
        let (real, tracked) = parts(file);
        if let Some((disk, _)) = tracked {
            if disk.state().off {
                return ffi::SQLITE_IOERR_READ;
            }
        }
        m(real)
            .xRead
            .map_or(ffi::SQLITE_IOERR_READ, |f| f(real, buf, amount, offset))
    }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: forwarding to the real file; `buf` holds `amount` bytes (SQLite's contract).
    unsafe {
        let (real, tracked) = parts(file);
        let write = |r| {
            m(real)
                .xWrite
                .map_or(ffi::SQLITE_IOERR_WRITE, |f| f(r, buf, amount, offset))
        };
        let Some((disk, path)) = tracked else {
            return write(real);
        };
        let mut s = disk.state();
        if s.off {
            return ffi::SQLITE_IOERR_WRITE;
        }
        let rc = write(real);
        if rc == ffi::SQLITE_OK {
            let (Ok(n), Ok(at)) = (usize::try_from(amount), usize::try_from(offset)) else {
                return ffi::SQLITE_IOERR_WRITE;
            };
            let data = std::slice::from_raw_parts(buf.cast::<u8>(), n).to_vec();
            s.files
                .entry(path.clone())
                .or_default()
                .pending
                .push(Op::Write { at, data });
        }
        rc
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, tracked) = parts(file);
        let truncate = || {
            m(real)
                .xTruncate
                .map_or(ffi::SQLITE_IOERR_TRUNCATE, |f| f(real, size))
        };
        let Some((disk, path)) = tracked else {
            return truncate();
        };
        let mut s = disk.state();
        if s.off {
            return ffi::SQLITE_IOERR_TRUNCATE;
        }
        let rc = truncate();
        if rc == ffi::SQLITE_OK {
            let Ok(len) = usize::try_from(size) else {
                return ffi::SQLITE_IOERR_TRUNCATE;
            };
            s.files
                .entry(path.clone())
                .or_default()
                .pending
                .push(Op::Truncate { len });
        }
        rc
    }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, tracked) = parts(file);
        let Some((disk, path)) = tracked else {
            return m(real).xSync.map_or(ffi::SQLITE_OK, |f| f(real, flags));
        };
        let mut s = disk.state();
        if s.off {
            return ffi::SQLITE_IOERR_FSYNC;
        }
        let n = s.syncs;
        s.syncs += 1;
        if s.cut_at == Some(n) {
            s.off = true;
            return ffi::SQLITE_IOERR_FSYNC;
        }
        // The model is the durability: no kernel fsync needed.
        let f = s.files.entry(path.clone()).or_default();
        let mut image = f.durable.take().unwrap_or_default();
        for op in f.pending.drain(..) {
            apply(&mut image, &op);
        }
        f.durable = Some(image);
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, _) = parts(file);
        m(real)
            .xFileSize
            .map_or(ffi::SQLITE_IOERR_FSTAT, |f| f(real, size))
    }
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, _) = parts(file);
        m(real)
            .xLock
            .map_or(ffi::SQLITE_IOERR_LOCK, |f| f(real, level))
    }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, _) = parts(file);
        m(real)
            .xUnlock
            .map_or(ffi::SQLITE_IOERR_UNLOCK, |f| f(real, level))
    }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, _) = parts(file);
        m(real)
            .xCheckReservedLock
            .map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |f| f(real, out))
    }
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, _) = parts(file);
        m(real)
            .xFileControl
            .map_or(ffi::SQLITE_NOTFOUND, |f| f(real, op, arg))
    }
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, _) = parts(file);
        m(real).xSectorSize.map_or(4096, |f| f(real))
    }
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, _) = parts(file);
        m(real).xDeviceCharacteristics.map_or(0, |f| f(real))
    }
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: forwarding to the real file (shared memory is not durable state).
    unsafe {
        let (real, _) = parts(file);
        m(real).xShmMap.map_or(ffi::SQLITE_IOERR_SHMMAP, |f| {
            f(real, page, size, extend, out)
        })
    }
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, _) = parts(file);
        m(real)
            .xShmLock
            .map_or(ffi::SQLITE_IOERR_SHMLOCK, |f| f(real, offset, n, flags))
    }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, _) = parts(file);
        if let Some(f) = m(real).xShmBarrier {
            f(real);
        }
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: forwarding to the real file.
    unsafe {
        let (real, _) = parts(file);
        m(real)
            .xShmUnmap
            .map_or(ffi::SQLITE_OK, |f| f(real, delete))
    }
}

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: no memory-mapped reads: SQLite falls back to xRead when `*out` is null.
    unsafe {
        let _ = (file, offset, amount);
        *out = std::ptr::null_mut();
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_unfetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    p: *mut c_void,
) -> c_int {
    let _ = (file, offset, p);
    ffi::SQLITE_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> rusqlite::Connection {
        crate::open(
            path,
            "CREATE TABLE IF NOT EXISTS t (x INTEGER PRIMARY KEY, v BLOB);",
        )
        .unwrap()
    }

    fn count(path: &Path) -> i64 {
        let c = open(path);
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    /// Every commit that returned survives a cut at any later sync, whatever part of the
    /// unsynced writes survives; the one the cut hit is all or nothing.
    #[test]
    fn committed_rows_survive_a_cut_at_every_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let disk = Disk::new(dir.path()).unwrap();
        // Count the syncs of 20 commits.
        let c = open(&path);
        let start = disk.syncs();
        for i in 0..20 {
            c.execute("INSERT INTO t VALUES (?1, zeroblob(3000))", [i])
                .unwrap();
        }
        let syncs = disk.syncs() - start;
        drop(c);
        assert!(syncs >= 20, "{syncs} syncs for 20 commits");
        for cut in 0..syncs + 2 {
            for seed in 0..3 {
                let path = dir.path().join(format!("t{cut}_{seed}.sqlite"));
                let c = open(&path);
                disk.cut_at_sync(cut);
                let mut committed = 0;
                for i in 0..20 {
                    match c.execute("INSERT INTO t VALUES (?1, zeroblob(3000))", [i]) {
                        Ok(_) => committed += 1,
                        Err(_) => break,
                    }
                }
                drop(c);
                disk.recover(seed).unwrap();
                let n = count(&path);
                assert!(
                    n == committed || n == committed + 1,
                    "cut {cut} seed {seed}: {n} rows, {committed} committed"
                );
                let c = open(&path);
                let ok: String = c
                    .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(ok, "ok");
            }
        }
        forget(&disk);
    }

    /// A cut taken back before its sync does not happen; one already past is not taken back.
    #[test]
    fn a_disarmed_cut_does_not_happen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let disk = Disk::new(dir.path()).unwrap();
        let c = open(&path);
        disk.cut_at_sync(0);
        assert!(disk.disarm());
        assert!(!disk.disarm());
        for i in 0..5 {
            c.execute("INSERT INTO t VALUES (?1, NULL)", [i]).unwrap();
        }
        assert!(!disk.is_off());
        disk.cut_at_sync(0);
        assert!(c.execute("INSERT INTO t VALUES (5, NULL)", []).is_err());
        assert!(disk.is_off());
        assert!(!disk.disarm(), "the cut happened: nothing to take back");
        assert!(disk.is_off());
        drop(c);
        disk.recover(0).unwrap();
        assert!((5..=6).contains(&count(&path)));
        forget(&disk);
    }

    /// The model is not a no-op: without a sync a commit that returned can be lost.
    #[test]
    fn a_commit_without_sync_can_be_lost() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path()).unwrap();
        let mut lost = 0;
        for seed in 0..8 {
            let path = dir.path().join(format!("t{seed}.sqlite"));
            let c = open(&path);
            c.execute("INSERT INTO t VALUES (1, NULL)", []).unwrap();
            c.pragma_update(None, "synchronous", "OFF").unwrap();
            c.execute("INSERT INTO t VALUES (2, NULL)", []).unwrap();
            disk.cut_now();
            drop(c);
            disk.recover(seed).unwrap();
            let n = count(&path);
            assert!(n == 1 || n == 2, "seed {seed}: {n} rows");
            lost += usize::from(n == 1);
        }
        assert!(lost > 0, "no seed lost the unsynced commit");
        forget(&disk);
    }
}
