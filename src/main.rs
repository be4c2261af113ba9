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

fn main() {
    ensure_passive_openmp();
    std::process::exit(cli::main());
}
