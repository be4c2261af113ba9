//! [`GuardedLogger`]: applies the run's [`LogPolicy`] to logging errors.

use std::collections::HashSet;
use std::io::Write;

use super::sink::{LogError, Logger};
use crate::config::LogPolicy;

/// Wraps a logger and applies a [`LogPolicy`]; never panics (not even when stderr is
/// closed).
///
/// - I/O errors: with [`LogPolicy::Stop`] they are returned; with [`LogPolicy::Continue`]
///   the first one is printed as a warning and every later call is a silent no-op.
/// - Invalid input (e.g. an image whose buffer does not match its size) is a bug of the
///   caller, not of the disk: with `Stop` it is returned; with `Continue` that one value is
///   skipped, with one warning per tag, and logging goes on.
pub struct GuardedLogger<L: Logger = Box<dyn Logger>> {
    inner: L,
    policy: LogPolicy,
    disabled: bool,
    first_error: Option<String>,
    warned_tags: HashSet<String>,
}

impl<L: Logger> GuardedLogger<L> {
    /// Wraps `inner`.
    pub fn new(inner: L, policy: LogPolicy) -> Self {
        Self {
            inner,
            policy,
            disabled: false,
            first_error: None,
            warned_tags: HashSet::new(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> LogPolicy {
        self.policy
    }

    /// True once an I/O error under [`LogPolicy::Continue`] has switched logging off.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// The message of the first I/O error seen, if any (for the run's final report).
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// The wrapped logger.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// Unwraps the logger.
    pub fn into_inner(self) -> L {
        self.inner
    }

    fn guard(&mut self, call: impl FnOnce(&mut L) -> Result<(), LogError>) -> Result<(), LogError> {
        if self.disabled {
            return Ok(());
        }
        let err = match call(&mut self.inner) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if err.is_io() && self.first_error.is_none() {
            self.first_error = Some(err.to_string());
        }
        match (self.policy, &err) {
            (LogPolicy::Stop, _) => Err(err),
            (LogPolicy::Continue, LogError::InvalidInput { tag, .. }) => {
                if self.warned_tags.insert(tag.clone()) {
                    let _ = writeln!(std::io::stderr(), "warning: {err} (value skipped)");
                }
                Ok(())
            }
            (LogPolicy::Continue, _) => {
                self.disabled = true;
                let _ = writeln!(
                    std::io::stderr(),
                    "warning: {err}; logging is off for the rest of the run"
                );
                Ok(())
            }
        }
    }
}

impl<L: Logger> Logger for GuardedLogger<L> {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<(), LogError> {
        self.guard(|l| l.scalar(tag, step, value))
    }
    fn histogram(&mut self, tag: &str, step: u64, values: &[f64]) -> Result<(), LogError> {
        self.guard(|l| l.histogram(tag, step, values))
    }
    fn image(
        &mut self,
        tag: &str,
        step: u64,
        rgb: &[u8],
        height: usize,
        width: usize,
    ) -> Result<(), LogError> {
        self.guard(|l| l.image(tag, step, rgb, height, width))
    }
    fn text(&mut self, tag: &str, step: u64, markdown: &str) -> Result<(), LogError> {
        self.guard(|l| l.text(tag, step, markdown))
    }
    fn plugin(
        &mut self,
        tag: &str,
        step: u64,
        plugin: &str,
        content: &[u8],
    ) -> Result<(), LogError> {
        self.guard(|l| l.plugin(tag, step, plugin, content))
    }
    fn flush(&mut self) -> Result<(), LogError> {
        self.guard(|l| l.flush())
    }
}
