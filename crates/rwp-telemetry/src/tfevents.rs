//! TensorBoard event files: TFRecord framing (length, masked CRC-32C of the
//! length, data, masked CRC-32C of the data) around `tensorflow.Event`
//! protocol buffers carrying summaries (scalars, and the plugin summaries
//! of [`crate::hparams`]), encoded by prost from the messages below; the
//! CRC is the `crc32c` crate's (hardware-accelerated).
//! `tensorboard --logdir <data_dir>/tensorboard` shows them.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use prost::Message;

/// `tensorflow.Event` (tensorflow/core/util/event.proto), the fields used here.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

/// `Event.what`: the file-version record or a summary.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary` (tensorflow/core/framework/summary.proto).
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `tensorflow.Summary.Value`: a scalar, or a plugin's summary (its
/// metadata and a tensor).
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    #[prost(oneof = "Kind", tags = "2, 8")]
    pub value: Option<Kind>,
}

/// `Summary.Value.value`: a scalar or a tensor.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `tensorflow.SummaryMetadata` (summary.proto): which plugin a summary is for.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `SummaryMetadata.PluginData`: the plugin's name and its own serialised data.
#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorflow.TensorProto` (tensor.proto), the fields of an empty tensor.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// `tensorflow.DataType`: 1 is `DT_FLOAT`.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShape>,
}

/// `tensorflow.TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShape {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

impl TensorProto {
    /// The empty float tensor (shape `[0]`) that plugin summaries whose
    /// data is all in their metadata carry, as TensorBoard's own writers do.
    #[must_use]
    pub fn empty_float() -> Self {
        Self { dtype: 1, tensor_shape: Some(TensorShape { dim: vec![Dimension { size: 0 }] }) }
    }
}

/// CRC-32C (Castagnoli).
pub use ::crc32c::crc32c;

/// The CRC as TFRecord stores it.
#[must_use]
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xA282_EAD8)
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
        let what = What::FileVersion("brain.Event:2".to_owned());
        writer.record(&Event { wall_time: now.as_secs_f64(), step: 0, what: Some(what) })?;
        writer.file.flush()?;
        Ok(writer)
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&mut self, event: &Event) -> std::io::Result<()> {
        let data = event.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        self.file.write_all(&len)?;
        self.file.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.file.write_all(&data)?;
        self.file.write_all(&masked_crc32c(&data).to_le_bytes())
    }

    /// Writes `scalars` at `step` and flushes, so TensorBoard sees them at once.
    pub fn scalars(&mut self, step: u64, wall_time: f64, scalars: &[(&str, f64)]) -> std::io::Result<()> {
        let values = scalars
            .iter()
            .map(|(tag, v)| Value { tag: (*tag).to_owned(), metadata: None, value: Some(Kind::SimpleValue(*v as f32)) })
            .collect();
        self.summary(step, wall_time, values)
    }

    /// Writes one summary of `values` at `step` and flushes.
    pub fn summary(&mut self, step: u64, wall_time: f64, values: Vec<Value>) -> std::io::Result<()> {
        let what = What::Summary(Summary { value: values });
        self.record(&Event { wall_time, step: step as i64, what: Some(what) })?;
        self.file.flush()
    }
}

/// The name of a TensorBoard run directory for `name` and `id`:
/// `<name>-<id>`, the name reduced to ASCII letters, digits and `.`, `_`,
/// `-`, `=` (anything else, `/` and spaces included, becomes `_`, a run of
/// them one `_`), trimmed of `_` and `.` at either end and cut to 64
/// characters; just the id when nothing is left of the name. Ids are
/// unique, so run directories are too.
#[must_use]
pub fn run_name(name: &str, id: &str) -> String {
    let mut clean = String::new();
    for c in name.chars() {
        if clean.len() >= 64 {
            break;
        }
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '=') {
            clean.push(c);
        } else if !clean.ends_with('_') {
            clean.push('_');
        }
    }
    let clean = clean.trim_matches(|c| c == '_' || c == '.');
    if clean.is_empty() {
        id.to_owned()
    } else {
        format!("{clean}-{id}")
    }
}

/// One decoded scalar: (step, tag, value).
pub type Scalar = (i64, String, f32);

/// Reads an event file's records back, checking every record's framing and
/// CRCs, and decodes their events. For tests and tools.
pub fn read_events(path: &Path) -> Result<Vec<Event>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut at = 0;
    let mut events = Vec::new();
    while at < bytes.len() {
        let records = events.len();
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
        events.push(Event::decode(data).map_err(|e| format!("record {records}: {e}"))?);
        at += 16 + len;
    }
    Ok(events)
}

/// The scalars of an event file (see [`read_events`]), in order.
pub fn read_scalars(path: &Path) -> Result<Vec<Scalar>, String> {
    let mut scalars = Vec::new();
    for event in read_events(path)? {
        let Some(What::Summary(summary)) = event.what else { continue };
        for value in summary.value {
            if let Some(Kind::SimpleValue(v)) = value.value {
                scalars.push((event.step, value.tag, v));
            }
        }
    }
    Ok(scalars)
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

    #[test]
    fn records_decode_with_prost_to_the_same_events() {
        let dir = std::env::temp_dir().join(format!("rwp-tfevents-prost-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = EventWriter::create(&dir, "prost").unwrap();
        w.scalars(3, 12.5, &[("train/loss", 1.25), ("test/accuracy", 0.0)]).unwrap();
        let path = w.path().to_owned();
        drop(w);
        // The TFRecord framing by hand, each record's data decoded by prost alone.
        let bytes = std::fs::read(&path).unwrap();
        let mut events = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            events.push(Event::decode(&bytes[at + 12..at + 12 + len]).unwrap());
            at += 16 + len;
        }
        assert_eq!(events, read_events(&path).unwrap());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].what, Some(What::FileVersion("brain.Event:2".into())));
        assert_eq!((events[1].step, events[1].wall_time), (3, 12.5));
        let Some(What::Summary(summary)) = &events[1].what else { panic!("{:?}", events[1]) };
        let decoded: Vec<Scalar> = summary
            .value
            .iter()
            .map(|v| match v.value {
                Some(Kind::SimpleValue(x)) => (events[1].step, v.tag.clone(), x),
                _ => panic!("{v:?}"),
            })
            .collect();
        assert_eq!(decoded, vec![(3, "train/loss".into(), 1.25), (3, "test/accuracy".into(), 0.0)]);
        assert_eq!(decoded, read_scalars(&path).unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn run_names_keep_a_readable_name_and_the_id() {
        assert_eq!(run_name("mnist baseline", "job-1"), "mnist_baseline-job-1");
        assert_eq!(run_name("grid/0 sigma = 0.01", "job-2"), "grid_0_sigma_=_0.01-job-2");
        assert_eq!(run_name("../..", "job-3"), "job-3");
        assert_eq!(run_name("", "job-4"), "job-4");
        assert_eq!(run_name("\u{1b}[31mred", "job-5"), "31mred-job-5");
        assert_eq!(run_name("température", "job-6"), "temp_rature-job-6");
        assert_eq!(run_name(&"x".repeat(300), "job-7"), format!("{}-job-7", "x".repeat(64)));
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rwp-tfevents-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
