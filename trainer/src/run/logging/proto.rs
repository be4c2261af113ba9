//! A minimal protocol-buffers encoder and decoder for the handful of TensorBoard messages
//! that the logger writes and reads (`Event`, `Summary`, `Summary.Value`, `Summary.Image`,
//! `HistogramProto`, `SummaryMetadata`, `TensorProto`, `TensorShapeProto`).
//!
//! Why hand-written: the message subset is tiny and stable (field numbers are fixed by
//! TensorFlow's `event.proto`, `summary.proto`, `tensor.proto`), and the decoder must never
//! panic on corrupt input. The only Rust types for these messages on offer,
//! `tensorboard-proto`, are generated for the unmaintained protobuf 2.x runtime, which we
//! would then have to depend on directly just to call `write_to_bytes`.
//!
//! Wire format (protobuf encoding spec): every field is a key `(field_number << 3) |
//! wire_type` as a varint, then the payload: wire type 0 = varint, 1 = 8 bytes little
//! endian, 2 = varint length + bytes (strings, nested messages, packed repeated numbers),
//! 5 = 4 bytes little endian.

/// Field numbers of the messages we touch (from TensorFlow's .proto files).
pub(crate) mod field {
    // tensorflow.Event
    pub const EVENT_WALL_TIME: u32 = 1; // double
    pub const EVENT_STEP: u32 = 2; // int64
    pub const EVENT_FILE_VERSION: u32 = 3; // string
    pub const EVENT_SUMMARY: u32 = 5; // Summary
                                      // tensorflow.Summary
    pub const SUMMARY_VALUE: u32 = 1; // repeated Summary.Value
                                      // tensorflow.Summary.Value
    pub const VALUE_TAG: u32 = 1; // string
    pub const VALUE_SIMPLE_VALUE: u32 = 2; // float
    pub const VALUE_IMAGE: u32 = 4; // Summary.Image
    pub const VALUE_HISTO: u32 = 5; // HistogramProto
    pub const VALUE_TENSOR: u32 = 8; // TensorProto
    pub const VALUE_METADATA: u32 = 9; // SummaryMetadata
                                       // tensorflow.Summary.Image
    pub const IMAGE_HEIGHT: u32 = 1; // int32
    pub const IMAGE_WIDTH: u32 = 2; // int32
    pub const IMAGE_COLORSPACE: u32 = 3; // int32
    pub const IMAGE_ENCODED: u32 = 4; // bytes
                                      // tensorflow.HistogramProto
    pub const HISTO_MIN: u32 = 1; // double
    pub const HISTO_MAX: u32 = 2; // double
    pub const HISTO_NUM: u32 = 3; // double
    pub const HISTO_SUM: u32 = 4; // double
    pub const HISTO_SUM_SQUARES: u32 = 5; // double
    pub const HISTO_BUCKET_LIMIT: u32 = 6; // repeated double, packed
    pub const HISTO_BUCKET: u32 = 7; // repeated double, packed
                                     // tensorflow.SummaryMetadata
    pub const META_PLUGIN_DATA: u32 = 1; // SummaryMetadata.PluginData
                                         // tensorflow.SummaryMetadata.PluginData
    pub const PLUGIN_NAME: u32 = 1; // string
                                    // tensorflow.TensorProto
    pub const TENSOR_DTYPE: u32 = 1; // DataType enum
    pub const TENSOR_SHAPE: u32 = 2; // TensorShapeProto
    pub const TENSOR_STRING_VAL: u32 = 8; // repeated bytes
}

/// `tensorflow.DataType.DT_STRING`.
pub(crate) const DT_STRING: u64 = 7;

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

