//! A job's own data (dataset kinds `image-folder`, `tar-shards` and
//! `tensors`): where each split is, how its samples become model inputs,
//! and what inspecting the data found.
//!
//! A location is a local (or shared) path or an object-store URL
//! (`s3://bucket/prefix`). `tar-shards` locations may name their shards
//! with a brace range, WebDataset's convention: `train-{0000..0127}.tar`.
//!
//! The service learns the number of classes, the split sizes and the input
//! shape by inspecting the data before the job is planned, and writes them
//! into the spec as its [`DataSummary`], with a digest of the sample list:
//! every reader (workers, the local trainer) checks that it lists the same
//! samples, so that a job never trains on data that changed under it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// The longest location accepted.
pub const MAX_LOCATION_BYTES: usize = 4096;
/// Image sides accepted for `image_size`.
pub const IMAGE_SIZES: std::ops::RangeInclusive<u32> = 8..=1024;
/// `image_size` when a job does not set it: ImageNet's training size.
pub const DEFAULT_IMAGE_SIZE: u32 = 224;
/// Shards a brace range may expand to.
pub const MAX_SHARDS: u64 = 1_000_000;

/// How images become model inputs (image kinds); tensors are used as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transforms {
    /// Training (with `augment`): torchvision's `RandomResizedCrop(image_size)`
    /// and a horizontal flip. Evaluation, and training without `augment`:
    /// the shorter side resized to `image_size / 0.875`, then the centre
    /// `image_size` square.
    #[default]
    Imagenet,
    /// Every image resized to `image_size` squared; with `augment`, the
    /// references' CIFAR augmentation on top (4-pixel padded random crop,
    /// flip, Cutout).
    Cifar,
    /// Every image resized to `image_size` squared, nothing random.
    Resize,
}

impl Transforms {
    pub const ALL: [Transforms; 3] = [Transforms::Imagenet, Transforms::Cifar, Transforms::Resize];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Transforms::Imagenet => "imagenet",
            Transforms::Cifar => "cifar",
            Transforms::Resize => "resize",
        }
    }
}

/// What a sample that cannot be read or decoded does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadSamples {
    /// The task fails, naming the file; the job fails after three tries.
    #[default]
    Fail,
    /// The sample is left out of its batch and counted.
    Skip,
}

impl BadSamples {
    pub const ALL: [BadSamples; 2] = [BadSamples::Fail, BadSamples::Skip];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            BadSamples::Fail => "fail",
            BadSamples::Skip => "skip",
        }
    }
}

macro_rules! named_enum {
    ($ty:ty, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = SpecError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| SpecError::Unknown {
                    what: $what,
                    value: s.to_owned(),
                    expected: <$ty>::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    };
}

named_enum!(Transforms, "transforms");
named_enum!(BadSamples, "bad_samples");

/// Where a job's own data is and how it is read (the `[data]` table of a job file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// The training samples.
    pub train: String,
    /// The test samples.
    pub test: String,
    /// Validation samples kept apart by their owner (instead of holding
    /// `validation_fraction` of the training samples out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
    /// Side of the square images the model sees (image kinds).
    #[serde(default = "default_image_size")]
    pub image_size: u32,
    #[serde(default)]
    pub transforms: Transforms,
    /// Per-channel mean subtracted from inputs scaled to [0, 1] (images) or
    /// from the stored values (float tensors); ImageNet's for images and
    /// none for tensors when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation the inputs are divided by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    #[serde(default)]
    pub bad_samples: BadSamples,
    /// What the data holds, found by inspecting it; filled in by the
    /// service (or the local trainer) before the job is planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<DataSummary>,
}

fn default_image_size() -> u32 {
    DEFAULT_IMAGE_SIZE
}

