//! A gradient push as the server reads it (`Handlers::push` in
//! services/parameter-server/src/grpc.rs): a stream of rwp.v1
//! `GradientChunk` messages, given here both as structured messages and as
//! arbitrary bytes decoded with prost, checked against an arbitrary payload
//! layout with `rwp_spec::payload`. Every step must give `Ok` or an error
//! that a simple model of the rules agrees with, never a panic, and no
//! allocation beyond the layout's payload size.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rwp_proto::encoding_from_wire;
use rwp_proto::v1::{self, gradient_chunk::Part};
use rwp_spec::payload::{
    header_first, Announced, Layout, NonFinitePart, PayloadAssembler, PayloadError, PayloadSizes, PushMessage,
};
use rwp_spec::GradientEncoding;

/// Layouts whose payload is larger than this are only built (to exercise
/// the size arithmetic), not assembled: the assembler allocates the layout's
/// size, which for a real model is its gradient.
const MAX_ASSEMBLED_BYTES: usize = 1 << 16;

#[derive(Arbitrary, Debug)]
enum ParamSize {
    Small(u8),
    Any(usize),
}

#[derive(Arbitrary, Debug)]
enum Announce {
    /// The layout's value.
    Layout,
    /// The layout's value plus this (wrapping).
    Off(i16),
    Exact(u64),
}

#[derive(Arbitrary, Debug)]
enum Chunk {
    /// A header: `None` is the honest one for the layout.
    Header(Option<(i32, Announce, Announce)>),
    Data(Vec<u8>),
    /// `len` copies of `byte` (0 is finite everywhere, 0xff is NaN).
    Fill {
        len: u16,
        byte: u8,
    },
    /// A message with no part set.
    Empty,
    /// Arbitrary bytes decoded as a `GradientChunk`: a message that does
    /// not decode ends the stream, as the transport would.
    Encoded(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    params: Vec<ParamSize>,
    buffer_elements: ParamSize,
    bf16: bool,
    returns_buffers: bool,
    /// Read as a duplicate: checked, not kept.
    duplicate: bool,
    chunks: Vec<Chunk>,
    /// Checked directly with `Layout::check_finite`, whatever their lengths.
    loose_gradient: Vec<u8>,
    loose_buffers: Vec<u8>,
}

fn size(s: &ParamSize) -> usize {
    match *s {
        ParamSize::Small(n) => usize::from(n),
        ParamSize::Any(n) => n,
    }
}

fn announce(a: &Announce, layout_value: usize) -> u64 {
    match *a {
        Announce::Layout => layout_value as u64,
        Announce::Off(d) => (layout_value as u64).wrapping_add_signed(i64::from(d)),
        Announce::Exact(v) => v,
    }
}

/// The chunk as a stream message, `None` where the stream breaks.
fn message(chunk: Chunk, layout: &Layout, returns_buffers: bool) -> Option<PushMessage<v1::GradientHeader, Bytes>> {
    let part = match chunk {
        Chunk::Header(custom) => {
            let buffers = if returns_buffers { layout.buffer_bytes() } else { 0 };
            let (encoding, gradient_bytes, buffer_bytes) = match custom {
                None => (
                    v1::GradientEncoding::from(layout.encoding()) as i32,
                    layout.gradient_bytes() as u64,
                    buffers as u64,
                ),
                Some((encoding, g, b)) => (encoding, announce(&g, layout.gradient_bytes()), announce(&b, buffers)),
            };
            Some(Part::Header(v1::GradientHeader { encoding, gradient_bytes, buffer_bytes, ..Default::default() }))
        }
        Chunk::Data(data) => Some(Part::Data(Bytes::from(data))),
        Chunk::Fill { len, byte } => Some(Part::Data(Bytes::from(vec![byte; usize::from(len)]))),
        Chunk::Empty => None,
        Chunk::Encoded(bytes) => return v1::GradientChunk::decode(bytes.as_slice()).ok().map(PushMessage::from),
    };
    Some(PushMessage::from(v1::GradientChunk { part }))
}

/// The finiteness rule, written out plainly: lengths first, then each
/// parameter in order, then the buffers.
fn model_check_finite(layout: &Layout, gradient: &[u8], buffers: &[u8]) -> Result<(), PayloadError> {
    if gradient.len() != layout.gradient_bytes() {
        return Err(PayloadError::ByteCount {
            what: "gradient payload",
            got: gradient.len(),
            expected: layout.gradient_bytes(),
        });
    }
    if !buffers.is_empty() && buffers.len() != layout.buffer_bytes() {
        return Err(PayloadError::ByteCount {
            what: "BatchNorm buffer payload",
            got: buffers.len(),
            expected: layout.buffer_bytes(),
        });
    }
    let values: Vec<f32> = match layout.encoding() {
        GradientEncoding::F32 => {
            gradient.chunks(4).map(|b| f32::from_le_bytes(b.try_into().expect("whole elements"))).collect()
        }
        GradientEncoding::Bf16 => {
            gradient.chunks(2).map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)).collect()
        }
    };
    let mut at = 0;
    for (name, numel) in layout.params() {
        if values[at..at + numel].iter().any(|v| !v.is_finite()) {
            return Err(PayloadError::NonFinite(NonFinitePart::Gradient { param: name.clone() }));
        }
        at += numel;
    }
    let buffers_finite =
        buffers.chunks(4).all(|b| f32::from_le_bytes(b.try_into().expect("whole elements")).is_finite());
    if !buffers_finite {
        return Err(PayloadError::NonFinite(NonFinitePart::Buffers));
    }
    Ok(())
}

