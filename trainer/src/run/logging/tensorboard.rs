//! [`TensorBoardLogger`]: writes one TensorBoard event file.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::event::{encode_file_version, encode_summary, now, EventHistogram, Payload};
use super::record::frame;
use super::sink::{check_image, LogError, Logger};

/// Buffered events are flushed at least this often (on the next logging call).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// Distinguishes several loggers opened by one process in the same second.
static FILE_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Writes TensorBoard event files: `events.out.tfevents.<secs>.<hostname>.<pid>.<n>` in the
/// log folder (TensorBoard picks up any file whose name contains `tfevents`; the pid and
/// sequence number, as TensorFlow adds them, keep two loggers from ever sharing a file).
///
/// Writes are buffered and flushed every [`DEFAULT_FLUSH_INTERVAL`] and on [`Logger::flush`]
/// and drop. After the first I/O error the logger is *broken*: every later call returns an
/// error naming the file, so a half-written record is never followed by more data. A flush
/// also checks that the file is still in place: on Linux, writing into a file whose folder
/// was removed "succeeds" but the data is lost, so that is reported as an error too.
pub struct TensorBoardLogger {
    path: PathBuf,
    out: BufWriter<Box<dyn Write + Send>>,
    /// The open file's identity, to detect that it was deleted or replaced.
    file_id: Option<(u64, u64)>,
    last_flush: Instant,
    flush_interval: Duration,
    broken: Option<(io::ErrorKind, String)>,
}

fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

impl TensorBoardLogger {
    /// Creates `dir` (and parents) if needed, creates a new event file in it and writes the
    /// `brain.Event:2` file-version record.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, LogError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            action: "create log folder",
            error: source,
        })?;
        let secs = now() as u64;
        let name = format!(
            "events.out.tfevents.{secs:010}.{}.{}.{}",
            hostname(),
            std::process::id(),
            FILE_SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let io_err = |action, source| LogError::Io {
            path: path.clone(),
            action,
            error: source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err("create", e))?;
        let id = file.metadata().map_err(|e| io_err("stat", e))?;
        let mut logger = Self::from_writer(path.clone(), Box::new(file))?;
        logger.file_id = file_id(&id);
        Ok(logger)
    }

    /// A logger writing event records to any writer; `path` is only used in messages.
    /// (Used by tests to inject failing writers, e.g. one that reports a full disk.)
    pub fn from_writer(path: PathBuf, writer: Box<dyn Write + Send>) -> Result<Self, LogError> {
        let mut logger = Self {
            path,
            out: BufWriter::with_capacity(1 << 16, writer),
            file_id: None,
            last_flush: Instant::now(),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            broken: None,
        };
        logger.write_record(&encode_file_version(now()))?;
        logger.flush()?;
        Ok(logger)
    }

    /// Sets how often buffered events are flushed (zero: after every event).
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&mut self, action: &'static str, source: io::Error) -> LogError {
        self.broken = Some((source.kind(), source.to_string()));
        LogError::Io {
            path: self.path.clone(),
            action,
            error: source,
        }
    }

    fn check_broken(&self) -> Result<(), LogError> {
        match &self.broken {
            Some((kind, msg)) => Err(LogError::Io {
                path: self.path.clone(),
                action: "write (after an earlier error)",
                error: io::Error::new(*kind, msg.clone()),
            }),
            None => Ok(()),
        }
    }

    fn write_record(&mut self, data: &[u8]) -> Result<(), LogError> {
        self.check_broken()?;
        if let Err(e) = self.out.write_all(&frame(data)) {
            return Err(self.fail("write", e));
        }
        if self.last_flush.elapsed() >= self.flush_interval {
            self.flush()?;
        }
        Ok(())
    }

    fn summary(&mut self, tag: &str, step: u64, payload: Payload<'_>) -> Result<(), LogError> {
        let step = i64::try_from(step).map_err(|_| LogError::InvalidInput {
            tag: tag.to_string(),
            reason: format!("step {step} does not fit TensorBoard's int64"),
        })?;
        self.write_record(&encode_summary(now(), step, tag, &payload))
    }

    /// Verifies that the path still names the file we have open.
    fn check_still_there(&self) -> io::Result<()> {
        let Some(id) = self.file_id else {
            return Ok(());
        };
        let meta = std::fs::metadata(&self.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("event file is gone (folder removed?): {e}"),
            )
        })?;
        if file_id(&meta) != Some(id) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "event file was replaced",
            ));
        }
        Ok(())
    }
}

impl Logger for TensorBoardLogger {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<(), LogError> {
        self.summary(tag, step, Payload::Scalar(value as f32))
    }

    fn histogram(&mut self, tag: &str, step: u64, values: &[f64]) -> Result<(), LogError> {
        let h = EventHistogram::from_values(values);
        self.summary(tag, step, Payload::Histogram(&h))
    }

    fn image(
        &mut self,
        tag: &str,
        step: u64,
        rgb: &[u8],
        height: usize,
        width: usize,
    ) -> Result<(), LogError> {
        let (h, w) = check_image(tag, rgb, height, width)?;
        let png = encode_png(rgb, h, w).map_err(|reason| LogError::InvalidInput {
            tag: tag.to_string(),
            reason,
        })?;
        self.summary(
            tag,
            step,
            Payload::Png {
                png: &png,
                height: h,
                width: w,
            },
        )
    }

    fn text(&mut self, tag: &str, step: u64, markdown: &str) -> Result<(), LogError> {
        self.summary(tag, step, Payload::Text(markdown))
    }

    fn plugin(
        &mut self,
        tag: &str,
        step: u64,
        plugin: &str,
        content: &[u8],
    ) -> Result<(), LogError> {
        self.summary(tag, step, Payload::Plugin { plugin, content })
    }

    fn flush(&mut self) -> Result<(), LogError> {
        self.check_broken()?;
        if let Err(e) = self.out.flush() {
            return Err(self.fail("flush", e));
        }
        if let Err(e) = self.check_still_there() {
            return Err(self.fail("flush", e));
        }
        self.last_flush = Instant::now();
        Ok(())
    }
}

impl Drop for TensorBoardLogger {
    fn drop(&mut self) {
        if self.broken.is_none() {
            // Errors cannot be returned from drop; callers who care call flush() first.
            let _ = self.out.flush();
        }
    }
}

/// Encodes HWC RGB8 pixels (already size-checked) as PNG.
fn encode_png(rgb: &[u8], height: u32, width: u32) -> Result<Vec<u8>, String> {
    let mut png = Vec::new();
    let mut enc = png::Encoder::new(&mut png, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .map_err(|e| format!("PNG encoding failed: {e}"))?;
    w.write_image_data(rgb)
        .map_err(|e| format!("PNG encoding failed: {e}"))?;
    w.finish()
        .map_err(|e| format!("PNG encoding failed: {e}"))?;
    Ok(png)
}
