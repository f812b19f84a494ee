//! A shard result as it travels from a worker to the parameter server (a
//! *payload*), and every check the server makes on it before libtorch sees a
//! byte: free of libtorch and of any transport, so that it can be tested and
//! fuzzed on its own.
//!
//! A payload is the gradient of every parameter in declaration order,
//! little-endian, in the job's [`GradientEncoding`], followed (for tasks that
//! return them) by every BatchNorm buffer in declaration order, float32. A
//! push is a stream of messages: a header announcing the encoding and the two
//! byte counts, then data chunks. The server
//!
//! 1. takes the first message as the header ([`header_first`]);
//! 2. checks the announced encoding and sizes against the job's [`Layout`]
//!    ([`Layout::expect`]), which gives the [`PayloadSizes`] to read;
//! 3. feeds every following message to a [`PayloadAssembler`], which refuses a
//!    second header, an empty message, and a byte past the expected size;
//! 4. at the end of the stream, [`PayloadAssembler::finish`] refuses a short
//!    payload;
//! 5. [`Layout::check_finite`] names the first parameter (or the BatchNorm
//!    buffers) holding NaN or ±∞.
//!
//! Every function here is total: any input gives `Ok` or a [`PayloadError`]
//! naming the problem, never a panic, and no allocation is ever larger than
//! the layout's own payload size, whatever a header announces.

use std::fmt;

use crate::GradientEncoding;

/// Bytes of one BatchNorm buffer element (always float32).
const BUFFER_ELEMENT_BYTES: usize = 4;

impl GradientEncoding {
    /// Bytes of one gradient element on the wire.
    #[must_use]
    pub fn bytes_per_element(self) -> usize {
        match self {
            GradientEncoding::F32 => 4,
            GradientEncoding::Bf16 => 2,
        }
    }
}

/// Which part of a payload holds a NaN or an infinite value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NonFinitePart {
    /// The gradient of this parameter.
    Gradient { param: String },
    /// The BatchNorm running statistics.
    Buffers,
}

impl fmt::Display for NonFinitePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NonFinitePart::Gradient { param } => write!(f, "gradient of {param}"),
            NonFinitePart::Buffers => f.write_str("BatchNorm buffers"),
        }
    }
}

