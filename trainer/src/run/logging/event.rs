//! TensorBoard `Event` records: encoding for the writer and a checking reader.

use std::path::Path;

use super::proto::{field as f, Decoder, Encoder, Wire, DT_FLOAT, DT_STRING};
use super::record::{split_records, OVERHEAD};
use super::sink::LogError;

/// The `file_version` that starts every event file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Number of equal-width buckets of a histogram summary (TensorBoard's own default).
pub const HISTOGRAM_BUCKETS: usize = 30;

/// One decoded event of an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch when the event was written.
    pub wall_time: f64,
    /// Global step (0 for the file-version event).
    pub step: i64,
    /// `Some("brain.Event:2")` for the first event of a file, else `None`.
    pub file_version: Option<String>,
    /// The summary values the event carries (empty for the file-version event).
    pub values: Vec<EventValue>,
}

/// One `Summary.Value`, decoded enough for tests and tools.
#[derive(Debug, Clone, PartialEq)]
pub struct EventValue {
    /// The TensorBoard tag, e.g. `charts/episodic_return`.
    pub tag: String,
    /// `SummaryMetadata.plugin_data.plugin_name` when present (e.g. `text`).
    pub plugin_name: Option<String>,
    /// The value itself.
    pub data: ValueData,
}

/// The payload of a summary value.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueData {
    /// `simple_value` (TensorBoard stores scalars as f32).
    Scalar(f32),
    /// An encoded image.
    Image(EventImage),
    /// A `HistogramProto`.
    Histogram(EventHistogram),
    /// A `DT_STRING` tensor: the strings of its `string_val` (text plugin data).
    Text(Vec<String>),
    /// A tensor of another dtype (raw `DataType` enum value); content not decoded.
    Tensor {
        /// The `tensorflow.DataType` number.
        dtype: u64,
    },
    /// A value kind this reader does not decode (audio, old-style histograms, ...).
    Other,
}

/// A `Summary.Image`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventImage {
    /// Height in pixels, as stored in the summary.
    pub height: u32,
    /// Width in pixels, as stored in the summary.
    pub width: u32,
    /// Channels (3 = RGB).
    pub colorspace: u32,
    /// The encoded image (PNG for images written by this crate).
    pub encoded: Vec<u8>,
}

/// A `HistogramProto`: bucket `i` counts values in `[bucket_limits[i-1], bucket_limits[i])`
/// (the first from `min`, the last up to and including `max`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventHistogram {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub num: f64,
    /// Sum of the values.
    pub sum: f64,
    /// Sum of the squared values.
    pub sum_squares: f64,
    /// Right edge of each bucket.
    pub bucket_limits: Vec<f64>,
    /// Count of each bucket.
    pub buckets: Vec<f64>,
}

impl EventHistogram {
    /// Summarises `values` into [`HISTOGRAM_BUCKETS`] equal-width buckets between their
    /// minimum and maximum. Non-finite values (NaN, ±inf) are left out: TensorBoard cannot
    /// draw them, and `num` counts only the values that were kept.
    pub fn from_values(values: &[f64]) -> Self {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            // One empty bucket keeps TensorBoard's histogram compression happy.
            return Self {
                bucket_limits: vec![0.0],
                buckets: vec![0.0],
                ..Self::default()
            };
        }
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum = finite.iter().sum();
        let sum_squares = finite.iter().map(|v| v * v).sum();
        let num = finite.len() as f64;
        if min == max {
            return Self {
                min,
                max,
                num,
                sum,
                sum_squares,
                bucket_limits: vec![max],
                buckets: vec![num],
            };
        }
        let n = HISTOGRAM_BUCKETS;
        // Scale before subtracting so that (max - min) cannot overflow to infinity.
        let width = max / n as f64 - min / n as f64;
        let mut limits: Vec<f64> = (1..=n).map(|k| min + width * k as f64).collect();
        limits[n - 1] = max;
        let mut counts = vec![0.0; n];
        for &v in &finite {
            // The bucket whose [previous limit, limit) holds v; max goes to the last one.
            let i = limits.partition_point(|&l| l <= v).min(n - 1);
            counts[i] += 1.0;
        }
        Self {
            min,
            max,
            num,
            sum,
            sum_squares,
            bucket_limits: limits,
            buckets: counts,
        }
    }
}

