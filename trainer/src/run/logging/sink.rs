//! The [`Logger`] trait every sink implements, its error type and the checks sinks share.

use std::path::PathBuf;

/// An error from a logger or from [`super::read_events`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Reading or writing a log file failed (disk full, folder removed, permissions...).
    // The I/O error is part of the message, not a `source`: anyhow's `{:#}` would print it
    // twice.
    #[error("cannot {action} log file {}: {error}", path.display())]
    Io {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What was being done: "write", "flush", "create", "read", ...
        action: &'static str,
        /// The underlying error.
        error: std::io::Error,
    },
    /// An event file is damaged: bad CRC, truncated record, undecodable event.
    #[error("corrupt event file {}: record {record} at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The event file.
        path: PathBuf,
        /// Index of the bad record (0 = the file-version record).
        record: usize,
        /// Byte offset of the bad record in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The caller passed something that cannot be logged (e.g. an image whose buffer does
    /// not match its dimensions). Nothing was written.
    #[error("cannot log '{tag}': {reason}")]
    InvalidInput {
        /// The tag of the rejected value.
        tag: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl LogError {
    /// True for errors of the log storage itself (I/O), as opposed to bad input.
    pub fn is_io(&self) -> bool {
        matches!(self, LogError::Io { .. })
    }
}

/// A sink for training metrics. Steps are the trainer's global step (environment steps);
/// tags are slash-separated (`charts/episodic_return`, `losses/policy`, ...). No method
/// panics: failures are returned as [`LogError`].
pub trait Logger: Send {
    /// Logs one scalar. (TensorBoard stores it as f32.)
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<(), LogError>;

    /// Logs the distribution of `values` (non-finite values are left out by TensorBoard
    /// writers, see [`EventHistogram::from_values`]).
    fn histogram(&mut self, tag: &str, step: u64, values: &[f64]) -> Result<(), LogError>;

    /// Logs an RGB image: `rgb` holds `height * width * 3` bytes, row-major, HWC
    /// (`rgb[(y * width + x) * 3 + c]`). Height and width must be non-zero.
    fn image(
        &mut self,
        tag: &str,
        step: u64,
        rgb: &[u8],
        height: usize,
        width: usize,
    ) -> Result<(), LogError>;

    /// Logs markdown text, shown by TensorBoard's Text tab (use [`code_block`] for
    /// verbatim text such as a config).
    fn text(&mut self, tag: &str, step: u64, markdown: &str) -> Result<(), LogError>;

    /// Logs a TensorBoard plugin's serialized data under `tag` (used for the HParams
    /// plugin's session and experiment summaries, see [`super::hparams`]).
    fn plugin(
        &mut self,
        tag: &str,
        step: u64,
        plugin: &str,
        content: &[u8],
    ) -> Result<(), LogError>;

    /// Writes out anything buffered.
    fn flush(&mut self) -> Result<(), LogError>;
}

impl<L: Logger + ?Sized> Logger for Box<L> {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<(), LogError> {
        (**self).scalar(tag, step, value)
    }
    fn histogram(&mut self, tag: &str, step: u64, values: &[f64]) -> Result<(), LogError> {
        (**self).histogram(tag, step, values)
    }
    fn image(
        &mut self,
        tag: &str,
        step: u64,
        rgb: &[u8],
        height: usize,
        width: usize,
    ) -> Result<(), LogError> {
        (**self).image(tag, step, rgb, height, width)
    }
    fn text(&mut self, tag: &str, step: u64, markdown: &str) -> Result<(), LogError> {
        (**self).text(tag, step, markdown)
    }
    fn plugin(
        &mut self,
        tag: &str,
        step: u64,
        plugin: &str,
        content: &[u8],
    ) -> Result<(), LogError> {
        (**self).plugin(tag, step, plugin, content)
    }
    fn flush(&mut self) -> Result<(), LogError> {
        (**self).flush()
    }
}

/// Checks an image's buffer against its dimensions; returns them as u32.
pub(crate) fn check_image(
    tag: &str,
    rgb: &[u8],
    height: usize,
    width: usize,
) -> Result<(u32, u32), LogError> {
    let bad = |reason: String| LogError::InvalidInput {
        tag: tag.to_string(),
        reason,
    };
    if height == 0 || width == 0 {
        return Err(bad(format!(
            "image of size {height}x{width} (height x width) is empty"
        )));
    }
    let (Ok(h), Ok(w)) = (u32::try_from(height), u32::try_from(width)) else {
        return Err(bad(format!("image of size {height}x{width} is too large")));
    };
    let expected = height.checked_mul(width).and_then(|n| n.checked_mul(3));
    if expected != Some(rgb.len()) {
        return Err(bad(format!(
            "image of {height}x{width} (height x width) RGB needs {} bytes, got {}",
            expected.map_or_else(|| "too many".to_string(), |n| n.to_string()),
            rgb.len()
        )));
    }
    Ok((h, w))
}

/// Wraps `text` in a fenced markdown code block (tagged with `lang`, e.g. `ron`) so that
/// TensorBoard's text tab shows it verbatim; the fence is longer than any run of backticks
/// inside the text.
pub fn code_block(lang: &str, text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    let nl = if text.ends_with('\n') { "" } else { "\n" };
    format!("{fence}{lang}\n{text}{nl}{fence}\n")
}