/// A push or a layout that cannot be taken, naming what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// A layout whose payload size does not fit in memory.
    #[error("payload layout too large: {0}")]
    LayoutTooLarge(String),
    #[error("empty push: the stream ended before its header")]
    EmptyPush,
    #[error("the first message of a push must be its header")]
    HeaderNotFirst,
    /// A message after the header that is not data (`index` counts from 1,
    /// the header).
    #[error("only data chunks may follow the header, but message {index} is {found}")]
    NotData { index: u64, found: &'static str },
    #[error("gradient encoding {announced:?}, the job uses {expected:?}")]
    EncodingMismatch { announced: GradientEncoding, expected: GradientEncoding },
    /// A header whose byte count differs from the layout's.
    #[error("{field} = {announced}, expected {expected} ({why})")]
    AnnouncedSize { field: &'static str, announced: u64, expected: usize, why: String },
    /// A data message that would take the payload past its size (`index`
    /// as in `NotData`).
    #[error("payload exceeds the announced {expected} bytes: message {index} brings it to {would_be}")]
    Oversize { expected: usize, index: u64, would_be: u128 },
    #[error("stream ended after {received} of {expected} bytes")]
    Truncated { received: usize, expected: usize },
    /// A complete payload part of the wrong length.
    #[error("{what} has {got} bytes, expected {expected}")]
    ByteCount { what: &'static str, got: usize, expected: usize },
    #[error("{0} holds NaN or infinite values")]
    NonFinite(NonFinitePart),
}

/// The sizes a job's payloads must have: parameter names and element counts
/// in declaration order, the BatchNorm buffer elements, the encoding. Its
/// payload size is known to fit in memory (see [`Layout::new`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    params: Vec<(String, usize)>,
    buffer_elements: usize,
    encoding: GradientEncoding,
    gradient_bytes: usize,
    buffer_bytes: usize,
}

impl Layout {
    /// The layout of a model's payloads. Refused when the gradient, the
    /// buffers or both together overflow the largest allocation possible
    /// (`isize::MAX` bytes), so that every size derived from it is exact.
    pub fn new(
        params: Vec<(String, usize)>,
        buffer_elements: usize,
        encoding: GradientEncoding,
    ) -> Result<Self, PayloadError> {
        let limit = isize::MAX as usize;
        let too_large = |what: String| PayloadError::LayoutTooLarge(format!("{what} exceeds {limit} bytes"));
        let element = encoding.bytes_per_element();
        let mut gradient_bytes = 0usize;
        for (name, numel) in &params {
            gradient_bytes = numel
                .checked_mul(element)
                .and_then(|bytes| bytes.checked_add(gradient_bytes))
                .filter(|&total| total <= limit)
                .ok_or_else(|| too_large(format!("the gradient up to {name} ({numel} elements in {encoding:?})")))?;
        }
        let buffer_bytes = buffer_elements
            .checked_mul(BUFFER_ELEMENT_BYTES)
            .filter(|&b| b <= limit)
            .ok_or_else(|| too_large(format!("the BatchNorm buffers ({buffer_elements} float32 elements)")))?;
        if gradient_bytes.checked_add(buffer_bytes).is_none_or(|total| total > limit) {
            return Err(too_large(format!("{gradient_bytes} gradient bytes plus {buffer_bytes} buffer bytes")));
        }
        Ok(Self { params, buffer_elements, encoding, gradient_bytes, buffer_bytes })
    }

    /// (parameter name, number of elements), in declaration order.
    #[must_use]
    pub fn params(&self) -> &[(String, usize)] {
        &self.params
    }

    #[must_use]
    pub fn encoding(&self) -> GradientEncoding {
        self.encoding
    }

    /// Bytes of the gradient part of a payload.
    #[must_use]
    pub fn gradient_bytes(&self) -> usize {
        self.gradient_bytes
    }

    /// Bytes of the BatchNorm buffers of a task that returns them.
    #[must_use]
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// Checks a push header's encoding and byte counts against this layout
    /// (`returns_buffers`: whether the task sends BatchNorm buffers). The
    /// result is what the payload must be: the layout's sizes, never the
    /// announced ones.
    pub fn expect(&self, announced: &Announced, returns_buffers: bool) -> Result<PayloadSizes, PayloadError> {
        if announced.encoding != self.encoding {
            return Err(PayloadError::EncodingMismatch { announced: announced.encoding, expected: self.encoding });
        }
        let gradient = self.gradient_bytes;
        if announced.gradient_bytes != gradient as u64 {
            let values: usize = self.params.iter().map(|(_, n)| n).sum();
            return Err(PayloadError::AnnouncedSize {
                field: "gradient_bytes",
                announced: announced.gradient_bytes,
                expected: gradient,
                why: format!("{values} values of {} parameters in {:?}", self.params.len(), self.encoding),
            });
        }
        let buffers = if returns_buffers { self.buffer_bytes } else { 0 };
        if announced.buffer_bytes != buffers as u64 {
            let why = if returns_buffers {
                format!("this task returns {} BatchNorm buffer values in float32", self.buffer_elements)
            } else {
                "this task returns no BatchNorm buffers".to_owned()
            };
            return Err(PayloadError::AnnouncedSize {
                field: "buffer_bytes",
                announced: announced.buffer_bytes,
                expected: buffers,
                why,
            });
        }
        Ok(PayloadSizes { gradient, buffers })
    }

    /// Checks a complete payload, split into its gradient and buffer parts
    /// (`buffers` empty for a task that returns none): exact lengths, then
    /// finite values, naming the first parameter (in declaration order) or
    /// the BatchNorm buffers holding NaN or ±∞.
    pub fn check_finite(&self, gradient: &[u8], buffers: &[u8]) -> Result<(), PayloadError> {
        if gradient.len() != self.gradient_bytes {
            return Err(PayloadError::ByteCount {
                what: "gradient payload",
                got: gradient.len(),
                expected: self.gradient_bytes,
            });
        }
        if !buffers.is_empty() && buffers.len() != self.buffer_bytes {
            return Err(PayloadError::ByteCount {
                what: "BatchNorm buffer payload",
                got: buffers.len(),
                expected: self.buffer_bytes,
            });
        }
        let element = self.encoding.bytes_per_element();
        let mut rest = gradient;
        for (name, numel) in &self.params {
            // The length is checked above and the sizes in `new`, so `len`
            // is never short; `min` keeps the split total regardless.
            let len = (numel * element).min(rest.len());
            let (bytes, tail) = rest.split_at(len);
            rest = tail;
            if !all_finite(bytes, self.encoding) {
                return Err(PayloadError::NonFinite(NonFinitePart::Gradient { param: name.clone() }));
            }
        }
        if !all_finite(buffers, GradientEncoding::F32) {
            return Err(PayloadError::NonFinite(NonFinitePart::Buffers));
        }
        Ok(())
    }
}

/// Whether every element of `bytes` (a whole number of elements) is finite.
#[must_use]
pub fn all_finite(bytes: &[u8], encoding: GradientEncoding) -> bool {
    // NaN and ±∞ are the values whose exponent bits are all ones (bfloat16 is
    // the top half of a float32). No early exit within a block, so that it
    // vectorises (several times faster than testing value by value).
    const BLOCK: usize = 16 << 10;
    match encoding {
        GradientEncoding::F32 => bytes.chunks(BLOCK).all(|block| {
            const EXPONENT: u32 = 0x7F80_0000;
            let special = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & EXPONENT == EXPONENT;
            !block.chunks_exact(4).fold(false, |any, b| any | special(b))
        }),
        GradientEncoding::Bf16 => bytes.chunks(BLOCK).all(|block| {
            const EXPONENT: u16 = 0x7F80;
            let special = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]) & EXPONENT == EXPONENT;
            !block.chunks_exact(2).fold(false, |any, b| any | special(b))
        }),
    }
}

