//! A small safe layer over the raw vectorscan bindings: compiled databases, one stream per
//! scanned text, and one scratch per thread.
//!
//! Why not the `vectorscan-rs` wrapper: its stream scanner borrows the scanner that borrows the
//! database, so a stream cannot live in a `'static` per-response filter, and its streaming
//! database cannot be compiled with a start-of-match horizon (needed for the measurement in
//! `bench/mask_bench.rs`). This module owns exactly what masking needs and nothing more.
//!
//! # Threads
//! A [`Database`] is immutable after compilation and vectorscan allows concurrent scans of one
//! database, so it is `Send + Sync` and shared through the [`super::Masker`]'s `Arc`. A scratch
//! region must not be used by two scans at once: each thread keeps one in a `thread_local`,
//! grown on first use for every database it meets (`hs_alloc_scratch` only reallocates when the
//! region is too small). With thread-per-core workers that is one scratch per worker and no lock.
//! A [`Stream`] is the state of one scanned text; it is owned by one filter on one thread.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr, CString};
use std::fmt;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vectorscan_rs_sys as hs;

/// Pattern flags (a subset of `HS_FLAG_*`).
pub const CASELESS: u32 = hs::HS_FLAG_CASELESS;
/// Report the leftmost start of each match (costly in streaming mode; see the bench).
pub const SOM_LEFTMOST: u32 = hs::HS_FLAG_SOM_LEFTMOST;
/// Database modes (a subset of `HS_MODE_*`).
pub const MODE_STREAM: u32 = hs::HS_MODE_STREAM;
/// Block mode: whole buffers, used to find match starts inside the held window.
pub const MODE_BLOCK: u32 = hs::HS_MODE_BLOCK;
/// Streaming with start-of-match tracking (only for the comparison in the bench).
pub const MODE_SOM_HORIZON_LARGE: u32 = hs::HS_MODE_SOM_HORIZON_LARGE;

/// A vectorscan failure: the error code, and the compiler's message when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsError {
    /// The `hs_error_t` value (negative), or 0 for errors raised on this side of the FFI.
    pub code: i32,
    /// Human-readable text.
    pub message: String,
    /// For compile errors: index of the failing pattern, when vectorscan names one.
    pub pattern: Option<usize>,
}

/// What vectorscan knows about one expression before compiling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExprInfo {
    /// Shortest possible match, in bytes.
    pub min_width: u32,
    /// Longest possible match in bytes; `None` when unbounded.
    pub max_width: Option<u32>,
}

/// A compiled, immutable pattern database.
pub struct Database {
    ptr: *mut hs::hs_database_t,
    /// Distinguishes databases in the per-thread scratch cache.
    id: u64,
}

/// The scan state of one text stream against one streaming [`Database`].
pub struct Stream {
    ptr: *mut hs::hs_stream_t,
    /// Keeps the database alive for as long as the stream state refers to it.
    db: Arc<Database>,
}

/// One pattern to compile: expression text (no delimiters), `HS_FLAG_*` bits, report id.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub expression: String,
    pub flags: u32,
    pub id: u32,
}

static NEXT_DB_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static SCRATCH: RefCell<ScratchCache> = const { RefCell::new(ScratchCache { ptr: ptr::null_mut(), fitted: Vec::new() }) };
}

/// This thread's scratch region and the databases it has been sized for.
struct ScratchCache {
    ptr: *mut hs::hs_scratch_t,
    fitted: Vec<u64>,
}

// === impl Database ===