fuzz_target!(|input: Input| {
    let encoding = if input.bf16 { GradientEncoding::Bf16 } else { GradientEncoding::F32 };
    let params: Vec<(String, usize)> =
        input.params.iter().enumerate().map(|(i, p)| (format!("layer{i}.weight"), size(p))).collect();
    let layout = match Layout::new(params.clone(), size(&input.buffer_elements), encoding) {
        Ok(layout) => layout,
        Err(e) => {
            assert!(matches!(e, PayloadError::LayoutTooLarge(_)), "{e}");
            // Refused only when the sizes really overflow one allocation.
            let element = encoding.bytes_per_element() as u128;
            let gradient: u128 = params.iter().map(|(_, n)| *n as u128 * element).sum();
            let total = gradient + size(&input.buffer_elements) as u128 * 4;
            assert!(total > isize::MAX as u128, "{e} for a total of {total} bytes");
            return;
        }
    };
    let total = layout.gradient_bytes() + layout.buffer_bytes();
    if total > MAX_ASSEMBLED_BYTES {
        return;
    }
    if layout.check_finite(&input.loose_gradient, &input.loose_buffers)
        != model_check_finite(&layout, &input.loose_gradient, &input.loose_buffers)
    {
        panic!("check_finite disagrees with the model");
    }

    let returns_buffers = input.returns_buffers;
    let mut messages = input.chunks.into_iter().map_while(|c| message(c, &layout, returns_buffers));
    let header = match header_first(messages.next()) {
        Ok(header) => header,
        Err(e) => {
            assert!(matches!(e, PayloadError::HeaderNotFirst | PayloadError::EmptyPush), "{e}");
            return;
        }
    };
    let Ok(announced) = Announced::try_from(&header) else {
        assert!(encoding_from_wire(header.encoding).is_err());
        return;
    };
    let sizes: PayloadSizes = match layout.expect(&announced, returns_buffers) {
        Ok(sizes) => sizes,
        Err(e) => {
            let honest_buffers = if returns_buffers { layout.buffer_bytes() } else { 0 } as u64;
            let honest = announced.encoding == layout.encoding()
                && announced.gradient_bytes == layout.gradient_bytes() as u64
                && announced.buffer_bytes == honest_buffers;
            assert!(!honest, "an honest header refused: {e}");
            return;
        }
    };
    assert_eq!(sizes.gradient(), layout.gradient_bytes());
    assert_eq!(sizes.buffers(), if returns_buffers { layout.buffer_bytes() } else { 0 });
    assert_eq!(announced.gradient_bytes, sizes.gradient() as u64);

    let mut assembler =
        if input.duplicate { PayloadAssembler::discarding(sizes) } else { PayloadAssembler::new(sizes) };
    let mut sent: Vec<u8> = Vec::new();
    for m in messages {
        let data = match &m {
            PushMessage::Data(d) => Some(d.clone()),
            PushMessage::Header(_) | PushMessage::Empty => None,
        };
        match assembler.feed(m) {
            Ok(()) => sent.extend_from_slice(&data.expect("only data is taken")),
            Err(PayloadError::NotData { .. }) => {
                assert!(data.is_none());
                return;
            }
            Err(e @ PayloadError::Oversize { .. }) => {
                assert!(sent.len() + data.expect("only data overflows").len() > sizes.total(), "{e}");
                return;
            }
            Err(e) => panic!("unexpected error while feeding: {e}"),
        }
        assert_eq!(assembler.received(), sent.len());
    }
    match assembler.finish() {
        Ok(Some(payload)) => {
            assert!(!input.duplicate);
            assert_eq!(payload.gradient().len(), sizes.gradient());
            assert_eq!(payload.buffers().len(), sizes.buffers());
            let expected = model_check_finite(&layout, payload.gradient(), payload.buffers());
            assert_eq!(layout.check_finite(payload.gradient(), payload.buffers()), expected);
            let bytes = payload.into_bytes();
            assert!(bytes.capacity() <= total, "allocated {} for a {total}-byte layout", bytes.capacity());
            assert_eq!(bytes, sent);
        }
        Ok(None) => {
            assert!(input.duplicate);
            assert_eq!(sent.len(), sizes.total());
        }
        Err(e @ PayloadError::Truncated { .. }) => assert!(sent.len() < sizes.total(), "{e}"),
        Err(e) => panic!("unexpected error at the end: {e}"),
    }
});