/// What a push header says about its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announced {
    pub encoding: GradientEncoding,
    pub gradient_bytes: u64,
    pub buffer_bytes: u64,
}

/// The exact sizes of an admitted payload, from [`Layout::expect`]; never
/// more than the layout's own sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadSizes {
    gradient: usize,
    buffers: usize,
}

impl PayloadSizes {
    #[must_use]
    pub fn gradient(&self) -> usize {
        self.gradient
    }

    #[must_use]
    pub fn buffers(&self) -> usize {
        self.buffers
    }

    /// Gradient and buffers together (fits: checked by [`Layout::new`]).
    #[must_use]
    pub fn total(&self) -> usize {
        self.gradient + self.buffers
    }
}

/// One message of a push stream, whatever the transport: `H` is the header
/// type, `D` the data chunk type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushMessage<H, D> {
    Header(H),
    Data(D),
    /// A message that carries neither (an unset `oneof`).
    Empty,
}

impl<H, D> PushMessage<H, D> {
    fn kind(&self) -> &'static str {
        match self {
            PushMessage::Header(_) => "a second header",
            PushMessage::Data(_) => "data",
            PushMessage::Empty => "an empty message",
        }
    }
}

/// The header of a push from its first message (`None`: the stream ended
/// before any message).
pub fn header_first<H, D>(first: Option<PushMessage<H, D>>) -> Result<H, PayloadError> {
    match first {
        Some(PushMessage::Header(h)) => Ok(h),
        Some(_) => Err(PayloadError::HeaderNotFirst),
        None => Err(PayloadError::EmptyPush),
    }
}

/// Reads the messages that follow an admitted header, chunk by chunk, into
/// exactly [`PayloadSizes::total`] bytes. Allocates that size once, up front
/// (the layout's size, never an announced one) and refuses the first chunk
/// that would go past it.
#[derive(Debug)]
pub struct PayloadAssembler {
    sizes: PayloadSizes,
    /// `None` when discarding (a duplicate result): bytes are counted, not kept.
    bytes: Option<Vec<u8>>,
    received: usize,
    /// Messages of the stream so far, the header included.
    messages: u64,
}

