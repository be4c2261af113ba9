//! The stop-signal handler in counting mode (its own test binary: the counters are global to
//! the process and would stop any run tested beside them).

use trainer::run::signals::{self, Mode};

#[test]
fn counted_signals_are_recorded_and_set_the_exit_code() {
    signals::install(Mode::Count).unwrap();
    assert!(!signals::interrupted());
    assert_eq!(signals::exit_code(), 130);
    // SAFETY: raise delivers the signal to this thread; in counting mode the handler only
    // counts (without a handler, SIGTERM would end the test binary).
    unsafe {
        libc::raise(libc::SIGTERM);
        libc::raise(libc::SIGUSR1);
        libc::raise(libc::SIGTERM);
    }
    assert!(signals::interrupted());
    assert_eq!(signals::first(), Some(libc::SIGTERM));
    assert_eq!(signals::received(), [0, 2, 1]);
    assert_eq!(signals::exit_code(), 143);
    assert_eq!(signals::name(libc::SIGUSR1), "SIGUSR1");
}
