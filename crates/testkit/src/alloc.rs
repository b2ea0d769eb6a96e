//! A counting global allocator: how the data-path tests prove "no allocation per packet".
//!
//! A test binary installs it once:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: cloudproxy_testkit::alloc::CountingAllocator =
//!     cloudproxy_testkit::alloc::CountingAllocator;
//! ```
//!
//! and measures a window with [`count_on_this_thread`] (a sans-IO core driven by the test's
//! own thread) or [`count_on_threads_named`] (event loops on threads of their own: the relay's
//! `relay-shard-N`, the SDK session's runtime thread). Only allocations and reallocations
//! count, never frees. One window at a time: both take a process-wide lock, so parallel tests
//! cannot add to each other's counts; a test whose set-up runs on threads another test counts
//! holds [`serial`] throughout. `NO_ALLOC_BACKTRACE=1` prints a backtrace of the first
//! allocations counted in a window.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The allocator: counts, then forwards to the system allocator.
pub struct CountingAllocator;

/// What counts: nothing, the threads that switched counting on for themselves, or threads
/// whose name starts with [`PREFIX`].
static MODE: AtomicU8 = AtomicU8::new(OFF);
const OFF: u8 = 0;
const THIS_THREAD: u8 = 1;
const NAMED: u8 = 2;
/// The thread-name prefix of [`NAMED`], as a `&'static str`'s parts.
static PREFIX: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static PREFIX_LEN: AtomicUsize = AtomicUsize::new(0);
/// Allocations and reallocations counted in the current window.
static COUNT: AtomicU64 = AtomicU64::new(0);
/// Print a backtrace for the first few counted allocations (`NO_ALLOC_BACKTRACE=1`).
static TRACE: AtomicBool = AtomicBool::new(false);
static TRACED: AtomicU64 = AtomicU64::new(0);
const MAX_TRACES: u64 = 5;
/// One window at a time.
static WINDOW: Mutex<()> = Mutex::new(());
/// One test at a time, for the tests that hold [`serial`].
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    // `const` initialisation: reading these inside the allocator never allocates.
    /// This thread counts ([`THIS_THREAD`]).
    static COUNTING_HERE: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread prints a backtrace (which allocates itself).
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread's name starts with the prefix. The name is read with
/// `prctl(PR_GET_NAME)` into a stack buffer: no allocation.
fn thread_named_like_prefix() -> bool {
    let ptr = PREFIX.load(Ordering::Acquire);
    let len = PREFIX_LEN.load(Ordering::Acquire);
    if ptr.is_null() {
        return false;
    }
    // SAFETY: PREFIX and PREFIX_LEN are set together from one `&'static str` before MODE
    // turns NAMED (and only changed while no window is open), so they describe live bytes.
    let prefix = unsafe { std::slice::from_raw_parts(ptr, len) };
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into the buffer.
    let rc = unsafe {
        libc::prctl(
            libc::PR_GET_NAME,
            name.as_mut_ptr() as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    rc == 0 && name.starts_with(prefix)
}

impl CountingAllocator {
    fn record(&self) {
        let counts = match MODE.load(Ordering::Relaxed) {
            OFF => false,
            THIS_THREAD => COUNTING_HERE.try_with(Cell::get).unwrap_or(false),
            _ => thread_named_like_prefix(),
        };
        if !counts || IN_TRACE.try_with(Cell::get).unwrap_or(true) {
            return;
        }
        COUNT.fetch_add(1, Ordering::Relaxed);
        if TRACE.load(Ordering::Relaxed) && TRACED.fetch_add(1, Ordering::Relaxed) < MAX_TRACES {
            IN_TRACE.with(|t| t.set(true));
            let bt = std::backtrace::Backtrace::force_capture();
            let thread = std::thread::current();
            eprintln!(
                "counted allocation on thread {:?}:\n{bt}",
                thread.name().unwrap_or("?")
            );
            IN_TRACE.with(|t| t.set(false));
        }
    }
}

// SAFETY: every method only counts, then forwards to the system allocator, which is a
// GlobalAlloc.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.record();
        // SAFETY: forwarded unchanged: the caller upholds GlobalAlloc::alloc's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.record();
        // SAFETY: forwarded unchanged: the caller upholds GlobalAlloc::alloc_zeroed's contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.record();
        // SAFETY: forwarded unchanged: the caller upholds GlobalAlloc::realloc's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged: the caller upholds GlobalAlloc::dealloc's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// An open measurement window; [`Window::finish`] closes it and gives the count. For code
/// that cannot run inside a closure (an `async` loop); the closures below are built on it.
pub struct Window {
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl Window {
    /// Takes the lock and zeroes the count; counting starts when the caller sets [`MODE`].
    fn open(mode: u8) -> Window {
        let lock = WINDOW.lock().unwrap_or_else(|e| e.into_inner());
        TRACE.store(
            std::env::var_os("NO_ALLOC_BACKTRACE").is_some_and(|v| v == "1"),
            Ordering::Relaxed,
        );
        TRACED.store(0, Ordering::Relaxed);
        COUNT.store(0, Ordering::SeqCst);
        MODE.store(mode, Ordering::SeqCst);
        Window { _lock: lock }
    }

    /// Counts the allocations this thread makes until [`Window::finish`].
    pub fn this_thread() -> Window {
        let window = Window::open(OFF);
        COUNTING_HERE.with(|c| c.set(true));
        MODE.store(THIS_THREAD, Ordering::SeqCst);
        window
    }

    /// Counts the allocations of every thread whose name starts with `prefix` (1 to 15 bytes:
    /// what Linux keeps of a thread's name) until [`Window::finish`].
    pub fn threads_named(prefix: &'static str) -> Window {
        assert!(
            !prefix.is_empty() && prefix.len() <= 15,
            "a thread name prefix of 1 to 15 bytes"
        );
        let window = Window::open(OFF);
        PREFIX_LEN.store(prefix.len(), Ordering::Release);
        PREFIX.store(prefix.as_ptr().cast_mut(), Ordering::Release);
        MODE.store(NAMED, Ordering::SeqCst);
        window
    }

    /// Stops counting; the allocations counted since the window opened.
    pub fn finish(self) -> u64 {
        MODE.store(OFF, Ordering::SeqCst);
        COUNTING_HERE.with(|c| c.set(false));
        COUNT.load(Ordering::SeqCst)
    }
}

/// Held for a whole test whose set-up runs on counted threads (its relay's `relay-shard-N`
/// starting, its client joining): while it is held no other such test runs, so no other
/// test's set-up lands in this test's window. Windows on the calling thread need not hold it.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` counting the allocations made on this thread, and returns them with `f`'s result.
pub fn count_on_this_thread<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let window = Window::this_thread();
    let out = f();
    (window.finish(), out)
}

/// Runs `f` counting the allocations made on every thread whose name starts with `prefix`
/// (see [`Window::threads_named`]), and returns them with `f`'s result. The calling thread
/// does not count unless it is so named.
pub fn count_on_threads_named<T>(prefix: &'static str, f: impl FnOnce() -> T) -> (u64, T) {
    let window = Window::threads_named(prefix);
    let out = f();
    (window.finish(), out)
}
