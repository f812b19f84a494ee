//! TensorBoard event files, written by hand: TFRecord framing (length,
//! masked CRC-32C of the length, data, masked CRC-32C of the data) around
//! `tensorflow.Event` protocol buffers carrying scalar summaries.
//! `tensorboard --logdir <data_dir>/tensorboard` shows them.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// CRC-32C (Castagnoli), bitwise: event files are small.
#[must_use]
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// The CRC as TFRecord stores it.
#[must_use]
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint(u64::from(field << 3 | u32::from(wire)), out);
}

fn bytes_field(field: u32, data: &[u8], out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// `Event { wall_time = 1 (double), step = 2 (int64), file_version = 3 | summary = 5 }`.
fn event(wall_time: f64, step: i64, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    key(1, 1, &mut out);
    out.extend_from_slice(&wall_time.to_le_bytes());
    key(2, 0, &mut out);
    varint(step as u64, &mut out);
    body(&mut out);
    out
}

/// `Summary { repeated Value value = 1 }`, `Value { tag = 1, simple_value = 2 (float) }`.
fn summary(scalars: &[(&str, f64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, v) in scalars {
        let mut value = Vec::new();
        bytes_field(1, tag.as_bytes(), &mut value);
        key(2, 5, &mut value);
        value.extend_from_slice(&(*v as f32).to_le_bytes());
        bytes_field(1, &value, &mut out);
    }
    out
}

/// Appends scalar events to one event file.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<seconds>.<tag>` and writes the file-version record.
    pub fn create(dir: &Path, tag: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let path = dir.join(format!("events.out.tfevents.{}.{tag}", now.as_secs()));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut writer = Self { path, file: BufWriter::new(file) };
        let version = event(now.as_secs_f64(), 0, |out| bytes_field(3, b"brain.Event:2", out));
        writer.record(&version)?;
        writer.file.flush()?;
        Ok(writer)
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&mut self, data: &[u8]) -> std::io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.file.write_all(&len)?;
        self.file.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.file.write_all(data)?;
        self.file.write_all(&masked_crc32c(data).to_le_bytes())
    }

    /// Writes `scalars` at `step` and flushes, so TensorBoard sees them at once.
    pub fn scalars(&mut self, step: u64, wall_time: f64, scalars: &[(&str, f64)]) -> std::io::Result<()> {
        let body = summary(scalars);
        let data = event(wall_time, step as i64, |out| bytes_field(5, &body, out));
        self.record(&data)?;
        self.file.flush()
    }
}

/// One decoded scalar: (step, tag, value).
pub type Scalar = (i64, String, f32);

/// Reads an event file back, checking every record's framing and CRCs, and
/// returns its scalars. For tests and tools.
pub fn read_scalars(path: &Path) -> Result<Vec<Scalar>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut at = 0;
    let mut scalars = Vec::new();
    let mut records = 0;
    while at < bytes.len() {
        let take = |at: usize, n: usize| bytes.get(at..at + n).ok_or_else(|| format!("record {records} is truncated"));
        let len_bytes = take(at, 8)?;
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let len_crc = u32::from_le_bytes(take(at + 8, 4)?.try_into().expect("4 bytes"));
        if len_crc != masked_crc32c(len_bytes) {
            return Err(format!("record {records}: bad length CRC"));
        }
        let data = take(at + 12, len)?;
        let data_crc = u32::from_le_bytes(take(at + 12 + len, 4)?.try_into().expect("4 bytes"));
        if data_crc != masked_crc32c(data) {
            return Err(format!("record {records}: bad data CRC"));
        }
        decode_event(data, &mut scalars)?;
        at += 16 + len;
        records += 1;
    }
    Ok(scalars)
}

fn read_varint(data: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// Walks a message: calls `f(field, wire, payload)` for each field.
fn fields<'a>(data: &'a [u8], mut f: impl FnMut(u64, u64, &'a [u8]) -> Result<(), String>) -> Result<(), String> {
    let mut at = 0;
    while at < data.len() {
        let k = read_varint(data, &mut at)?;
        let (field, wire) = (k >> 3, k & 7);
        let payload: &'a [u8] = match wire {
            0 => {
                let start = at;
                read_varint(data, &mut at)?;
                &data[start..at]
            }
            1 => {
                at += 8;
                data.get(at - 8..at).ok_or("truncated fixed64")?
            }
            2 => {
                let len = read_varint(data, &mut at)? as usize;
                at += len;
                data.get(at - len..at).ok_or("truncated bytes")?
            }
            5 => {
                at += 4;
                data.get(at - 4..at).ok_or("truncated fixed32")?
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        f(field, wire, payload)?;
    }
    Ok(())
}

fn decode_event(data: &[u8], out: &mut Vec<Scalar>) -> Result<(), String> {
    let mut step = 0i64;
    let mut summary: Option<&[u8]> = None;
    fields(data, |field, _, payload| {
        match field {
            2 => step = read_varint(payload, &mut 0)? as i64,
            5 => summary = Some(payload),
            _ => {}
        }
        Ok(())
    })?;
    let Some(summary) = summary else { return Ok(()) };
    fields(summary, |field, _, value| {
        if field != 1 {
            return Ok(());
        }
        let (mut tag, mut number) = (String::new(), None);
        fields(value, |f, wire, p| {
            match (f, wire) {
                (1, 2) => tag = String::from_utf8_lossy(p).into_owned(),
                (2, 5) => number = Some(f32::from_le_bytes(p.try_into().map_err(|_| "bad float")?)),
                _ => {}
            }
            Ok(())
        })?;
        if let Some(v) = number {
            out.push((step, tag, v));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C check value of "123456789" (RFC 3720).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn scalars_round_trip_and_corruption_is_caught() {
        let dir = tempfile_dir();
        let mut w = EventWriter::create(&dir, "test").unwrap();
        w.scalars(1, 10.0, &[("train/loss", 2.5), ("lr", 0.1)]).unwrap();
        w.scalars(2, 11.0, &[("train/loss", 2.0)]).unwrap();
        let path = w.path().to_owned();
        drop(w);
        let scalars = read_scalars(&path).unwrap();
        assert_eq!(scalars, vec![(1, "train/loss".into(), 2.5), (1, "lr".into(), 0.1), (2, "train/loss".into(), 2.0)]);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_scalars(&path).unwrap_err().contains("CRC"));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rwp-tfevents-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
