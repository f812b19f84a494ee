//! JPEG and PNG files to 8-bit RGB.

use zune_jpeg::errors::{DecodeErrors, UnsupportedSchemes};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// The most pixels an image may declare (width × height): 100 M pixels,
/// 300 MB of decoded RGB. Checked on the header, before the pixels are
/// allocated.
pub const MAX_PIXELS: u64 = 100_000_000;

const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (`R G B R G B …`).
#[derive(Clone, PartialEq, Eq)]
pub struct Rgb8Image {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl std::fmt::Debug for Rgb8Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rgb8Image({}x{})", self.width, self.height)
    }
}

impl Rgb8Image {
    /// An image from its interleaved pixels; `None` unless `pixels` holds
    /// exactly `3 * width * height` bytes and neither side is 0.
    #[must_use]
    pub fn from_raw(width: u32, height: u32, pixels: Vec<u8>) -> Option<Self> {
        let expected = u64::from(width) * u64::from(height) * 3;
        (width > 0 && height > 0 && pixels.len() as u64 == expected).then_some(Self { width, height, pixels })
    }

    #[must_use]
    pub fn width(&self) -> u32 {
        self.width
    }

    #[must_use]
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The interleaved pixels, `3 * width * height` bytes.
    #[must_use]
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    #[must_use]
    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    pub(crate) fn view(&self) -> RgbView<'_> {
        RgbView { width: self.width, height: self.height, pixels: &self.pixels }
    }
}

/// A borrowed RGB image: what the transforms read (the loader decodes into a
/// buffer each thread reuses).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RgbView<'a> {
    pub width: u32,
    pub height: u32,
    pub pixels: &'a [u8],
}

/// Why bytes did not decode into an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JPEG or PNG image (the file starts with {0})")]
    UnknownFormat(String),
    #[error("truncated JPEG data (the file ends before the image does)")]
    TruncatedJpeg,
    #[error("truncated PNG data (the file ends before the image does)")]
    TruncatedPng,
    #[error("invalid JPEG data: {0}")]
    Jpeg(String),
    #[error("invalid PNG data: {0}")]
    Png(String),
    #[error("unsupported JPEG: {0}")]
    UnsupportedJpeg(String),
    #[error("image of {width}x{height} pixels (a side of 0)")]
    NoPixels { width: u64, height: u64 },
    #[error("image of {width}x{height} pixels: more than the limit of {limit} pixels")]
    TooLarge { width: u64, height: u64, limit: u64 },
}

/// Decodes a JPEG or PNG file (told apart by their first bytes) into 8-bit
/// RGB: greyscale is replicated, alpha dropped (as PIL's `convert("RGB")`
/// does), 16-bit samples keep their high byte, CMYK JPEGs are converted.
/// EXIF orientation is not applied (as torchvision's `ImageFolder` does not).
/// Images of more than [`MAX_PIXELS`] are refused from their header.
pub fn decode(bytes: &[u8]) -> Result<Rgb8Image, DecodeError> {
    decode_with_limit(bytes, MAX_PIXELS)
}

/// Decodes `bytes` and returns the image's width and height, or why it
/// cannot be decoded: what checking a dataset needs (`rwp_data::inspect`).
pub fn decoded_size(bytes: &[u8]) -> Result<(u32, u32), String> {
    decode(bytes).map(|image| (image.width(), image.height())).map_err(|e| e.to_string())
}

/// [`decode`] with another limit on width × height.
pub fn decode_with_limit(bytes: &[u8], max_pixels: u64) -> Result<Rgb8Image, DecodeError> {
    let mut pixels = Vec::new();
    let (width, height) = decode_reusing(bytes, max_pixels, &mut pixels)?;
    Ok(Rgb8Image { width, height, pixels })
}

/// Decodes into `pixels` (resized to `3 * width * height`, its allocation
/// reused); returns the image's width and height.
pub(crate) fn decode_reusing(bytes: &[u8], max_pixels: u64, pixels: &mut Vec<u8>) -> Result<(u32, u32), DecodeError> {
    if bytes.starts_with(JPEG_MAGIC) {
        decode_jpeg(bytes, max_pixels, pixels)
    } else if bytes.starts_with(PNG_MAGIC) {
        decode_png(bytes, max_pixels, pixels)
    } else {
        let start: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Err(DecodeError::UnknownFormat(if start.is_empty() { "nothing: it is empty".into() } else { start.join(" ") }))
    }
}

fn check_size(width: u64, height: u64, max_pixels: u64) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::NoPixels { width, height });
    }
    if width.saturating_mul(height) > max_pixels {
        return Err(DecodeError::TooLarge { width, height, limit: max_pixels });
    }
    Ok(())
}

fn jpeg_options(strict: bool) -> DecoderOptions {
    DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(strict)
        // The size is checked before (`check_size`); a JPEG side is at most 65535.
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
}

