//! [`MemoryLogger`]: records everything in memory, for tests.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::sink::{check_image, LogError, Logger};

/// An RGB image as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedImage {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// HWC RGB bytes.
    pub rgb: Vec<u8>,
}

/// What one logging call recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordData {
    /// [`Logger::scalar`].
    Scalar(f64),
    /// [`Logger::histogram`]: the values as given.
    Histogram(Vec<f64>),
    /// [`Logger::image`].
    Image(LoggedImage),
    /// [`Logger::text`].
    Text(String),
    /// [`Logger::plugin`]: the plugin's name and its serialized data.
    Plugin(String, Vec<u8>),
}

/// One logging call.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The tag.
    pub tag: String,
    /// The step.
    pub step: u64,
    /// The value.
    pub data: RecordData,
}

#[derive(Default)]
struct State {
    records: Vec<Record>,
    flushes: usize,
    failure: Option<std::io::ErrorKind>,
}

/// Records every logging call in memory, in order. Clones share the same records, so a
/// test can keep one clone and hand another (boxed) to the code under test.
///
/// [`MemoryLogger::fail_with`] makes every later call fail with an I/O error, to test how
/// callers handle a full disk or a removed folder.
#[derive(Clone, Default)]
pub struct MemoryLogger {
    state: Arc<Mutex<State>>,
}

impl MemoryLogger {
    /// An empty logger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record so far, in logging order.
    pub fn records(&self) -> Vec<Record> {
        self.state.lock().records.clone()
    }

    /// The distinct tags logged so far, in order of first use.
    pub fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = Vec::new();
        for r in &self.state.lock().records {
            if !tags.contains(&r.tag) {
                tags.push(r.tag.clone());
            }
        }
        tags
    }

    fn select<T>(&self, tag: &str, f: impl Fn(&RecordData) -> Option<T>) -> Vec<(u64, T)> {
        self.state
            .lock()
            .records
            .iter()
            .filter(|r| r.tag == tag)
            .filter_map(|r| f(&r.data).map(|v| (r.step, v)))
            .collect()
    }

    /// `(step, value)` of every scalar logged under `tag`.
    pub fn scalars(&self, tag: &str) -> Vec<(u64, f64)> {
        self.select(tag, |d| match d {
            RecordData::Scalar(v) => Some(*v),
            _ => None,
        })
    }

    /// `(step, values)` of every histogram logged under `tag`.
    pub fn histograms(&self, tag: &str) -> Vec<(u64, Vec<f64>)> {
        self.select(tag, |d| match d {
            RecordData::Histogram(v) => Some(v.clone()),
            _ => None,
        })
    }

    /// `(step, image)` of every image logged under `tag`.
    pub fn images(&self, tag: &str) -> Vec<(u64, LoggedImage)> {
        self.select(tag, |d| match d {
            RecordData::Image(v) => Some(v.clone()),
            _ => None,
        })
    }

    /// `(step, markdown)` of every text logged under `tag`.
    pub fn texts(&self, tag: &str) -> Vec<(u64, String)> {
        self.select(tag, |d| match d {
            RecordData::Text(v) => Some(v.clone()),
            _ => None,
        })
    }

    /// How many times [`Logger::flush`] succeeded.
    pub fn flushes(&self) -> usize {
        self.state.lock().flushes
    }

    /// From now on every call fails with an I/O error of this kind (`None`: succeed again).
    pub fn fail_with(&self, kind: Option<std::io::ErrorKind>) {
        self.state.lock().failure = kind;
    }

    fn push(&self, tag: &str, step: u64, data: RecordData) -> Result<(), LogError> {
        let mut s = self.state.lock();
        if let Some(kind) = s.failure {
            return Err(LogError::Io {
                path: PathBuf::from("<memory>"),
                action: "write",
                error: std::io::Error::new(kind, "injected failure"),
            });
        }
        s.records.push(Record {
            tag: tag.to_string(),
            step,
            data,
        });
        Ok(())
    }
}

impl Logger for MemoryLogger {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<(), LogError> {
        self.push(tag, step, RecordData::Scalar(value))
    }

    fn histogram(&mut self, tag: &str, step: u64, values: &[f64]) -> Result<(), LogError> {
        self.push(tag, step, RecordData::Histogram(values.to_vec()))
    }

    fn image(
        &mut self,
        tag: &str,
        step: u64,
        rgb: &[u8],
        height: usize,
        width: usize,
    ) -> Result<(), LogError> {
        check_image(tag, rgb, height, width)?;
        self.push(
            tag,
            step,
            RecordData::Image(LoggedImage {
                height,
                width,
                rgb: rgb.to_vec(),
            }),
        )
    }

    fn text(&mut self, tag: &str, step: u64, markdown: &str) -> Result<(), LogError> {
        self.push(tag, step, RecordData::Text(markdown.to_string()))
    }

    fn plugin(
        &mut self,
        tag: &str,
        step: u64,
        plugin: &str,
        content: &[u8],
    ) -> Result<(), LogError> {
        self.push(
            tag,
            step,
            RecordData::Plugin(plugin.to_string(), content.to_vec()),
        )
    }

    fn flush(&mut self) -> Result<(), LogError> {
        let mut s = self.state.lock();
        if let Some(kind) = s.failure {
            return Err(LogError::Io {
                path: PathBuf::from("<memory>"),
                action: "flush",
                error: std::io::Error::new(kind, "injected failure"),
            });
        }
        s.flushes += 1;
        Ok(())
    }
}
