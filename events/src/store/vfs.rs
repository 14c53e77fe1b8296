//! A commit's WAL frames written to the file in one system call, not two per page.
//!
//! SQLite writes each frame of a commit with two `pwrite`s: its 24-byte header, then its page.
//! A room message dirties four pages (the table and its three indexes), so its commit made
//! eight `pwrite`s, 17 % of a chat worker's CPU at 100 000 deliveries a second (`perf`,
//! docs/BENCHMARKS.md, session 32). Each one pays the system call and the file system's write
//! path for two byte ranges that lie next to each other in the file.
//!
//! This VFS is SQLite's own ("unix") with one change, for WAL files only: frames appended one
//! after another are gathered in memory and written with one call when the page of the frame
//! that ends the commit arrives (its header carries the database's size; every other frame's
//! says 0). That is still inside SQLite's frame loop, before SQLite publishes the commit in the
//! shared index, so no other connection, in this process or another, can look for a frame that
//! is not in the file yet; a failed write fails the commit, as a failed `pwrite` did. Anything
//! else asked of the file (a read, a sync, its size, a truncation, a write anywhere else, its
//! close) writes what is gathered first. A lone commit header (SQLite rewriting a commit's
//! checksums) and the WAL's own header go straight through.
//!
//! Only the main database's connections use it; SQLite's default VFS stays the default, and a
//! connection that does not use this one (another program, `sqlite3` by hand) reads and writes
//! the same files as before: nothing in the file format changes.

use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;
use std::sync::OnceLock;

/// The name connections ask for (`open`).
const NAME: &CStr = c"switchboard-wal";
/// A WAL frame's header: page number, database size after a commit (else 0), salts, checksums.
const FRAME_HEADER: usize = 24;
/// Gathered bytes are written out past this (a batch of many messages, a spilled transaction).
const GATHER_MAX: usize = 256 * 1024;
/// The most one call to the base VFS writes: the unix VFS writes at most 128 KiB - 1 bytes a
/// `pwrite` (its own writes are a page, 64 KiB at most) and reports a write of more as a full
/// disk whenever what is left comes to a multiple of 128 KiB.
const WRITE_MAX: usize = 64 * 1024;

/// Opens `path` through this VFS (registered on first use).
pub(super) fn open(path: &Path, flags: rusqlite::OpenFlags) -> rusqlite::Result<rusqlite::Connection> {
    register().map_err(|rc| rusqlite::Error::SqliteFailure(ffi::Error::new(rc), Some("registering the WAL-gathering VFS".into())))?;
    rusqlite::Connection::open_with_flags_and_vfs(path, flags, NAME)
}

/// Registers the VFS once per process (not as the default). The SQLite result code on failure.
fn register() -> Result<(), c_int> {
    static REGISTERED: OnceLock<Result<(), c_int>> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS, which lives as long as the
        // process; the copy made of it is leaked, as SQLite keeps the pointer it is given.
        unsafe {
            let base = ffi::sqlite3_vfs_find(std::ptr::null());
            if base.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            BASE.set(Base(base)).map_err(|_| ffi::SQLITE_MISUSE)?;
            let mut vfs = *base;
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = NAME.as_ptr();
            vfs.szOsFile = (inner_offset() + (*base).szOsFile as usize) as c_int;
            vfs.xOpen = Some(x_open);
            // Everything else is the base's, called with this VFS: of the unix VFS's methods
            // only xOpen reads anything from the VFS it is given (its pAppData, copied here).
            let rc = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0);
            if rc == ffi::SQLITE_OK {
                Ok(())
            } else {
                Err(rc)
            }
        }
    })
}

/// The default VFS this one wraps.
struct Base(*mut ffi::sqlite3_vfs);
// SAFETY: the pointer is to SQLite's static VFS object, which SQLite itself shares between
// threads; it is only ever read.
unsafe impl Send for Base {}
unsafe impl Sync for Base {}
static BASE: OnceLock<Base> = OnceLock::new();

