//! Decoding: the formats and their variants, the errors, and bad input of
//! every kind (cut short, garbage, bit flips) returning an error, never a
//! panic.

mod common;

use common::{encode_jpeg, encode_png, natural_image};
use jpeg_encoder::{ColorType, SamplingFactor};
use rwp_images::{decode, decode_with_limit, DecodeError, SplitMix64};

const W: u32 = 37;
const H: u32 = 23;

fn grey_of(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3).map(|p| p[0]).collect()
}

fn mean_abs_difference(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| f64::from(x.abs_diff(y))).sum::<f64>() / a.len() as f64
}

#[test]
fn png_variants_decode_to_the_exact_rgb() {
    let rgb = natural_image(W, H, 1);
    let grey = grey_of(&rgb);
    let grey_rgb: Vec<u8> = grey.iter().flat_map(|&g| [g; 3]).collect();
    let with_alpha = |pixels: &[u8], channels: usize| -> Vec<u8> {
        pixels.chunks_exact(channels).enumerate().flat_map(|(i, p)| p.iter().copied().chain([i as u8])).collect()
    };
    // 16-bit samples: the high byte is the 8-bit value, the low byte noise to drop.
    let sixteen: Vec<u8> = rgb.iter().enumerate().flat_map(|(i, &v)| [v, (i * 7) as u8]).collect();
    let cases: Vec<(&str, Vec<u8>, &[u8])> = vec![
        ("rgb", encode_png(W, H, 3, png::BitDepth::Eight, &rgb), &rgb),
        ("rgba", encode_png(W, H, 4, png::BitDepth::Eight, &with_alpha(&rgb, 3)), &rgb),
        ("grey", encode_png(W, H, 1, png::BitDepth::Eight, &grey), &grey_rgb),
        ("grey+alpha", encode_png(W, H, 2, png::BitDepth::Eight, &with_alpha(&grey, 1)), &grey_rgb),
        ("rgb16", encode_png(W, H, 3, png::BitDepth::Sixteen, &sixteen), &rgb),
    ];
    for (name, bytes, expected) in cases {
        let image = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((image.width(), image.height()), (W, H), "{name}");
        assert!(image.pixels() == expected, "{name}: pixels differ");
    }
}

#[test]
fn png_low_bit_depth_and_palette_expand_to_8_bits() {
    // 1-bit grey, 8 pixels a row: 0b1010_0000 is white, black, white, black, black…
    let bits = encode_png(8, 1, 1, png::BitDepth::One, &[0b1010_0000]);
    let image = decode(&bits).unwrap();
    assert_eq!(&image.pixels()[..12], &[255, 255, 255, 0, 0, 0, 255, 255, 255, 0, 0, 0]);

    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, 3, 1);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_palette(vec![10, 20, 30, 40, 50, 60]);
    encoder.write_header().unwrap().write_image_data(&[1, 0, 1]).unwrap();
    assert_eq!(decode(&bytes).unwrap().pixels(), &[40, 50, 60, 10, 20, 30, 40, 50, 60]);
}

#[test]
fn jpeg_variants_decode_close_to_their_source() {
    let (w, h) = (67, 45);
    let rgb = natural_image(w, h, 2);
    let grey = grey_of(&rgb);
    // PIL's convention (and libjpeg's for Adobe files): R = 255 - C - K.
    let cmyk: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [255 - p[0], 255 - p[1], 255 - p[2], 0]).collect();
    let sampled = |factor| move |e: &mut jpeg_encoder::Encoder<&mut Vec<u8>>| e.set_sampling_factor(factor);
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("4:2:0", encode_jpeg(w, h, ColorType::Rgb, &rgb, sampled(SamplingFactor::R_4_2_0)), rgb.clone()),
        ("4:2:2", encode_jpeg(w, h, ColorType::Rgb, &rgb, sampled(SamplingFactor::R_4_2_2)), rgb.clone()),
        ("4:4:4", encode_jpeg(w, h, ColorType::Rgb, &rgb, sampled(SamplingFactor::R_4_4_4)), rgb.clone()),
        ("progressive", encode_jpeg(w, h, ColorType::Rgb, &rgb, |e| e.set_progressive(true)), rgb.clone()),
        ("restart intervals", encode_jpeg(w, h, ColorType::Rgb, &rgb, |e| e.set_restart_interval(2)), rgb.clone()),
        ("grey", encode_jpeg(w, h, ColorType::Luma, &grey, |_| {}), grey.iter().flat_map(|&g| [g; 3]).collect()),
        ("cmyk", encode_jpeg(w, h, ColorType::Cmyk, &cmyk, |_| {}), rgb.clone()),
    ];
    for (name, bytes, expected) in cases {
        let image = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((image.width(), image.height()), (w, h), "{name}");
        // Quality 90 loses most of the source's noise (±12 levels): about 5
        // levels on average; a wrong colour conversion or layout is tens.
        let difference = mean_abs_difference(image.pixels(), &expected);
        assert!(difference < 8.0, "{name}: mean abs difference {difference} from the source");
    }
}