fn jpeg_error(error: DecodeErrors) -> DecodeError {
    match error {
        DecodeErrors::ExhaustedData | DecodeErrors::FormatStatic("Premature end of buffer") => {
            DecodeError::TruncatedJpeg
        }
        DecodeErrors::Unsupported(scheme) => DecodeError::UnsupportedJpeg(
            match scheme {
                UnsupportedSchemes::ExtendedSequentialHuffman => "extended sequential (12-bit) coding",
                UnsupportedSchemes::LosslessHuffman | UnsupportedSchemes::LosslessArithmetic => "lossless coding",
                UnsupportedSchemes::ExtendedSequentialDctArithmetic | UnsupportedSchemes::ProgressiveDctArithmetic => {
                    "arithmetic coding"
                }
            }
            .into(),
        ),
        DecodeErrors::IoErrors(_) => DecodeError::TruncatedJpeg,
        // zune-jpeg's Display is its Debug: the message without the quotes.
        DecodeErrors::Format(message)
        | DecodeErrors::HuffmanDecode(message)
        | DecodeErrors::MCUError(message)
        | DecodeErrors::DqtError(message)
        | DecodeErrors::SosError(message)
        | DecodeErrors::SofError(message) => DecodeError::Jpeg(message),
        DecodeErrors::FormatStatic(message) => DecodeError::Jpeg(message.into()),
        other => DecodeError::Jpeg(other.to_string()),
    }
}

/// What the markers before the first scan say: the frame's size, and where
/// the entropy-coded data starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct JpegLayout {
    width: u16,
    height: u16,
    first_scan: usize,
}

/// Walks the marker segments from SOI to the first SOS, decoding no pixel:
/// the frame's size is checked against `max_pixels` as soon as it is read,
/// before the decoder allocates anything.
fn jpeg_layout(bytes: &[u8], max_pixels: u64) -> Result<JpegLayout, DecodeError> {
    let mut size = None;
    let mut at = 2;
    loop {
        // Fill bytes (0xFF) may precede a marker, and like libjpeg we skip
        // stray bytes between segments.
        while at < bytes.len() && bytes[at] != 0xFF {
            at += 1;
        }
        while at < bytes.len() && bytes[at] == 0xFF {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else { return Err(DecodeError::TruncatedJpeg) };
        at += 1;
        if matches!(marker, 0x01 | 0xD0..=0xD7) {
            continue; // markers without a segment
        }
        if marker == 0xD9 {
            return Err(DecodeError::Jpeg("end of image before any scan".into()));
        }
        let Some(length) = bytes.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
            return Err(DecodeError::TruncatedJpeg);
        };
        let segment = bytes.get(at + 2..at + length).ok_or(DecodeError::TruncatedJpeg)?;
        // Start-of-frame markers: C0 to CF but for DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let [_, h0, h1, w0, w1, ..] = *segment else { return Err(DecodeError::Jpeg("short frame header".into())) };
            let (width, height) = (u16::from_be_bytes([w0, w1]), u16::from_be_bytes([h0, h1]));
            check_size(u64::from(width), u64::from(height), max_pixels)?;
            size = Some((width, height));
        }
        at += length;
        if marker == 0xDA {
            let (width, height) = size.ok_or_else(|| DecodeError::Jpeg("a scan before the frame header".into()))?;
            return Ok(JpegLayout { width, height, first_scan: at });
        }
    }
}

/// A file cut short is an error, not an image padded with grey (as PIL,
/// which refuses truncated files): its scans must be followed by the
/// end-of-image marker (which cannot occur inside entropy-coded data). Then
/// a strict decode; if that fails the data is corrupt, and a second, lenient
/// decode goes as far as it can, as libjpeg (PIL) does.
fn decode_jpeg(bytes: &[u8], max_pixels: u64, pixels: &mut Vec<u8>) -> Result<(u32, u32), DecodeError> {
    let layout = jpeg_layout(bytes, max_pixels)?;
    // Searched from the end: there, unless something follows the image.
    if !bytes[layout.first_scan..].windows(2).rev().any(|pair| pair == [0xFF, 0xD9]) {
        return Err(DecodeError::TruncatedJpeg);
    }
    match decode_jpeg_once(bytes, layout, pixels, jpeg_options(true)) {
        Err(DecodeError::Jpeg(_) | DecodeError::TruncatedJpeg) => {
            decode_jpeg_once(bytes, layout, pixels, jpeg_options(false))
        }
        other => other,
    }
}

