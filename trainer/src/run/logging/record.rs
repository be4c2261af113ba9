//! TFRecord framing, the container format of TensorBoard event files.
//!
//! Each record is `u64 length (LE) | u32 masked CRC-32C of the 8 length bytes (LE) | data |
//! u32 masked CRC-32C of the data (LE)`. The mask is TensorFlow's: `((crc >> 15) | (crc <<
//! 17)) + 0xa282ead8` (wrapping). CRC-32C (Castagnoli) is computed here: the crc32fast crate
//! the checkpoints use implements the other common CRC-32 polynomial, and a dependency for
//! twenty lines is not worth its weight.

use std::path::Path;

use super::sink::LogError;

/// The reflected CRC-32C polynomial (Castagnoli, 0x1EDC6F41 bit-reversed).
const CASTAGNOLI: u32 = 0x82F6_3B78;

/// Byte-at-a-time lookup table of CRC-32C, built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ CASTAGNOLI
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

/// CRC-32C of `data` (initial value and final xor all ones, reflected, as in iSCSI and
/// TFRecord).
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC-32C.
pub(crate) fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Bytes of framing around each record's data.
pub(crate) const OVERHEAD: usize = 8 + 4 + 4;

/// Frames `data` as one TFRecord.
pub(crate) fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + OVERHEAD);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Splits a whole event file into its records' data, checking both CRCs of every record.
/// A bad CRC, a truncated record or trailing garbage is an error naming the file, the
/// record index and its byte offset.
pub(crate) fn split_records<'a>(bytes: &'a [u8], path: &Path) -> Result<Vec<&'a [u8]>, LogError> {
    let corrupt = |index: usize, offset: usize, reason: String| LogError::Corrupt {
        path: path.to_path_buf(),
        record: index,
        offset: offset as u64,
        reason,
    };
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let index = out.len();
        let rest = bytes.len() - pos;
        if rest < 12 {
            return Err(corrupt(
                index,
                pos,
                format!("truncated header ({rest} bytes left)"),
            ));
        }
        let len_bytes = &bytes[pos..pos + 8];
        let stored = u32_at(bytes, pos + 8);
        let computed = masked_crc32c(len_bytes);
        if stored != computed {
            return Err(corrupt(
                index,
                pos,
                format!("length CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"),
            ));
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(len_bytes);
        let len = u64::from_le_bytes(a);
        let available = (rest - 12).saturating_sub(4) as u64;
        if rest < OVERHEAD || len > available {
            return Err(corrupt(
                index,
                pos,
                format!("truncated record: {len} data bytes announced, {available} present"),
            ));
        }
        let len = len as usize;
        let data = &bytes[pos + 12..pos + 12 + len];
        let stored = u32_at(bytes, pos + 12 + len);
        let computed = masked_crc32c(data);
        if stored != computed {
            return Err(corrupt(
                index,
                pos,
                format!("data CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"),
            ));
        }
        out.push(data);
        pos += OVERHEAD + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // CRC-32C("123456789") = 0xE3069283 (RFC 3720, appendix B.4).
        let crc = crc32c(b"123456789");
        assert_eq!(crc, 0xE306_9283);
        let masked = crc.rotate_right(15).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc32c(b"123456789"), masked);
        // iSCSI test patterns (RFC 3720, B.4): 32 bytes of zeros, of ones, ascending.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    #[test]
    fn frames_split_back_and_every_flipped_byte_is_detected() {
        let mut file = frame(b"first");
        file.extend(frame(b""));
        file.extend(frame(&[7u8; 300]));
        let p = Path::new("x.tfevents");
        let recs = split_records(&file, p).unwrap();
        assert_eq!(recs, vec![&b"first"[..], &b""[..], &[7u8; 300][..]]);
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x10;
            let err = split_records(&bad, p).expect_err("flipped byte not detected");
            assert!(err.to_string().contains("x.tfevents"), "{err}");
        }
        for cut in 1..file.len() {
            if split_records(&file[..cut], p).is_ok() {
                // Only cuts exactly at a record boundary are valid files.
                assert!(cut == 21 || cut == 37, "cut {cut} accepted");
            }
        }
    }
}