/// A WAL file: SQLite's file object first (so SQLite can use a pointer to either), then the
/// base VFS's own file object, in the same allocation, at `inner_offset()`.
#[repr(C)]
struct WalFile {
    file: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Bytes written to SQLite but not yet to the file, from offset `start`.
    gathered: Vec<u8>,
    start: i64,
    /// The last frame header gathered ends a commit: its page is the last write.
    commit: bool,
}

fn inner_offset() -> usize {
    std::mem::size_of::<WalFile>().next_multiple_of(16)
}

unsafe extern "C" fn x_open(_vfs: *mut ffi::sqlite3_vfs, name: *const c_char, file: *mut ffi::sqlite3_file, flags: c_int, out: *mut c_int) -> c_int {
    let Some(Base(base)) = BASE.get() else { return ffi::SQLITE_MISUSE };
    let Some(base_open) = (**base).xOpen else { return ffi::SQLITE_MISUSE };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Not a WAL file: the base's own object, in the first bytes of the space SQLite gave
        // (this VFS's szOsFile is larger than the base's).
        return base_open(*base, name, file, flags, out);
    }
    let inner = (file as *mut u8).add(inner_offset()) as *mut ffi::sqlite3_file;
    let rc = base_open(*base, name, inner, flags, out);
    if rc != ffi::SQLITE_OK {
        if !(*inner).pMethods.is_null() {
            if let Some(close) = (*(*inner).pMethods).xClose {
                close(inner);
            }
        }
        (*file).pMethods = std::ptr::null();
        return rc;
    }
    std::ptr::write(
        file as *mut WalFile,
        WalFile { file: ffi::sqlite3_file { pMethods: &WAL_METHODS }, inner, gathered: Vec::new(), start: 0, commit: false },
    );
    rc
}

/// The WAL file behind SQLite's pointer.
///
/// # Safety
/// `file` is one `x_open` initialised as a `WalFile` (SQLite calls these methods on no other).
unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    &mut *(file as *mut WalFile)
}

/// The base's methods for the inner file.
unsafe fn methods<'a>(w: &WalFile) -> &'a ffi::sqlite3_io_methods {
    &*(*w.inner).pMethods
}

/// Writes what is gathered (one call); the base's result code.
unsafe fn flush(w: &mut WalFile) -> c_int {
    if w.gathered.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Some(write) = methods(w).xWrite else { return ffi::SQLITE_MISUSE };
    let mut rc = ffi::SQLITE_OK;
    let mut offset = w.start;
    for chunk in w.gathered.chunks(WRITE_MAX) {
        count_write();
        rc = write(w.inner, chunk.as_ptr() as *const c_void, chunk.len() as c_int, offset);
        if rc != ffi::SQLITE_OK {
            break;
        }
        offset += chunk.len() as i64;
    }
    // The buffer keeps its capacity for the next commit: at most about twice GATHER_MAX.
    w.gathered.clear();
    w.commit = false;
    rc
}

/// A frame header whose database size is not 0: the commit's last frame.
fn ends_commit(header: &[u8]) -> bool {
    header.len() == FRAME_HEADER && header[4..8] != [0, 0, 0, 0]
}

unsafe extern "C" fn x_write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let w = wal(file);
    let bytes = std::slice::from_raw_parts(data as *const u8, amount.max(0) as usize);
    if !w.gathered.is_empty() && offset != w.start + w.gathered.len() as i64 {
        let rc = flush(w);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if w.gathered.is_empty() {
        // A run starts with a frame header that does not end a commit; a one-page commit's
        // header, a lone rewritten header, the WAL's header and a page overwritten in place go
        // straight through.
        if bytes.len() != FRAME_HEADER || ends_commit(bytes) {
            let Some(write) = methods(w).xWrite else { return ffi::SQLITE_MISUSE };
            count_write();
            return write(w.inner, data, amount, offset);
        }
        w.start = offset;
    }
    w.gathered.extend_from_slice(bytes);
    if bytes.len() == FRAME_HEADER {
        w.commit = ends_commit(bytes);
        return ffi::SQLITE_OK;
    }
    if w.commit || w.gathered.len() >= GATHER_MAX {
        return flush(w);
    }
    ffi::SQLITE_OK
}

