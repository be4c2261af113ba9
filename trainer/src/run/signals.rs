//! Stop signals: SIGINT (Ctrl-C), SIGTERM (sent first by schedulers and on preemption) and
//! SIGUSR1 (which Slurm sends before the time limit with `--signal=USR1@T`).
//!
//! - The first one asks the running method to save a checkpoint at its next safe point and
//!   stop; `icrl train` then exits with 130 (SIGINT) or 143 (SIGTERM, SIGUSR1), see
//!   [`exit_code`].
//! - A second one, while the run is still on its way to that point, quits at once with exit
//!   code 1 (130 / 143 when the checkpoint is already saved) and no new checkpoint (the last saved one stays; `--resume` continues from it). It
//!   calls `_exit` straight from the signal handler: no Rust or C++ destructor and no
//!   `atexit` handler runs, so libtorch, possibly busy on other threads, is never touched. (The
//!   previous handler called `process::exit`, which ran libtorch's static destructors under
//!   its running threads: segfaults and "Invalid (backend, op) pair" panics.)
//!
//! The handler itself only updates atomics and calls `write`, `unlink` (of the temporary file
//! being written, see [`TempFileGuard`]) and `_exit`, all async-signal-safe. A process that forwards signals (the sweep) installs it in
//! [`Mode::Count`], where it only counts; the sweep forwards each signal once to its children.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};

/// What the handler does besides recording a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A training or data run: the first signal asks for a checkpoint and a clean stop, a
    /// second one quits at once (exit code 1).
    Run,
    /// Only count (a process that forwards signals to its children, the sweep).
    Count,
}

/// The signals handled, in the order of [`received`]'s counters.
pub const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1];

/// Exit code of a run stopped by a second signal without saving.
pub const QUIT_NOW_EXIT_CODE: i32 = 1;

static MODE: AtomicI32 = AtomicI32::new(0);
/// Set once the checkpoint the first signal asked for is on disk.
static SAVED: AtomicBool = AtomicBool::new(false);
static FIRST: AtomicI32 = AtomicI32::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);
/// The temporary file being written (a NUL-terminated path, or null), removed by a second
/// signal's immediate exit: see [`TempFileGuard`].
static TEMP_FILE: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());
static COUNTS: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

const MODE_RUN: i32 = 1;
const MODE_COUNT: i32 = 2;

/// Writes a fixed message to stderr from a signal handler (write is async-signal-safe).
fn write_stderr(message: &[u8]) {
    // SAFETY: write on fd 2 with a valid buffer; the result is ignored on purpose.
    unsafe {
        let _ = libc::write(2, message.as_ptr().cast(), message.len());
    }
}

extern "C" fn on_signal(signal: libc::c_int) {
    if let Some(i) = SIGNALS.iter().position(|&s| s == signal) {
        COUNTS[i].fetch_add(1, Ordering::SeqCst);
    }
    let before = TOTAL.fetch_add(1, Ordering::SeqCst);
    if before == 0 {
        FIRST.store(signal, Ordering::SeqCst);
    }
    if MODE.load(Ordering::SeqCst) != MODE_RUN {
        return;
    }
    if before == 0 {
        write_stderr(
            b"\nicrl: stop requested: saving a checkpoint at the next safe point, then exiting \
              (a second signal quits at once without saving)\n",
        );
    } else if SAVED.load(Ordering::SeqCst) {
        write_stderr(b"\nicrl: second stop signal: the checkpoint is saved; quitting now\n");
        remove_temp_file();
        // SAFETY: as below.
        unsafe { libc::_exit(exit_code()) };
    } else {
        write_stderr(
            b"\nicrl: second stop signal: quitting now without saving (exit code 1); the last \
              checkpoint is kept\n",
        );
        remove_temp_file();
        // SAFETY: _exit is async-signal-safe and ends every thread without running any
        // destructor or atexit handler, so libtorch is not touched.
        unsafe { libc::_exit(QUIT_NOW_EXIT_CODE) };
    }
}