/// Appends protobuf fields to a byte buffer.
#[derive(Default)]
pub(crate) struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.raw_varint(u64::from((field << 3) | wire));
    }

    /// An unsigned or non-negative integer field (int32, int64, uint64, enum).
    pub(crate) fn varint(&mut self, field: u32, v: u64) {
        self.key(field, WIRE_VARINT);
        self.raw_varint(v);
    }

    pub(crate) fn double(&mut self, field: u32, v: f64) {
        self.key(field, WIRE_FIXED64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn float(&mut self, field: u32, v: f32) {
        self.key(field, WIRE_FIXED32);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, field: u32, v: &[u8]) {
        self.key(field, WIRE_LEN);
        self.raw_varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    pub(crate) fn string(&mut self, field: u32, v: &str) {
        self.bytes(field, v.as_bytes());
    }

    /// A nested message, built by `f` into its own buffer.
    pub(crate) fn message(&mut self, field: u32, f: impl FnOnce(&mut Encoder)) {
        let mut inner = Encoder::new();
        f(&mut inner);
        self.bytes(field, &inner.buf);
    }

    /// A packed `repeated double` field.
    pub(crate) fn packed_doubles(&mut self, field: u32, vs: &[f64]) {
        let mut payload = Vec::with_capacity(vs.len() * 8);
        for v in vs {
            payload.extend_from_slice(&v.to_le_bytes());
        }
        self.bytes(field, &payload);
    }
}

/// One decoded field payload.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

impl Wire<'_> {
    pub(crate) fn as_u64(&self) -> Result<u64, String> {
        match self {
            Wire::Varint(v) => Ok(*v),
            other => Err(format!("expected a varint, found {other:?}")),
        }
    }
    pub(crate) fn as_f64(&self) -> Result<f64, String> {
        match self {
            Wire::Fixed64(v) => Ok(f64::from_bits(*v)),
            other => Err(format!("expected a double, found {other:?}")),
        }
    }
    pub(crate) fn as_f32(&self) -> Result<f32, String> {
        match self {
            Wire::Fixed32(v) => Ok(f32::from_bits(*v)),
            other => Err(format!("expected a float, found {other:?}")),
        }
    }
    pub(crate) fn as_bytes(&self) -> Result<&[u8], String> {
        match self {
            Wire::Len(b) => Ok(b),
            other => Err(format!(
                "expected a length-delimited field, found {other:?}"
            )),
        }
    }
    pub(crate) fn as_string(&self) -> Result<String, String> {
        String::from_utf8(self.as_bytes()?.to_vec()).map_err(|e| format!("invalid UTF-8: {e}"))
    }
    /// A `repeated double`, packed (one `Len` payload) or not (one `Fixed64`).
    pub(crate) fn extend_doubles(&self, out: &mut Vec<f64>) -> Result<(), String> {
        match self {
            Wire::Fixed64(v) => out.push(f64::from_bits(*v)),
            Wire::Len(b) => {
                if b.len() % 8 != 0 {
                    return Err(format!("packed doubles of {} bytes", b.len()));
                }
                out.extend(b.chunks_exact(8).map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    f64::from_le_bytes(a)
                }));
            }
            other => return Err(format!("expected doubles, found {other:?}")),
        }
        Ok(())
    }
}

/// Iterates over the fields of one message; never panics, reports malformed input.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn raw_varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err("truncated varint".into());
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("field of {n} bytes runs past the end of its message"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next `(field number, payload)`, or `None` at the end of the message.
    pub(crate) fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.raw_varint()?;
        let field =
            u32::try_from(key >> 3).map_err(|_| format!("field number {} too large", key >> 3))?;
        if field == 0 {
            return Err("field number 0".into());
        }
        let wire = match (key & 7) as u32 {
            WIRE_VARINT => Wire::Varint(self.raw_varint()?),
            WIRE_FIXED64 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Wire::Fixed64(u64::from_le_bytes(a))
            }
            WIRE_LEN => {
                let n = self.raw_varint()?;
                let n = usize::try_from(n).map_err(|_| format!("length {n} too large"))?;
                Wire::Len(self.take(n)?)
            }
            WIRE_FIXED32 => {
                let b = self.take(4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Wire::Fixed32(u32::from_le_bytes(a))
            }
            other => return Err(format!("unsupported wire type {other} (field {field})")),
        };
        Ok(Some((field, wire)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_malformed_input_is_an_error() {
        let mut e = Encoder::new();
        for (i, v) in [0u64, 1, 127, 128, 300, u64::MAX].into_iter().enumerate() {
            e.varint(i as u32 + 1, v);
        }
        e.double(9, -1.5);
        e.float(10, 2.25);
        e.string(11, "héllo");
        e.packed_doubles(12, &[1.0, -2.0]);
        let buf = e.finish();
        // 300 = 0b1_0010_1100 -> [0xac, 0x02] after key 5<<3 = 0x28.
        assert!(buf.windows(3).any(|w| w == [0x28, 0xac, 0x02]));
        let mut d = Decoder::new(&buf);
        let mut got = Vec::new();
        while let Some((f, w)) = d.next_field().unwrap() {
            got.push((f, w));
        }
        let ints: Vec<u64> = got[..6].iter().map(|(_, w)| w.as_u64().unwrap()).collect();
        assert_eq!(ints, vec![0, 1, 127, 128, 300, u64::MAX]);
        assert_eq!(got[6].1.as_f64().unwrap(), -1.5);
        assert_eq!(got[7].1.as_f32().unwrap(), 2.25);
        assert_eq!(got[8].1.as_string().unwrap(), "héllo");
        let mut ds = Vec::new();
        got[9].1.extend_doubles(&mut ds).unwrap();
        assert_eq!(ds, vec![1.0, -2.0]);
        // Every truncation of the buffer either decodes a prefix or errors; none panics.
        for cut in 0..buf.len() {
            let mut d = Decoder::new(&buf[..cut]);
            let mut n = 0;
            while let Ok(Some(_)) = d.next_field() {
                n += 1;
            }
            assert!(n <= 10);
        }
        assert!(
            Decoder::new(&[0x0b]).next_field().is_err(),
            "wire type 3 (groups) is rejected"
        );
        assert!(
            Decoder::new(&[0x0a, 0x05, 0x01]).next_field().is_err(),
            "length past the end"
        );
    }
}