/// What inspecting a job's data found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSummary {
    /// Classes: labels are `0..classes`.
    pub classes: u32,
    /// Samples at `train`, before `validation_fraction` holds any out.
    pub train: u64,
    /// Samples at `validation` (0 without it).
    pub validation: u64,
    pub test: u64,
    /// A model input: `[channels, height, width]` (or the stored shape of a
    /// tensor sample, up to 3 dimensions).
    pub shape: Vec<u32>,
    /// SHA-256 (hex) of the list of samples of every split, with their
    /// sizes and labels.
    pub digest: String,
}

/// One split, as inspecting the data found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitReport {
    /// `data.train`, `data.test`, `data.validation`.
    pub field: String,
    pub location: String,
    pub samples: u64,
    /// Image files, shards or tensor files read.
    pub files: u64,
}

/// A sample that cannot be read or decoded, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableSample {
    pub sample: String,
    pub reason: String,
}

/// What inspecting a dataset found (`rwp dataset inspect`, the SDKs'
/// `inspect_data`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataReport {
    pub kind: crate::DatasetKind,
    pub class_names: Vec<String>,
    pub splits: Vec<SplitReport>,
    /// A model input's shape (images: as resized to `image_size`).
    pub shape: Vec<u32>,
    /// The shape of the first training image as stored (`[height, width]`),
    /// when the images were decoded.
    pub first_image: Option<[u32; 2]>,
    /// Samples that cannot be read or decoded (checked only when decoded).
    pub unreadable: Vec<UnreadableSample>,
    /// Whether every image was decoded (`false`: only listed).
    pub decoded: bool,
    pub summary: DataSummary,
}

/// ImageNet's per-channel mean and standard deviation.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The storage a location names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local or shared path.
    Path(std::path::PathBuf),
    /// An object store: `scheme://bucket/prefix` (`s3`, `gs`, `az`).
    Object { scheme: String, bucket: String, key: String },
}

/// Object-store schemes a location may use.
pub const OBJECT_SCHEMES: [&str; 3] = ["s3", "gs", "az"];

impl Location {
    /// Parses `text`: `scheme://bucket/key` for an object store, else a
    /// path (`file://` may prefix it).
    pub fn parse(field: &'static str, text: &str) -> Result<Self, SpecError> {
        let bad = |rule| SpecError::OutOfRange { field, value: format!("{text:?}"), rule };
        if text.is_empty() {
            return Err(bad("must not be empty"));
        }
        if text.len() > MAX_LOCATION_BYTES {
            return Err(SpecError::OutOfRange {
                field,
                value: format!("a location of {} bytes", text.len()),
                rule: "must be at most 4096 bytes",
            });
        }
        if text.chars().any(char::is_control) {
            return Err(bad("must not hold control characters"));
        }
        if let Some(path) = text.strip_prefix("file://") {
            return Ok(Location::Path(path.into()));
        }
        let Some((scheme, rest)) = text.split_once("://") else { return Ok(Location::Path(text.into())) };
        if !OBJECT_SCHEMES.contains(&scheme) {
            return Err(bad("must be a path or an s3://, gs:// or az:// URL"));
        }
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || !bucket.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
            return Err(bad("must name a bucket (letters, digits, '-', '.', '_') after the scheme"));
        }
        Ok(Location::Object { scheme: scheme.to_owned(), bucket: bucket.to_owned(), key: key.to_owned() })
    }
}

/// Expands one brace range in `pattern` (`train-{0000..0127}.tar`): the
/// numbers keep the width of the first bound. A pattern without braces is
/// itself.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(format!("{pattern:?} has a '}}' without a '{{'"));
        }
        return Ok(vec![pattern.to_owned()]);
    };
    let close =
        pattern[open..].find('}').map(|i| open + i).ok_or_else(|| format!("{pattern:?} has an unclosed '{{'"))?;
    let (head, range, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    if tail.contains(['{', '}']) {
        return Err(format!("{pattern:?} has more than one brace range"));
    }
    let (first, last) = range
        .split_once("..")
        .ok_or_else(|| format!("{{{range}}} in {pattern:?} is not a range like {{0000..0127}}"))?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| format!("{s:?} in {pattern:?} is not a number"))
    };
    let (start, end) = (number(first)?, number(last)?);
    if start > end {
        return Err(format!("{{{range}}} in {pattern:?} counts down"));
    }
    if end - start >= MAX_SHARDS {
        return Err(format!("{{{range}}} in {pattern:?} names more than {MAX_SHARDS} shards"));
    }
    let width = first.len();
    Ok((start..=end).map(|n| format!("{head}{n:0width$}{tail}")).collect())
}