fn decode_jpeg_once(
    bytes: &[u8],
    layout: JpegLayout,
    pixels: &mut Vec<u8>,
    options: DecoderOptions,
) -> Result<(u32, u32), DecodeError> {
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(jpeg_error)?;
    let (width, height) = decoder.dimensions().ok_or_else(|| DecodeError::Jpeg("no frame header".into()))?;
    // The size checked is the size decoded.
    if (width, height) != (usize::from(layout.width), usize::from(layout.height)) {
        return Err(DecodeError::Jpeg("conflicting frame headers".into()));
    }
    let size = decoder.output_buffer_size().ok_or_else(|| DecodeError::Jpeg("no frame header".into()))?;
    if size != width * height * 3 {
        return Err(DecodeError::Jpeg(format!("decoder output of {size} bytes for {width}x{height} RGB")));
    }
    // The decoder writes every byte: a reused buffer is only resized (zeroing
    // half a megabyte per image would cost more than a tenth of a decode).
    pixels.resize(size, 0);
    pixels.truncate(size);
    decoder.decode_into(pixels).map_err(jpeg_error)?;
    // Both sides are at most 65535 (the JPEG header holds 16 bits each).
    Ok((width as u32, height as u32))
}

fn png_error(error: png::DecodingError) -> DecodeError {
    match error {
        png::DecodingError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => DecodeError::TruncatedPng,
        other => DecodeError::Png(other.to_string()),
    }
}

fn decode_png(bytes: &[u8], max_pixels: u64, pixels: &mut Vec<u8>) -> Result<(u32, u32), DecodeError> {
    let mut decoder = png::Decoder::new(bytes);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    decoder.set_ignore_text_chunk(true);
    let header = decoder.read_header_info().map_err(png_error)?;
    let (width, height) = (header.width, header.height);
    // The decoder's own limits (`png::Limits`) cover its row buffers; the
    // output, allocated here, is bounded by this check.
    check_size(u64::from(width), u64::from(height), max_pixels)?;
    let mut reader = decoder.read_info().map_err(png_error)?;
    let mut raw = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut raw).map_err(png_error)?;
    let raw = &raw[..frame.buffer_size()];
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(DecodeError::Png("palette left unexpanded".into())),
    };
    let count = width as usize * height as usize;
    if frame.bit_depth != png::BitDepth::Eight || raw.len() != count * channels {
        return Err(DecodeError::Png(format!(
            "unexpected decoder output {:?} {:?}",
            frame.color_type, frame.bit_depth
        )));
    }
    pixels.clear();
    pixels.reserve(count * 3);
    for pixel in raw.chunks_exact(channels) {
        if channels < 3 {
            pixels.extend_from_slice(&[pixel[0]; 3]);
        } else {
            pixels.extend_from_slice(&pixel[..3]);
        }
    }
    Ok((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix64;

    fn decode_with_simd(bytes: &[u8], simd: bool) -> Vec<u8> {
        let layout = jpeg_layout(bytes, MAX_PIXELS).unwrap();
        let mut pixels = Vec::new();
        decode_jpeg_once(bytes, layout, &mut pixels, jpeg_options(true).set_use_unsafe(simd)).unwrap();
        pixels
    }

    /// zune-jpeg picks AVX2 (x86) or NEON (ARM) code at run time where the CPU
    /// has it: the determinism contract needs those paths to decode to the
    /// same bytes as the scalar one. On a CPU without them this compares
    /// scalar with scalar.
    #[test]
    fn simd_and_scalar_jpeg_paths_decode_the_same_bytes() {
        use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
        let mut checked = 0;
        for (width, height) in [(64u16, 48u16), (97, 61), (250, 13)] {
            let rgb: Vec<u8> = (0..u32::from(width) * u32::from(height) * 3)
                .map(|i| {
                    let (x, y, c) = ((i / 3) % u32::from(width), (i / 3) / u32::from(width), i % 3);
                    ((x * (3 + c) + y * 5) ^ (x * y / 7))
                        .wrapping_add(SplitMix64::new(u64::from(i)).next_u64() as u32 % 24) as u8
                })
                .collect();
            let grey: Vec<u8> = rgb.iter().step_by(3).copied().collect();
            for (color, pixels) in [(ColorType::Rgb, &rgb), (ColorType::Luma, &grey)] {
                for sampling in
                    [SamplingFactor::R_4_2_0, SamplingFactor::R_4_2_2, SamplingFactor::R_4_4_0, SamplingFactor::R_4_4_4]
                {
                    for progressive in [false, true] {
                        let mut bytes = Vec::new();
                        let mut encoder = Encoder::new(&mut bytes, 85);
                        encoder.set_sampling_factor(sampling);
                        encoder.set_progressive(progressive);
                        encoder.encode(pixels, width, height, color).unwrap();
                        let (simd, scalar) = (decode_with_simd(&bytes, true), decode_with_simd(&bytes, false));
                        assert!(simd == scalar, "{width}x{height} {color:?} {sampling:?} progressive {progressive}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 48);
    }
}
