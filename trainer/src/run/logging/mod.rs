//! Logging of training metrics behind the [`Logger`] trait (DESIGN.md §8).
//!
//! Implementations:
//! - [`TensorBoardLogger`]: TensorBoard event files (scalars, histograms, RGB images, markdown
//!   text), readable by `tensorboard --logdir runs`.
//! - [`MemoryLogger`]: keeps everything in memory, for tests.
//! - [`GuardedLogger`]: wraps another logger and applies the run's [`LogPolicy`] to I/O
//!   errors (stop the run cleanly, or warn once and continue without logging).
//!
//! # How the event files are written
//!
//! The user chose tensorboard-rs 0.5.9. What of it works is used: its CRC-32C
//! (`tensorboard_rs::masked_crc32c`), which frames and checks every record. The rest cannot be
//! used as is: `add_histogram` and `add_text` are `unimplemented!()` (they panic), its writer
//! thread panics on any I/O error (a full disk would kill the run), and `add_image` builds
//! the image with height and width swapped, so non-square images come out garbled. So this
//! module has its own small writer:
//!
//! - record framing (`record.rs`): TFRecord, `u64 length | masked CRC-32C(length) | data |
//!   masked CRC-32C(data)`, all little endian; the first record of a file is the event
//!   `file_version: "brain.Event:2"`;
//! - messages (`proto.rs`): a ~150-line protobuf encoder/decoder for the few TensorFlow
//!   messages involved (`Event`, `Summary`, `HistogramProto`, `Summary.Image`,
//!   `SummaryMetadata`, `TensorProto`), written from the protobuf wire-format spec and
//!   TensorFlow's `.proto` field numbers. The generated `tensorboard-proto` types would need
//!   a direct dependency on the old protobuf 2 runtime just to serialize, and the reader must
//!   not panic on corrupt input, which a tiny explicit decoder makes easy to guarantee;
//! - images are PNG (the `png` crate), `Summary.Image { height, width, colorspace: 3 }`;
//! - histograms: 30 equal-width buckets over the finite values ([`EventHistogram`]);
//! - text: the text plugin's format, `SummaryMetadata.plugin_data.plugin_name = "text"` and
//!   a scalar `DT_STRING` tensor whose `string_val` is the markdown.
//!
//! [`read_events`] reads a file back record by record, checking both CRCs of every record,
//! and is what the tests (and any tool that checks a run) use.

mod event;
mod guard;
mod memory;
mod proto;
mod record;
mod tensorboard;

use std::path::PathBuf;

pub use event::{
    read_events, Event, EventHistogram, EventImage, EventValue, ValueData, FILE_VERSION,
    HISTOGRAM_BUCKETS,
};
pub use guard::{GuardedLogger, LogPolicy};
pub use memory::{LoggedImage, MemoryLogger, Record, RecordData};
pub use tensorboard::{TensorBoardLogger, DEFAULT_FLUSH_INTERVAL};

/// An error from a logger or from [`read_events`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Reading or writing a log file failed (disk full, folder removed, permissions...).
    #[error("cannot {action} log file {}: {source}", path.display())]
    Io {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What was being done: "write", "flush", "create", "read", ...
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
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

#[cfg(test)]
pub(crate) mod tests;
