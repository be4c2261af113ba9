//! Logging of training metrics behind the [`Logger`] trait (docs/architecture.md).
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
//! The project first used tensorboard-rs 0.5.9, and dropped it: `add_histogram` and
//! `add_text` are `unimplemented!()` (they panic), its writer thread panics on any I/O error
//! (a full disk would kill the run), `add_image` swaps height and width, and the one correct
//! piece left in use, its CRC-32C, pulled in protobuf 2 and an image crate for twenty lines. So
//! this module is the one TFRecord/protobuf path of the project:
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
pub mod hparams;
mod memory;
mod proto;
mod record;
mod sink;
mod tensorboard;

pub use crate::config::LogPolicy;
pub use event::{
    read_events, Event, EventHistogram, EventImage, EventValue, ValueData, FILE_VERSION,
    HISTOGRAM_BUCKETS,
};
pub use guard::GuardedLogger;
pub use memory::{LoggedImage, MemoryLogger, Record, RecordData};
pub use sink::{code_block, LogError, Logger};
pub use tensorboard::{TensorBoardLogger, DEFAULT_FLUSH_INTERVAL};

#[cfg(test)]
pub(crate) mod tests;

/// The `charts/` scalars of the episodes that ended in one rollout (a method's own training
/// episodes, not an evaluation): mean return, length and success, and the mean return of the
/// trials' first episodes and of their later ones (the in-context gain while training).
/// Nothing is logged for a rollout in which no episode ended.
pub fn episode_charts(
    logger: &mut dyn Logger,
    step: u64,
    episodes: &[sampler::EpisodeStats],
) -> Result<(), LogError> {
    let mean_of = |values: Vec<f64>| -> Option<f64> {
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let returns_where = |keep: &dyn Fn(usize) -> bool| {
        let values = episodes
            .iter()
            .filter(|e| keep(e.episode_index))
            .map(|e| e.ret);
        mean_of(values.collect())
    };
    let Some(ret) = returns_where(&|_| true) else {
        return Ok(());
    };
    logger.scalar("charts/episodic_return", step, ret)?;
    let lengths = episodes.iter().map(|e| e.length as f64).collect();
    logger.scalar(
        "charts/episodic_length",
        step,
        mean_of(lengths).unwrap_or(0.0),
    )?;
    let successes = episodes
        .iter()
        .map(|e| f64::from(u8::from(e.success)))
        .collect();
    logger.scalar("charts/success", step, mean_of(successes).unwrap_or(0.0))?;
    if let Some(first) = returns_where(&|i| i == 0) {
        logger.scalar("charts/return_first_episode", step, first)?;
    }
    if let Some(later) = returns_where(&|i| i > 0) {
        logger.scalar("charts/return_later_episodes", step, later)?;
    }
    Ok(())
}