impl Database {
    /// Compiles `patterns` into one database in `mode` (`MODE_STREAM`, `MODE_BLOCK`, …).
    pub fn compile(patterns: &[Pattern], mode: u32) -> Result<Database, VsError> {
        let mut exprs = Vec::with_capacity(patterns.len());
        for p in patterns {
            exprs.push(CString::new(p.expression.as_bytes()).map_err(|_| VsError {
                code: 0,
                message: "pattern contains a NUL byte".into(),
                pattern: Some(exprs.len()),
            })?);
        }
        let expr_ptrs: Vec<*const c_char> = exprs.iter().map(|e| e.as_ptr()).collect();
        let flags: Vec<c_uint> = patterns.iter().map(|p| p.flags).collect();
        let ids: Vec<c_uint> = patterns.iter().map(|p| p.id).collect();
        let count = c_uint::try_from(patterns.len()).map_err(|_| VsError {
            code: 0,
            message: "too many patterns".into(),
            pattern: None,
        })?;
        let mut db = ptr::null_mut();
        let mut err = ptr::null_mut();
        // SAFETY: the three arrays have `count` elements and outlive the call; `exprs` keeps the
        // NUL-terminated strings alive; `db` and `err` are valid out-pointers.
        let rc = unsafe {
            hs::hs_compile_multi(
                expr_ptrs.as_ptr(),
                flags.as_ptr(),
                ids.as_ptr(),
                count,
                mode,
                ptr::null(),
                &mut db,
                &mut err,
            )
        };
        if rc != hs::HS_SUCCESS as c_int {
            return Err(take_compile_error(rc, err));
        }
        Ok(Database {
            ptr: db,
            id: NEXT_DB_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Scans one whole buffer (block-mode databases only).
    pub fn scan_block<F: FnMut(u32, u64, u64)>(
        &self,
        data: &[u8],
        on_match: F,
    ) -> Result<(), VsError> {
        let len = scan_len(data)?;
        let db = self.ptr;
        with_scratch(self, |scratch| {
            let mut ctx = Ctx(on_match);
            // SAFETY: `db` and `scratch` are valid (scratch sized for `db` by `with_scratch`),
            // `data` is readable for `len` bytes, `ctx` outlives the call and matches the
            // trampoline's type parameter.
            let rc = unsafe {
                hs::hs_scan(
                    db,
                    data.as_ptr().cast(),
                    len,
                    0,
                    scratch,
                    Some(trampoline::<F>),
                    ctx_ptr(&mut ctx),
                )
            };
            check(rc, "scan")
        })
    }

    /// Size of the compiled bytecode (for logs and the bench).
    pub fn size(&self) -> usize {
        let mut size = 0usize;
        // SAFETY: `self.ptr` is a valid database, `size` a valid out-pointer.
        let rc = unsafe { hs::hs_database_size(self.ptr, &mut size) };
        if rc == hs::HS_SUCCESS as c_int {
            size
        } else {
            0
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from a successful compile and is freed once; streams hold an `Arc`
        // to their database, so none outlives it.
        unsafe { hs::hs_free_database(self.ptr) };
    }
}

// SAFETY: a compiled database is immutable; vectorscan documents concurrent scans of one
// database from several threads (each with its own scratch) as safe.
unsafe impl Send for Database {}
// SAFETY: as above: shared references only ever read the database.
unsafe impl Sync for Database {}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("id", &self.id)
            .field("bytes", &self.size())
            .finish()
    }
}

// === impl Stream ===

impl Stream {
    /// Opens a stream on a streaming-mode database.
    pub fn open(db: &Arc<Database>) -> Result<Stream, VsError> {
        let mut ptr = ptr::null_mut();
        // SAFETY: `db.ptr` is a valid database; `ptr` a valid out-pointer.
        let rc = unsafe { hs::hs_open_stream(db.ptr, 0, &mut ptr) };
        check(rc, "open stream")?;
        Ok(Stream {
            ptr,
            db: Arc::clone(db),
        })
    }

    /// Scans the next piece of the stream; `on_match(id, end)` gets stream offsets.
    pub fn scan<F: FnMut(u32, u64, u64)>(
        &mut self,
        data: &[u8],
        on_match: F,
    ) -> Result<(), VsError> {
        let len = scan_len(data)?;
        let stream = self.ptr;
        with_scratch(&self.db, |scratch| {
            let mut ctx = Ctx(on_match);
            // SAFETY: `stream` is open and owned by `self` (exclusive borrow); the rest as in
            // `Database::scan_block`.
            let rc = unsafe {
                hs::hs_scan_stream(
                    stream,
                    data.as_ptr().cast(),
                    len,
                    0,
                    scratch,
                    Some(trampoline::<F>),
                    ctx_ptr(&mut ctx),
                )
            };
            check(rc, "scan stream")
        })
    }

    /// Ends the text: reports matches that complete at end of data (`\b`, `$`), then resets the
    /// stream to offset 0 so it can scan the next text.
    pub fn finish<F: FnMut(u32, u64, u64)>(&mut self, on_match: F) -> Result<(), VsError> {
        let stream = self.ptr;
        with_scratch(&self.db, |scratch| {
            let mut ctx = Ctx(on_match);
            // SAFETY: as in `scan`; reset keeps the stream allocated and valid.
            let rc = unsafe {
                hs::hs_reset_stream(stream, 0, scratch, Some(trampoline::<F>), ctx_ptr(&mut ctx))
            };
            check(rc, "end stream")
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: `ptr` is open and closed once; with no callback, scratch may be null.
        unsafe { hs::hs_close_stream(self.ptr, ptr::null_mut(), None, ptr::null_mut()) };
    }
}

// SAFETY: the stream state is plain memory owned by this value; moving it to another thread is
// fine as long as only one thread uses it at a time, which `&mut self` on every use guarantees.
unsafe impl Send for Stream {}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").field("db", &self.db.id).finish()
    }
}

// === free functions ===

/// Asks vectorscan for an expression's match widths without compiling a database.
pub fn expression_info(expression: &str, flags: u32) -> Result<ExprInfo, VsError> {
    let expr = CString::new(expression).map_err(|_| VsError {
        code: 0,
        message: "pattern contains a NUL byte".into(),
        pattern: None,
    })?;
    let mut info = ptr::null_mut();
    let mut err = ptr::null_mut();
    // SAFETY: `expr` is NUL-terminated and outlives the call; out-pointers are valid.
    let rc = unsafe { hs::hs_expression_info(expr.as_ptr(), flags, &mut info, &mut err) };
    if rc != hs::HS_SUCCESS as c_int {
        return Err(take_compile_error(rc, err));
    }
    // SAFETY: on success `info` points to a malloc'ed `hs_expr_info_t` that we own.
    let (min_width, max_width) = unsafe { ((*info).min_width, (*info).max_width) };
    // SAFETY: allocated by the default misc allocator (malloc), freed once here.
    unsafe { libc::free(info.cast()) };
    Ok(ExprInfo {
        min_width,
        max_width: (max_width != c_uint::MAX).then_some(max_width),
    })
}

fn take_compile_error(rc: c_int, err: *mut hs::hs_compile_error_t) -> VsError {
    if err.is_null() {
        return VsError {
            code: rc,
            message: format!("vectorscan error {rc}"),
            pattern: None,
        };
    }
    // SAFETY: a non-null compile error holds a NUL-terminated message; we free it once.
    let (message, expression) = unsafe {
        (
            CStr::from_ptr((*err).message)
                .to_string_lossy()
                .into_owned(),
            (*err).expression,
        )
    };
    // SAFETY: `err` came from the compiler and is freed once.
    unsafe { hs::hs_free_compile_error(err) };
    VsError {
        code: rc,
        message,
        pattern: usize::try_from(expression).ok(),
    }
}

fn check(rc: c_int, what: &str) -> Result<(), VsError> {
    if rc == hs::HS_SUCCESS as c_int {
        Ok(())
    } else {
        Err(VsError {
            code: rc,
            message: format!("vectorscan {what} failed ({rc})"),
            pattern: None,
        })
    }
}

fn scan_len(data: &[u8]) -> Result<c_uint, VsError> {
    c_uint::try_from(data.len()).map_err(|_| VsError {
        code: 0,
        message: "chunk larger than 4 GiB".into(),
        pattern: None,
    })
}

/// Runs `f` with this thread's scratch, sized for `db`.
fn with_scratch<T>(
    db: &Database,
    f: impl FnOnce(*mut hs::hs_scratch_t) -> Result<T, VsError>,
) -> Result<T, VsError> {
    SCRATCH.with(|cell| {
        let mut cache = cell.try_borrow_mut().map_err(|_| VsError {
            code: 0,
            message: "re-entrant scan on one thread".into(),
            pattern: None,
        })?;
        if !cache.fitted.contains(&db.id) {
            // SAFETY: `cache.ptr` is null or a scratch this thread allocated; vectorscan grows
            // or replaces it in place and it stays valid for every database it was sized for.
            let rc = unsafe { hs::hs_alloc_scratch(db.ptr, &mut cache.ptr) };
            check(rc, "allocate scratch")?;
            if cache.fitted.len() >= 32 {
                // Old databases (config reloads) are forgotten; re-checking one costs a call.
                cache.fitted.clear();
            }
            cache.fitted.push(db.id);
        }
        f(cache.ptr)
    })
}

impl Drop for ScratchCache {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: allocated by `hs_alloc_scratch` on this thread, freed once at thread exit.
            unsafe { hs::hs_free_scratch(self.ptr) };
        }
    }
}

struct Ctx<F>(F);

fn ctx_ptr<F>(ctx: &mut Ctx<F>) -> *mut c_void {
    (ctx as *mut Ctx<F>).cast()
}

unsafe extern "C" fn trampoline<F: FnMut(u32, u64, u64)>(
    id: c_uint,
    from: c_ulonglong,
    to: c_ulonglong,
    _flags: c_uint,
    ctx: *mut c_void,
) -> c_int {
    // SAFETY: `ctx` is the `Ctx<F>` passed by the scan call that is running this callback.
    let ctx = unsafe { &mut *ctx.cast::<Ctx<F>>() };
    (ctx.0)(id, from, to);
    0
}