impl PayloadAssembler {
    /// An assembler that keeps the payload.
    #[must_use]
    pub fn new(sizes: PayloadSizes) -> Self {
        Self::with_buffer(sizes, Vec::new())
    }

    /// [`PayloadAssembler::new`] that keeps the payload in `buffer` (emptied
    /// first), reusing its memory: it grows only when smaller than the payload.
    #[must_use]
    pub fn with_buffer(sizes: PayloadSizes, mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        buffer.reserve_exact(sizes.total());
        Self { sizes, bytes: Some(buffer), received: 0, messages: 1 }
    }

    /// An assembler that checks the stream as [`PayloadAssembler::new`]
    /// does but drops its bytes (a result already in, sent again).
    #[must_use]
    pub fn discarding(sizes: PayloadSizes) -> Self {
        Self { sizes, bytes: None, received: 0, messages: 1 }
    }

    /// Bytes received so far.
    #[must_use]
    pub fn received(&self) -> usize {
        self.received
    }

    /// Takes the next message of the stream: data within the expected size.
    pub fn feed<H, D: AsRef<[u8]>>(&mut self, message: PushMessage<H, D>) -> Result<(), PayloadError> {
        self.messages = self.messages.saturating_add(1);
        let index = self.messages;
        let PushMessage::Data(data) = message else {
            return Err(PayloadError::NotData { index, found: message.kind() });
        };
        let data = data.as_ref();
        let expected = self.sizes.total();
        if data.len() > expected - self.received {
            return Err(PayloadError::Oversize {
                expected,
                index,
                would_be: self.received as u128 + data.len() as u128,
            });
        }
        if let Some(bytes) = &mut self.bytes {
            bytes.extend_from_slice(data);
        }
        self.received += data.len();
        Ok(())
    }

    /// Ends the stream: the payload when it is complete (`None` when
    /// discarding), an error naming how far it got otherwise.
    pub fn finish(self) -> Result<Option<Payload>, PayloadError> {
        let expected = self.sizes.total();
        if self.received != expected {
            return Err(PayloadError::Truncated { received: self.received, expected });
        }
        Ok(self.bytes.map(|bytes| Payload { bytes, gradient_bytes: self.sizes.gradient }))
    }
}

/// A complete payload of the expected size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    bytes: Vec<u8>,
    gradient_bytes: usize,
}

impl Payload {
    #[must_use]
    pub fn gradient(&self) -> &[u8] {
        &self.bytes[..self.gradient_bytes]
    }

    /// The BatchNorm buffers (empty for a task that returns none).
    #[must_use]
    pub fn buffers(&self) -> &[u8] {
        &self.bytes[self.gradient_bytes..]
    }

    /// Bytes of the gradient part: where the buffers start.
    #[must_use]
    pub fn gradient_bytes(&self) -> usize {
        self.gradient_bytes
    }

    /// The whole payload, gradient then buffers.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Message<'a> = PushMessage<(), &'a [u8]>;

    /// Two parameters of 3 and 2 elements, 4 buffer elements.
    fn layout(encoding: GradientEncoding) -> Layout {
        Layout::new(vec![("conv.weight".into(), 3), ("fc.bias".into(), 2)], 4, encoding).unwrap()
    }