/// A method that sees the file as it is: what is gathered is written first, then the base's
/// method runs (`$missing` where the base has none).
macro_rules! flushed {
    ($name:ident, $method:ident, $missing:expr, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            let w = wal(file);
            let rc = flush(w);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            match methods(w).$method {
                Some(f) => f(w.inner, $($arg),*),
                None => $missing,
            }
        }
    };
}

flushed!(x_read, xRead, ffi::SQLITE_MISUSE, (data: *mut c_void, amount: c_int, offset: i64));
flushed!(x_truncate, xTruncate, ffi::SQLITE_MISUSE, (size: i64));
flushed!(x_sync, xSync, ffi::SQLITE_MISUSE, (flags: c_int));
flushed!(x_file_size, xFileSize, ffi::SQLITE_MISUSE, (size: *mut i64));
flushed!(x_lock, xLock, ffi::SQLITE_OK, (level: c_int));
flushed!(x_unlock, xUnlock, ffi::SQLITE_OK, (level: c_int));
flushed!(x_check_reserved_lock, xCheckReservedLock, ffi::SQLITE_OK, (out: *mut c_int));
flushed!(x_file_control, xFileControl, ffi::SQLITE_NOTFOUND, (op: c_int, arg: *mut c_void));

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    let w = wal(file);
    let flushed = flush(w);
    let closed = match methods(w).xClose {
        Some(close) => close(w.inner),
        None => ffi::SQLITE_OK,
    };
    std::ptr::drop_in_place(&mut w.gathered);
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let w = wal(file);
    methods(w).xSectorSize.map_or(4096, |f| f(w.inner))
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let w = wal(file);
    methods(w).xDeviceCharacteristics.map_or(0, |f| f(w.inner))
}

/// Version 1: SQLite maps shared memory and fetches pages through the database file only,
/// never through its WAL.
static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
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
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