/// Wall-clock seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The serialized `Event { wall_time, file_version: "brain.Event:2" }`.
pub(crate) fn encode_file_version(wall_time: f64) -> Vec<u8> {
    let mut e = Encoder::new();
    e.double(f::EVENT_WALL_TIME, wall_time);
    e.string(f::EVENT_FILE_VERSION, FILE_VERSION);
    e.finish()
}

/// The payload of one summary value (everything but its tag).
pub(crate) enum Payload<'a> {
    Scalar(f32),
    Histogram(&'a EventHistogram),
    /// PNG bytes with the image's true height and width.
    Png {
        png: &'a [u8],
        height: u32,
        width: u32,
    },
    Text(&'a str),
    /// A plugin's own serialized data (e.g. the HParams plugin's), carried in the value's
    /// metadata with an empty float tensor, as TensorBoard's own writers do.
    Plugin {
        plugin: &'a str,
        content: &'a [u8],
    },
}

/// The serialized `Event { wall_time, step, summary { value { tag, payload } } }`.
pub(crate) fn encode_summary(
    wall_time: f64,
    step: i64,
    tag: &str,
    payload: &Payload<'_>,
) -> Vec<u8> {
    let mut e = Encoder::new();
    e.double(f::EVENT_WALL_TIME, wall_time);
    e.varint(f::EVENT_STEP, step as u64);
    e.message(f::EVENT_SUMMARY, |s| {
        s.message(f::SUMMARY_VALUE, |v| {
            v.string(f::VALUE_TAG, tag);
            match payload {
                Payload::Scalar(x) => v.float(f::VALUE_SIMPLE_VALUE, *x),
                Payload::Histogram(h) => v.message(f::VALUE_HISTO, |m| {
                    m.double(f::HISTO_MIN, h.min);
                    m.double(f::HISTO_MAX, h.max);
                    m.double(f::HISTO_NUM, h.num);
                    m.double(f::HISTO_SUM, h.sum);
                    m.double(f::HISTO_SUM_SQUARES, h.sum_squares);
                    m.packed_doubles(f::HISTO_BUCKET_LIMIT, &h.bucket_limits);
                    m.packed_doubles(f::HISTO_BUCKET, &h.buckets);
                }),
                Payload::Png { png, height, width } => v.message(f::VALUE_IMAGE, |m| {
                    m.varint(f::IMAGE_HEIGHT, u64::from(*height));
                    m.varint(f::IMAGE_WIDTH, u64::from(*width));
                    m.varint(f::IMAGE_COLORSPACE, 3);
                    m.bytes(f::IMAGE_ENCODED, png);
                }),
                Payload::Text(text) => {
                    // The text plugin's format: plugin_name "text", a scalar DT_STRING tensor.
                    v.message(f::VALUE_METADATA, |m| {
                        m.message(f::META_PLUGIN_DATA, |p| p.string(f::PLUGIN_NAME, "text"));
                    });
                    v.message(f::VALUE_TENSOR, |t| {
                        t.varint(f::TENSOR_DTYPE, DT_STRING);
                        t.message(f::TENSOR_SHAPE, |_| {});
                        t.string(f::TENSOR_STRING_VAL, text);
                    });
                }
                Payload::Plugin { plugin, content } => {
                    v.message(f::VALUE_METADATA, |m| {
                        m.message(f::META_PLUGIN_DATA, |p| {
                            p.string(f::PLUGIN_NAME, plugin);
                            p.bytes(f::PLUGIN_CONTENT, content);
                        });
                    });
                    // A length-0 float vector: the smallest valid tensor.
                    v.message(f::VALUE_TENSOR, |t| {
                        t.varint(f::TENSOR_DTYPE, DT_FLOAT);
                        t.message(f::TENSOR_SHAPE, |sh| {
                            sh.message(f::SHAPE_DIM, |d| d.varint(f::DIM_SIZE, 0));
                        });
                    });
                }
            }
        });
    });
    e.finish()
}

fn decode_event(data: &[u8]) -> Result<Event, String> {
    let mut ev = Event {
        wall_time: 0.0,
        step: 0,
        file_version: None,
        values: Vec::new(),
    };
    let mut d = Decoder::new(data);
    while let Some((field, w)) = d.next_field()? {
        match field {
            f::EVENT_WALL_TIME => ev.wall_time = w.as_f64()?,
            f::EVENT_STEP => ev.step = w.as_u64()? as i64,
            f::EVENT_FILE_VERSION => ev.file_version = Some(w.as_string()?),
            f::EVENT_SUMMARY => {
                let mut s = Decoder::new(w.as_bytes()?);
                while let Some((field, w)) = s.next_field()? {
                    if field == f::SUMMARY_VALUE {
                        ev.values.push(decode_value(w.as_bytes()?)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(ev)
}

fn decode_value(data: &[u8]) -> Result<EventValue, String> {
    let mut v = EventValue {
        tag: String::new(),
        plugin_name: None,
        data: ValueData::Other,
    };
    let mut d = Decoder::new(data);
    while let Some((field, w)) = d.next_field()? {
        match field {
            f::VALUE_TAG => v.tag = w.as_string()?,
            f::VALUE_SIMPLE_VALUE => v.data = ValueData::Scalar(w.as_f32()?),
            f::VALUE_METADATA => {
                let mut m = Decoder::new(w.as_bytes()?);
                while let Some((field, w)) = m.next_field()? {
                    if field == f::META_PLUGIN_DATA {
                        let mut p = Decoder::new(w.as_bytes()?);
                        while let Some((field, w)) = p.next_field()? {
                            if field == f::PLUGIN_NAME {
                                v.plugin_name = Some(w.as_string()?);
                            }
                        }
                    }
                }
            }
            f::VALUE_IMAGE => v.data = ValueData::Image(decode_image(w.as_bytes()?)?),
            f::VALUE_HISTO => v.data = ValueData::Histogram(decode_histogram(w.as_bytes()?)?),
            f::VALUE_TENSOR => v.data = decode_tensor(w.as_bytes()?)?,
            _ => {}
        }
    }
    Ok(v)
}

fn small_uint(w: &Wire<'_>, what: &str) -> Result<u32, String> {
    let v = w.as_u64()?;
    u32::try_from(v).map_err(|_| format!("{what} {v} out of range"))
}

fn decode_image(data: &[u8]) -> Result<EventImage, String> {
    let mut img = EventImage {
        height: 0,
        width: 0,
        colorspace: 0,
        encoded: Vec::new(),
    };
    let mut d = Decoder::new(data);
    while let Some((field, w)) = d.next_field()? {
        match field {
            f::IMAGE_HEIGHT => img.height = small_uint(&w, "image height")?,
            f::IMAGE_WIDTH => img.width = small_uint(&w, "image width")?,
            f::IMAGE_COLORSPACE => img.colorspace = small_uint(&w, "colorspace")?,
            f::IMAGE_ENCODED => img.encoded = w.as_bytes()?.to_vec(),
            _ => {}
        }
    }
    Ok(img)
}

fn decode_histogram(data: &[u8]) -> Result<EventHistogram, String> {
    let mut h = EventHistogram::default();
    let mut d = Decoder::new(data);
    while let Some((field, w)) = d.next_field()? {
        match field {
            f::HISTO_MIN => h.min = w.as_f64()?,
            f::HISTO_MAX => h.max = w.as_f64()?,
            f::HISTO_NUM => h.num = w.as_f64()?,
            f::HISTO_SUM => h.sum = w.as_f64()?,
            f::HISTO_SUM_SQUARES => h.sum_squares = w.as_f64()?,
            f::HISTO_BUCKET_LIMIT => w.extend_doubles(&mut h.bucket_limits)?,
            f::HISTO_BUCKET => w.extend_doubles(&mut h.buckets)?,
            _ => {}
        }
    }
    if h.bucket_limits.len() != h.buckets.len() {
        return Err(format!(
            "histogram with {} bucket limits but {} buckets",
            h.bucket_limits.len(),
            h.buckets.len()
        ));
    }
    Ok(h)
}

fn decode_tensor(data: &[u8]) -> Result<ValueData, String> {
    let mut dtype = 0;
    let mut strings = Vec::new();
    let mut d = Decoder::new(data);
    while let Some((field, w)) = d.next_field()? {
        match field {
            f::TENSOR_DTYPE => dtype = w.as_u64()?,
            f::TENSOR_STRING_VAL => {
                strings.push(String::from_utf8_lossy(w.as_bytes()?).into_owned())
            }
            _ => {}
        }
    }
    Ok(if dtype == DT_STRING {
        ValueData::Text(strings)
    } else {
        ValueData::Tensor { dtype }
    })
}

/// Reads a whole event file, checking the length CRC and the data CRC of every record, and
/// decodes each record as an [`Event`]. A bad CRC, a truncated record or an undecodable
/// event is an error naming the file, the record and its byte offset; so is an unreadable
/// file. (TensorBoard itself tolerates a truncated last record; this reader is strict on
/// purpose, for tests and `icrl` tools that check files.)
pub fn read_events(path: impl AsRef<Path>) -> Result<Vec<Event>, LogError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| LogError::Io {
        path: path.to_path_buf(),
        action: "read",
        error: source,
    })?;
    let records = split_records(&bytes, path)?;
    let mut events = Vec::with_capacity(records.len());
    let mut offset = 0u64;
    for (record, data) in records.into_iter().enumerate() {
        let ev = decode_event(data).map_err(|reason| LogError::Corrupt {
            path: path.to_path_buf(),
            record,
            offset,
            reason: format!("undecodable event: {reason}"),
        })?;
        events.push(ev);
        offset += (data.len() + OVERHEAD) as u64;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_cover_all_values() {
        let vals: Vec<f64> = (0..100).map(|i| i as f64 * 0.5 - 7.0).collect();
        let h = EventHistogram::from_values(&vals);
        assert_eq!(h.num, 100.0);
        assert_eq!((h.min, h.max), (-7.0, 42.5));
        assert_eq!(h.buckets.len(), HISTOGRAM_BUCKETS);
        assert_eq!(h.buckets.iter().sum::<f64>(), 100.0);
        assert_eq!(*h.bucket_limits.last().unwrap(), 42.5);
        assert!(h.bucket_limits.windows(2).all(|w| w[0] < w[1]));
        // Each value sits in the bucket whose range holds it.
        let mut lo = h.min;
        for (i, &hi) in h.bucket_limits.iter().enumerate() {
            let n = vals
                .iter()
                .filter(|&&v| v >= lo && (v < hi || (i == HISTOGRAM_BUCKETS - 1 && v <= hi)))
                .count();
            assert_eq!(n as f64, h.buckets[i], "bucket {i}");
            lo = hi;
        }
        let h = EventHistogram::from_values(&[f64::NAN, 3.0, f64::INFINITY, 3.0]);
        assert_eq!(
            (h.num, h.bucket_limits.clone(), h.buckets.clone()),
            (2.0, vec![3.0], vec![2.0])
        );
        let h = EventHistogram::from_values(&[f64::MAX, -f64::MAX]);
        assert_eq!(h.buckets.iter().sum::<f64>(), 2.0);
        assert_eq!(EventHistogram::from_values(&[]).num, 0.0);
    }

    #[test]
    fn events_decode_what_was_encoded() {
        let h = EventHistogram::from_values(&[1.0, 2.0, 3.0]);
        let cases = [
            (Payload::Scalar(0.25), ValueData::Scalar(0.25), None),
            (
                Payload::Histogram(&h),
                ValueData::Histogram(h.clone()),
                None,
            ),
            (
                Payload::Png {
                    png: b"fake",
                    height: 3,
                    width: 5,
                },
                ValueData::Image(EventImage {
                    height: 3,
                    width: 5,
                    colorspace: 3,
                    encoded: b"fake".to_vec(),
                }),
                None,
            ),
            (
                Payload::Text("# hi"),
                ValueData::Text(vec!["# hi".into()]),
                Some("text".to_string()),
            ),
        ];
        for (payload, want, plugin) in cases {
            let ev = decode_event(&encode_summary(12.5, 7, "a/b", &payload)).unwrap();
            assert_eq!(
                (ev.wall_time, ev.step, ev.file_version.clone()),
                (12.5, 7, None)
            );
            assert_eq!(
                ev.values,
                vec![EventValue {
                    tag: "a/b".into(),
                    plugin_name: plugin,
                    data: want
                }]
            );
        }
        let ev = decode_event(&encode_file_version(1.0)).unwrap();
        assert_eq!(ev.file_version.as_deref(), Some(FILE_VERSION));
    }
}