#[test]
fn errors_say_what_is_wrong() {
    assert!(matches!(decode(b""), Err(DecodeError::UnknownFormat(_))));
    let gif = decode(b"GIF89a....").unwrap_err();
    assert_eq!(gif.to_string(), "not a JPEG or PNG image (the file starts with 47 49 46 38 39 61 2e 2e)");
    assert_eq!(
        decode(&[]).unwrap_err().to_string(),
        "not a JPEG or PNG image (the file starts with nothing: it is empty)"
    );

    let jpeg = encode_jpeg(64, 64, ColorType::Rgb, &natural_image(64, 64, 3), |_| {});
    let cut = decode(&jpeg[..jpeg.len() / 2]).unwrap_err();
    assert_eq!(cut, DecodeError::TruncatedJpeg, "{cut}");
    assert_eq!(cut.to_string(), "truncated JPEG data (the file ends before the image does)");
    let png = encode_png(64, 64, 3, png::BitDepth::Eight, &natural_image(64, 64, 3));
    assert_eq!(decode(&png[..png.len() / 2]).unwrap_err(), DecodeError::TruncatedPng);
}

/// A PNG whose header declares `width` x `height` and no pixel data.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend(width.to_be_bytes());
    chunk.extend(height.to_be_bytes());
    chunk.extend([8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    bytes.extend(13u32.to_be_bytes());
    bytes.extend(&chunk);
    bytes.extend(crc32fast::hash(&chunk).to_be_bytes());
    bytes
}

/// A JPEG header (SOI, a quantisation table, a baseline frame of `width` x
/// `height`) and nothing after it.
fn jpeg_header_only(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x43, 0x00];
    bytes.extend([1u8; 64]);
    bytes.extend([0xFF, 0xC0, 0x00, 0x11, 0x08]);
    bytes.extend(height.to_be_bytes());
    bytes.extend(width.to_be_bytes());
    bytes.extend([3, 1, 0x22, 0, 2, 0x11, 0, 3, 0x11, 0]);
    bytes
}

#[test]
fn decompression_bombs_are_refused_from_their_header() {
    // Declared 60000 x 60000 (3.6 G pixels, 10.8 GB of RGB) in a few bytes:
    // refused without allocating.
    let png = decode(&png_header_only(60_000, 60_000)).unwrap_err();
    assert_eq!(png, DecodeError::TooLarge { width: 60_000, height: 60_000, limit: 100_000_000 });
    assert_eq!(png.to_string(), "image of 60000x60000 pixels: more than the limit of 100000000 pixels");
    let jpeg = decode(&jpeg_header_only(60_000, 60_000)).unwrap_err();
    assert_eq!(jpeg, DecodeError::TooLarge { width: 60_000, height: 60_000, limit: 100_000_000 });
    // The limit applies to the product of the sides.
    let limited = decode_with_limit(&png_header_only(100, 100), 9_999).unwrap_err();
    assert!(matches!(limited, DecodeError::TooLarge { width: 100, height: 100, limit: 9_999 }), "{limited}");
    let small = encode_png(100, 100, 3, png::BitDepth::Eight, &natural_image(100, 100, 4));
    assert!(decode_with_limit(&small, 10_000).is_ok());
}

#[test]
fn images_without_pixels_are_errors() {
    let error = decode(&jpeg_header_only(0, 16)).unwrap_err();
    assert_eq!(error, DecodeError::NoPixels { width: 0, height: 16 });
    assert_eq!(error.to_string(), "image of 0x16 pixels (a side of 0)");
    let error = decode(&png_header_only(0, 16)).unwrap_err();
    assert!(matches!(error, DecodeError::NoPixels { width: 0, height: 16 } | DecodeError::Png(_)), "{error}");
}

fn sample_files() -> Vec<(&'static str, Vec<u8>)> {
    let rgb = natural_image(40, 30, 5);
    vec![
        ("baseline jpeg", encode_jpeg(40, 30, ColorType::Rgb, &rgb, |_| {})),
        ("progressive jpeg", encode_jpeg(40, 30, ColorType::Rgb, &rgb, |e| e.set_progressive(true))),
        ("grey jpeg", encode_jpeg(40, 30, ColorType::Luma, &grey_of(&rgb), |_| {})),
        ("png", encode_png(40, 30, 3, png::BitDepth::Eight, &rgb)),
    ]
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for (name, bytes) in sample_files() {
        let decodes: Vec<bool> = (0..=bytes.len()).map(|len| decode(&bytes[..len]).is_ok()).collect();
        let shortest = decodes.iter().position(|&ok| ok).expect("the whole file decodes");
        assert!(decodes[shortest..].iter().all(|&ok| ok), "{name}: every length from {shortest} decodes");
        // A PNG decoder stops after the image data and the next chunk's
        // header: of the last chunk (IEND, 12 bytes) only 8 are needed.
        let needed = if name == "png" { bytes.len() - 4 } else { bytes.len() };
        assert_eq!(shortest, needed, "{name}: the shortest prefix that decodes");
    }
}

#[test]
fn garbage_and_bit_flips_never_panic() {
    let mut rng = SplitMix64::new(11);
    let mut decoded_after_flips = 0;
    for (_, bytes) in sample_files() {
        for _ in 0..300 {
            let mut corrupt = bytes.clone();
            for _ in 0..=rng.integer_up_to(8) {
                let at = rng.integer_up_to(corrupt.len() as u32 - 1) as usize;
                corrupt[at] ^= 1 << rng.integer_up_to(7);
            }
            // Either outcome is fine; a panic fails the test.
            decoded_after_flips += usize::from(decode(&corrupt).is_ok());
        }
        for _ in 0..100 {
            // The right magic bytes followed by noise.
            let mut noise = bytes[..8].to_vec();
            noise.extend((0..rng.integer_up_to(2000)).map(|_| rng.next_u64() as u8));
            assert!(decode(&noise).is_err());
        }
    }
    let random: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    assert!(decode(&random).is_err());
    assert!(decoded_after_flips > 0, "some flips (in pixel data) still decode");
}
