//! Bounds on what a dataset may declare, checked before anything is
//! allocated from a declared size.

/// Samples in one split.
pub const MAX_SAMPLES: u64 = 100_000_000;
/// Classes of a dataset.
pub const MAX_CLASSES: u32 = 1_000_000;
/// Bytes of one encoded sample (an image file or tar member).
pub const MAX_SAMPLE_BYTES: u64 = 64 << 20;
/// Bytes of a `.cls` member.
pub const MAX_LABEL_BYTES: u64 = 64;
/// Bytes of a safetensors header.
pub const MAX_TENSOR_HEADER_BYTES: u64 = 1 << 20;
/// Values in one tensor sample.
pub const MAX_SAMPLE_VALUES: u64 = 16 << 20;
