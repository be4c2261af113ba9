//! The `icrl` binary: see `icrl --help` and src/cli.rs.

mod cli;

/// libtorch's OpenMP runtime reads OMP_WAIT_POLICY once, when the library loads (before `main`).
/// Spinning workers cost several-fold on small shared machines, so unless the user chose a
/// policy, re-execute once with PASSIVE set.
fn ensure_passive_openmp() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .exec();
    // exec only returns on failure; carry on with the default policy.
    eprintln!("warning: could not re-execute with OMP_WAIT_POLICY=PASSIVE: {err}");
}

/// glibc returns every freed block above its mmap threshold to the kernel, so each training
/// step's activations (a few MiB each) are page-faulted in again, zero-filled, on the next step:
/// 15-20% of a small model's step on 2 threads (`perf`: exc_page_fault, do_anonymous_page).
/// Keeping freed memory in the heap for reuse removes that. A user's own MALLOC_MMAP_THRESHOLD_
/// / MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_ (glibc's tunables) are left as they are.
fn keep_freed_memory_for_reuse() {
    const MIB: i32 = 1 << 20;
    for (var, param, value) in [
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 256 * MIB),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 1024 * MIB),
        ("MALLOC_TOP_PAD_", libc::M_TOP_PAD, 64 * MIB),
    ] {
        if std::env::var_os(var).is_none() {
            // SAFETY: mallopt only changes allocator parameters; called before other threads.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}

fn main() {
    // A write past the file-size limit (`ulimit -f`) fails with an I/O error that the run
    // reports and cleans up after (temporary files removed), instead of SIGXFSZ killing it.
    // SAFETY: setting a signal's disposition to "ignore" before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    ensure_passive_openmp();
    keep_freed_memory_for_reuse();
    std::process::exit(cli::main());
}