impl DataSource {
    /// Every location with its field name: train, test, then validation.
    pub fn locations(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [("data.train", Some(self.train.as_str())), ("data.test", Some(self.test.as_str()))]
            .into_iter()
            .chain([("data.validation", self.validation.as_deref())])
            .filter_map(|(field, location)| location.map(|l| (field, l)))
    }

    /// Checks the fields that do not need the data: the locations, the image
    /// size, `mean` and `std`.
    pub fn validate(&self, images: bool) -> Result<(), SpecError> {
        for (field, location) in self.locations() {
            Location::parse(field, location)?;
        }
        if images && !IMAGE_SIZES.contains(&self.image_size) {
            return Err(SpecError::OutOfRange {
                field: "data.image_size",
                value: self.image_size.to_string(),
                rule: "must be in 8..=1024",
            });
        }
        for (field, values) in [("data.mean", &self.mean), ("data.std", &self.std)] {
            let Some(values) = values else { continue };
            if values.is_empty() || values.len() > 4 {
                return Err(SpecError::OutOfRange {
                    field,
                    value: format!("{values:?}"),
                    rule: "must hold one value per channel (1 to 4)",
                });
            }
            if values.iter().any(|v| !v.is_finite()) || (field == "data.std" && values.iter().any(|&v| v <= 0.0)) {
                return Err(SpecError::OutOfRange {
                    field,
                    value: format!("{values:?}"),
                    rule: "must be finite (and > 0 for std)",
                });
            }
        }
        if self.mean.as_ref().map(Vec::len) != self.std.as_ref().map(Vec::len) {
            return Err(SpecError::OutOfRange {
                field: "data.std",
                value: format!("{:?}", self.std),
                rule: "must be set together with data.mean, one value per channel each",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brace_ranges_expand_with_the_width_of_their_first_bound() {
        assert_eq!(
            expand_braces("s3://b/train-{0000..0002}.tar").unwrap(),
            vec!["s3://b/train-0000.tar", "s3://b/train-0001.tar", "s3://b/train-0002.tar"]
        );
        assert_eq!(expand_braces("a-{8..10}").unwrap(), vec!["a-8", "a-9", "a-10"]);
        assert_eq!(expand_braces("plain.tar").unwrap(), vec!["plain.tar"]);
        for (bad, says) in [
            ("x-{3..1}.tar", "counts down"),
            ("x-{a..b}.tar", "is not a number"),
            ("x-{1,2}.tar", "is not a range"),
            ("x-{1..2", "unclosed"),
            ("x-1..2}", "without a"),
            ("x-{1..2}-{3..4}", "more than one"),
            ("x-{0..99999999}", "more than"),
        ] {
            let error = expand_braces(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn locations_are_paths_or_object_store_urls() {
        assert_eq!(Location::parse("f", "/data/train").unwrap(), Location::Path("/data/train".into()));
        assert_eq!(Location::parse("f", "file:///data").unwrap(), Location::Path("/data".into()));
        assert_eq!(
            Location::parse("f", "s3://bucket/imagenet/train").unwrap(),
            Location::Object { scheme: "s3".into(), bucket: "bucket".into(), key: "imagenet/train".into() }
        );
        for (bad, says) in [
            ("", "must not be empty"),
            ("ftp://host/x", "s3://"),
            ("s3:///key", "must name a bucket"),
            ("s3://bu cket/key", "must name a bucket"),
            ("/data/\ntrain", "control characters"),
        ] {
            let error = Location::parse("data.train", bad).unwrap_err().to_string();
            assert!(error.contains(says) && error.contains("data.train"), "{bad:?}: {error}");
        }
    }
}