#[cfg(test)]
thread_local! {
    /// Writes this thread made to WAL files (the tests count a commit's).
    static WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_write() {
    #[cfg(test)]
    WRITES.with(|n| n.set(n.get() + 1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    /// A folder of the test's own, removed when dropped.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(test: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("switchboard-vfs-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("dir");
            Dir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn writes() -> u64 {
        WRITES.with(|n| n.get())
    }

    fn store(dir: &Path) -> Connection {
        let c = open(&dir.join("t.db"), OpenFlags::default()).expect("open through the VFS");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.pragma_update(None, "synchronous", "NORMAL").expect("synchronous");
        c.pragma_update(None, "wal_autocheckpoint", 0).expect("no checkpoints");
        c.execute_batch(
            "CREATE TABLE m (thread TEXT, id INTEGER, body TEXT, ts INTEGER, PRIMARY KEY (thread, id));
             CREATE INDEX m_ts ON m(ts); CREATE INDEX m_body ON m(body)",
        )
        .expect("schema");
        c
    }

    /// The rows the file at `path` holds, opened through SQLite's default VFS (recovering its
    /// WAL if no connection has it open), once its integrity check passes.
    fn rows_checked(path: &Path) -> i64 {
        let c = Connection::open(path).expect("open through the default VFS");
        let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
        assert_eq!(ok, "ok");
        c.query_row("SELECT count(*) FROM m", [], |r| r.get(0)).expect("count")
    }

    fn insert(c: &Connection, i: i64) {
        c.execute(
            "INSERT INTO m VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![format!("t{}", i % 7), i, format!("body {i} {}", "x".repeat((i % 50) as usize)), i],
        )
        .expect("insert");
    }

    #[test]
    fn a_commit_of_several_pages_is_one_write() {
        let dir = Dir::new("one_write");
        let c = store(dir.path());
        insert(&c, 0);
        for i in 1..50 {
            let before = writes();
            insert(&c, i);
            // The table, its primary key and two indexes: four frames, eight writes without.
            assert_eq!(writes() - before, 1, "commit {i}");
        }
    }

    /// Another connection, through SQLite's default VFS as any other program would open the
    /// file, sees every commit the moment it is made: nothing it is told of is still in memory.
    #[test]
    fn every_commit_is_in_the_file_when_another_connection_looks() {
        let dir = Dir::new("in_the_file");
        let c = store(dir.path());
        let other = Connection::open(dir.path().join("t.db")).expect("other");
        for i in 0..300 {
            insert(&c, i);
            let (n, body): (i64, String) =
                other.query_row("SELECT count(*), max(body) FROM m WHERE id <= ?1", [i], |r| Ok((r.get(0)?, r.get(1)?))).expect("read");
            assert_eq!(n, i + 1);
            assert!(body.starts_with("body "), "{body}");
        }
    }

    /// The files as a crash would leave them right after a commit, opened fresh: SQLite's
    /// recovery checks every frame's checksum, so a frame written wrong, or a header rewritten
    /// after a spill and left unwritten, would lose the commits from it on.
    #[test]
    fn the_files_after_any_commit_recover_every_committed_row() {
        let dir = Dir::new("recover");
        let c = store(dir.path());
        // A tiny page cache: big transactions spill frames before their commit and then write
        // pages they already spilled again, which makes SQLite rewrite the checksums.
        c.pragma_update(None, "cache_size", 2).expect("cache");
        let mut expected = 0i64;
        for round in 0..6i64 {
            let tx = c.unchecked_transaction().expect("begin");
            for i in 0..(1 + round * 150) {
                insert(&tx, 10_000 * round + i);
                expected += 1;
                if i % 10 == 0 {
                    tx.execute("UPDATE m SET body = body || '!' WHERE thread = 't1'", []).expect("update");
                }
            }
            tx.commit().expect("commit");
            let crashed = dir.path().join(format!("crash{round}"));
            std::fs::create_dir(&crashed).expect("dir");
            for suffix in ["", "-wal"] {
                std::fs::copy(dir.path().join(format!("t.db{suffix}")), crashed.join(format!("t.db{suffix}"))).expect("copy");
            }
            assert_eq!(rows_checked(&crashed.join("t.db")), expected, "round {round}");
        }
    }

    /// A batch of many messages: more than the unix VFS writes in one call, and more than is
    /// gathered before it is written.
    #[test]
    fn a_commit_of_many_pages_is_written_whole() {
        let dir = Dir::new("many");
        let c = store(dir.path());
        let tx = c.unchecked_transaction().expect("begin");
        for i in 0..3000 {
            insert(&tx, i);
        }
        tx.commit().expect("commit");
        let wal = std::fs::metadata(dir.path().join("t.db-wal")).expect("wal").len();
        assert!(wal > GATHER_MAX as u64, "{wal} bytes of WAL");
        drop(c);
        assert_eq!(rows_checked(&dir.path().join("t.db")), 3000);
    }

    #[test]
    fn a_failed_transaction_leaves_nothing_behind() {
        let dir = Dir::new("failed");
        let c = store(dir.path());
        insert(&c, 1);
        let tx = c.unchecked_transaction().expect("begin");
        insert(&tx, 2);
        assert!(tx.execute("INSERT INTO m VALUES ('t1', 1, 'dup', 0)", []).is_err(), "the primary key refuses");
        tx.rollback().expect("rollback");
        insert(&c, 3);
        let other = Connection::open(dir.path().join("t.db")).expect("other");
        let ids: Vec<i64> =
            other.prepare("SELECT id FROM m ORDER BY id").expect("sql").query_map([], |r| r.get(0)).expect("rows").map(|r| r.expect("row")).collect();
        assert_eq!(ids, vec![1, 3]);
    }
}