    fn honest(layout: &Layout, returns_buffers: bool) -> Announced {
        Announced {
            encoding: layout.encoding(),
            gradient_bytes: layout.gradient_bytes() as u64,
            buffer_bytes: if returns_buffers { layout.buffer_bytes() as u64 } else { 0 },
        }
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The sizes admitted for a task of `layout(encoding)` that returns no buffers.
    fn gradient_only(encoding: GradientEncoding) -> PayloadSizes {
        let l = layout(encoding);
        l.expect(&honest(&l, false), false).unwrap()
    }

    /// Feeds `chunks` after an honest header and finishes.
    fn assemble(layout: &Layout, returns_buffers: bool, chunks: &[&[u8]]) -> Result<Option<Payload>, PayloadError> {
        let sizes = layout.expect(&honest(layout, returns_buffers), returns_buffers)?;
        let mut assembler = PayloadAssembler::new(sizes);
        for chunk in chunks {
            assembler.feed(Message::Data(chunk))?;
        }
        assembler.finish()
    }

    #[test]
    fn sizes_follow_the_encoding() {
        let f32 = layout(GradientEncoding::F32);
        assert_eq!((f32.gradient_bytes(), f32.buffer_bytes()), (20, 16));
        let bf16 = layout(GradientEncoding::Bf16);
        assert_eq!((bf16.gradient_bytes(), bf16.buffer_bytes()), (10, 16));
        let sizes = f32.expect(&honest(&f32, true), true).unwrap();
        assert_eq!((sizes.gradient(), sizes.buffers(), sizes.total()), (20, 16, 36));
        assert_eq!(f32.expect(&honest(&f32, false), false).unwrap().total(), 20);
    }

    #[test]
    fn finiteness_is_read_from_the_bytes() {
        // Finite in bfloat16 too (f32::MAX would round to ∞ there).
        let finite = [0.0f32, -0.0, 1.5, -3.25e-3, 3e38, -3e38, f32::MIN_POSITIVE, 1e-38, -1e-38];
        let special = [f32::NAN, -f32::NAN, f32::from_bits(0x7F80_0001), f32::INFINITY, f32::NEG_INFINITY];
        let bytes = |values: &[f32], encoding| -> Vec<u8> {
            match encoding {
                GradientEncoding::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                GradientEncoding::Bf16 => {
                    values.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect()
                }
            }
        };
        // Long enough for several blocks; a special value first, in the middle and last.
        let values: Vec<f32> = (0..20_000).map(|i| finite[i % finite.len()]).collect();
        for encoding in [GradientEncoding::F32, GradientEncoding::Bf16] {
            assert!(all_finite(&bytes(&values, encoding), encoding));
            for bad in special {
                for at in [0, 9_999, 19_999] {
                    let mut v = values.clone();
                    v[at] = bad;
                    assert!(!all_finite(&bytes(&v, encoding), encoding), "{bad} at {at}, {encoding:?}");
                }
            }
        }
    }

    #[test]
    fn a_reused_buffer_is_emptied_and_kept() {
        let l = layout(GradientEncoding::F32);
        let sizes = l.expect(&honest(&l, true), true).unwrap();
        let stale = vec![9u8; 100];
        let address = stale.as_ptr();
        let mut assembler = PayloadAssembler::with_buffer(sizes, stale);
        let whole: Vec<u8> = (0..36).collect();
        assembler.feed(Message::Data(&whole)).unwrap();
        let bytes = assembler.finish().unwrap().unwrap().into_bytes();
        assert_eq!(bytes, whole);
        assert_eq!(bytes.as_ptr(), address, "the same memory");
    }

    #[test]
    fn a_payload_split_over_chunks_is_assembled_in_order() {
        let l = layout(GradientEncoding::F32);
        let whole: Vec<u8> = (0..36).collect();
        let payload = assemble(&l, true, &[&whole[..7], &[], &whole[7..30], &whole[30..]]).unwrap().unwrap();
        assert_eq!(payload.gradient(), &whole[..20]);
        assert_eq!(payload.buffers(), &whole[20..]);
        assert_eq!(payload.gradient_bytes(), 20);
        assert_eq!(payload.into_bytes(), whole);
    }

    #[test]
    fn wrong_announced_encoding_and_sizes_are_named() {
        let l = layout(GradientEncoding::F32);
        let bf16 = Announced { encoding: GradientEncoding::Bf16, ..honest(&l, true) };
        let err = l.expect(&bf16, true).unwrap_err();
        assert_eq!(err.to_string(), "gradient encoding Bf16, the job uses F32");

        let short = Announced { gradient_bytes: 16, ..honest(&l, true) };
        let err = l.expect(&short, true).unwrap_err().to_string();
        assert_eq!(err, "gradient_bytes = 16, expected 20 (5 values of 2 parameters in F32)");

        let err = l.expect(&honest(&l, false), true).unwrap_err().to_string();
        assert_eq!(err, "buffer_bytes = 0, expected 16 (this task returns 4 BatchNorm buffer values in float32)");
        let err = l.expect(&honest(&l, true), false).unwrap_err().to_string();
        assert_eq!(err, "buffer_bytes = 16, expected 0 (this task returns no BatchNorm buffers)");
    }

    #[test]
    fn the_first_message_must_be_the_header() {
        assert_eq!(header_first(Some(Message::Header(()))), Ok(()));
        assert_eq!(header_first(Some(Message::Data(&[1]))), Err(PayloadError::HeaderNotFirst));
        assert_eq!(header_first(Some(Message::Empty)), Err(PayloadError::HeaderNotFirst));
        let err = header_first::<(), &[u8]>(None).unwrap_err();
        assert_eq!(err.to_string(), "empty push: the stream ended before its header");
    }

    #[test]
    fn a_second_header_or_an_empty_message_after_the_header_is_refused() {
        let mut assembler = PayloadAssembler::new(gradient_only(GradientEncoding::F32));
        assembler.feed(Message::Data(&[0; 4])).unwrap();
        let err = assembler.feed(Message::Header(())).unwrap_err();
        assert_eq!(err.to_string(), "only data chunks may follow the header, but message 3 is a second header");
        let err = assembler.feed(Message::Empty).unwrap_err();
        assert_eq!(err, PayloadError::NotData { index: 4, found: "an empty message" });
    }

    #[test]
    fn a_chunk_past_the_expected_size_is_refused_before_it_is_kept() {
        let mut assembler = PayloadAssembler::new(gradient_only(GradientEncoding::F32));
        assembler.feed(Message::Data(&[0; 16])).unwrap();
        let err = assembler.feed(Message::Data(&[0; 8])).unwrap_err();
        assert_eq!(err.to_string(), "payload exceeds the announced 20 bytes: message 3 brings it to 24");
        assert_eq!(assembler.received(), 16, "the refused chunk is not counted");
        assembler.feed(Message::Data(&[0; 4])).unwrap();
        assert!(assembler.finish().unwrap().is_some());
    }

    #[test]
    fn a_stream_that_ends_early_names_how_far_it_got() {
        let l = layout(GradientEncoding::F32);
        let err = assemble(&l, true, &[&[0; 30]]).unwrap_err();
        assert_eq!(err.to_string(), "stream ended after 30 of 36 bytes");
        assert_eq!(assemble(&l, false, &[]).unwrap_err(), PayloadError::Truncated { received: 0, expected: 20 });
    }

    #[test]
    fn a_discarded_duplicate_is_checked_but_not_kept() {
        let sizes = gradient_only(GradientEncoding::Bf16);
        let mut assembler = PayloadAssembler::discarding(sizes);
        assembler.feed(Message::Data(&[0; 10])).unwrap();
        assert_eq!(assembler.received(), 10);
        assert_eq!(assembler.finish(), Ok(None));
        let mut assembler = PayloadAssembler::discarding(sizes);
        assert!(matches!(assembler.feed(Message::Data(&[0; 11])), Err(PayloadError::Oversize { .. })));
    }

    #[test]
    fn the_first_non_finite_parameter_is_named() {
        let l = layout(GradientEncoding::F32);
        let clean = f32_bytes(&[1.0, -2.0, 0.0, f32::MAX, f32::MIN_POSITIVE]);
        let buffers = f32_bytes(&[0.5; 4]);
        assert_eq!(l.check_finite(&clean, &buffers), Ok(()));
        assert_eq!(l.check_finite(&clean, &[]), Ok(()));
        for (at, bad, param) in
            [(1, f32::NAN, "conv.weight"), (3, f32::INFINITY, "fc.bias"), (4, f32::NEG_INFINITY, "fc.bias")]
        {
            let mut g = clean.clone();
            g[at * 4..at * 4 + 4].copy_from_slice(&bad.to_le_bytes());
            let err = l.check_finite(&g, &buffers).unwrap_err();
            assert_eq!(err, PayloadError::NonFinite(NonFinitePart::Gradient { param: param.into() }), "{bad} at {at}");
            assert_eq!(err.to_string(), format!("gradient of {param} holds NaN or infinite values"));
        }
        let mut b = buffers.clone();
        b[12..].copy_from_slice(&f32::NAN.to_le_bytes());
        let err = l.check_finite(&clean, &b).unwrap_err();
        assert_eq!(err.to_string(), "BatchNorm buffers holds NaN or infinite values");
    }

    #[test]
    fn bf16_values_are_checked_as_the_top_half_of_a_float32() {
        let l = layout(GradientEncoding::Bf16);
        let top = |v: f32| [v.to_le_bytes()[2], v.to_le_bytes()[3]];
        let mut g: Vec<u8> = [1.0f32, 2.0, -3.0, 1e38, -1e-38].iter().flat_map(|&v| top(v)).collect();
        assert_eq!(l.check_finite(&g, &[]), Ok(()));
        g[8..10].copy_from_slice(&top(f32::NAN));
        let err = l.check_finite(&g, &[]).unwrap_err();
        assert_eq!(err, PayloadError::NonFinite(NonFinitePart::Gradient { param: "fc.bias".into() }));
    }

    // Regression tests for the panics of the server's former `Layout`
    // (services/parameter-server/src/engine.rs), found when it was moved here.

    /// `first_non_finite` sliced `gradient[offset..offset + numel * 4]` and
    /// panicked on a short gradient; now every length is an error.
    #[test]
    fn a_short_or_long_gradient_is_a_byte_count_error_not_a_panic() {
        let l = layout(GradientEncoding::F32);
        for len in [0, 3, 19, 21] {
            let err = l.check_finite(&vec![0; len], &[]).unwrap_err();
            assert_eq!(err, PayloadError::ByteCount { what: "gradient payload", got: len, expected: 20 });
        }
        let err = l.check_finite(&[0; 20], &[0; 15]).unwrap_err();
        assert_eq!(err.to_string(), "BatchNorm buffer payload has 15 bytes, expected 16");
    }

    /// `gradient_bytes` summed `numel * 4` unchecked: an overflow panic in
    /// debug builds, a wrong (wrapped) size in release ones.
    #[test]
    fn a_layout_whose_size_overflows_is_refused() {
        let huge = usize::MAX / 2;
        let err = Layout::new(vec![("w".into(), huge)], 0, GradientEncoding::F32).unwrap_err();
        assert!(err.to_string().contains("the gradient up to w"), "{err}");
        // Each parameter fits, their sum does not.
        let quarter = isize::MAX as usize / 4 + 1;
        let err =
            Layout::new(vec![("a".into(), quarter), ("b".into(), quarter)], 0, GradientEncoding::Bf16).unwrap_err();
        assert!(err.to_string().contains("the gradient up to b"), "{err}");
        let err = Layout::new(vec![], usize::MAX / 3, GradientEncoding::F32).unwrap_err();
        assert!(err.to_string().contains("BatchNorm buffers"), "{err}");
    }

    /// A size that fits in `usize` but not in one allocation would make the
    /// assembler's `Vec::with_capacity` panic ("capacity overflow").
    #[test]
    fn a_layout_larger_than_one_allocation_is_refused() {
        // Each part fits on its own (2^62 bytes), not both together.
        let half = isize::MAX as usize / 8 + 1;
        let err = Layout::new(vec![("w".into(), half)], half, GradientEncoding::F32).unwrap_err();
        assert!(err.to_string().contains("gradient bytes plus"), "{err}");
        assert!(Layout::new(vec![("w".into(), isize::MAX as usize / 4)], 0, GradientEncoding::F32).is_ok());
    }

    /// The assembler's allocation is the layout's size: a header announcing
    /// more is refused before anything is allocated.
    #[test]
    fn an_announced_size_beyond_the_layout_allocates_nothing() {
        let l = layout(GradientEncoding::F32);
        let greedy = Announced { gradient_bytes: u64::MAX, ..honest(&l, true) };
        assert!(matches!(l.expect(&greedy, true), Err(PayloadError::AnnouncedSize { field: "gradient_bytes", .. })));
        let greedy = Announced { buffer_bytes: 1 << 40, ..honest(&l, true) };
        assert!(matches!(l.expect(&greedy, true), Err(PayloadError::AnnouncedSize { field: "buffer_bytes", .. })));
    }
}