/// Removes the registered temporary file, if any (unlink is async-signal-safe).
fn remove_temp_file() {
    let path = TEMP_FILE.load(Ordering::SeqCst);
    if !path.is_null() {
        // SAFETY: a registered path is a leaked, never freed, NUL-terminated string.
        unsafe {
            libc::unlink(path);
        }
    }
}

/// While alive, a second stop signal's immediate exit removes `path` (a checkpoint's or a
/// dataset's temporary file, which nothing else would clean up after `_exit`). One file at a
/// time: a newer guard replaces the registration.
pub struct TempFileGuard {
    path: *mut libc::c_char,
}

impl TempFileGuard {
    /// Registers `path`. The path's bytes are leaked on purpose (about 100 bytes per
    /// checkpoint or dataset written): the handler may read them on another thread at any
    /// time, so they are never freed.
    pub fn new(path: &std::path::Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let path = match std::ffi::CString::new(path.as_os_str().as_bytes()) {
            Ok(c) => c.into_raw(),
            // A path with a NUL byte cannot be a file name: nothing to register.
            Err(_) => std::ptr::null_mut(),
        };
        TEMP_FILE.store(path, Ordering::SeqCst);
        TempFileGuard { path }
    }
}

impl Drop for TempFileGuard {
    fn drop(&mut self) {
        // Unregister only our own file (a newer guard may have replaced it).
        let _ = TEMP_FILE.compare_exchange(
            self.path,
            std::ptr::null_mut(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

/// Installs the handler for [`SIGNALS`] (once per process; a later call may switch the mode).
/// Fails only if the system refuses the handler.
pub fn install(mode: Mode) -> std::io::Result<()> {
    MODE.store(
        match mode {
            Mode::Run => MODE_RUN,
            Mode::Count => MODE_COUNT,
        },
        Ordering::SeqCst,
    );
    static INSTALLED: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        for signal in SIGNALS {
            // SAFETY: a zeroed sigaction with our handler, an empty mask and SA_RESTART (so
            // blocking system calls such as read or waitpid resume after the handler).
            let rc = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut())
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
        }
        Ok(())
    });
    result.map_err(std::io::Error::from_raw_os_error)
}

/// Records that a checkpoint was saved after a stop signal: from now on a second signal
/// quits with the clean exit code ([`exit_code`]) instead of 1.
pub fn note_checkpoint_saved() {
    if interrupted() {
        SAVED.store(true, Ordering::SeqCst);
    }
}

/// True once a stop signal arrived.
pub fn interrupted() -> bool {
    TOTAL.load(Ordering::SeqCst) > 0
}

/// The first stop signal received, if any.
pub fn first() -> Option<i32> {
    match FIRST.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// How many times each of [`SIGNALS`] arrived.
pub fn received() -> [usize; 3] {
    [0, 1, 2].map(|i| COUNTS[i].load(Ordering::SeqCst))
}

/// The exit code of a process stopped cleanly by a signal: 130 after SIGINT, 143 after
/// SIGTERM or SIGUSR1 (the shell's 128 + signal number for SIGINT and SIGTERM; SIGUSR1 is a
/// polite SIGTERM, so it gets SIGTERM's code).
pub fn exit_code() -> i32 {
    match first() {
        Some(libc::SIGINT) | None => 130,
        Some(_) => 143,
    }
}

/// A name for messages: `SIGINT`, `SIGTERM`, `SIGUSR1`.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        _ => "signal",
    }
}

/// Work stopped by a stop signal before it could finish (`icrl data`, or a run stopped before
/// its first safe point); exit code [`exit_code`].
#[derive(Debug, thiserror::Error)]
#[error("stopped by {}: {what}", name(first().unwrap_or(libc::SIGINT)))]
pub struct Stopped {
    /// What was stopped and what is left (e.g. "dataset generation; no partial file kept").
    pub what: String,
}
