//! The batch loader: the same bits whatever the number of threads, the same
//! as one image at a time, bad items reported and left out, prefetching.

mod common;

use std::sync::Arc;

use common::{encode_jpeg, encode_png, natural_image};
use rwp_images::{decode, transform_into, LoadedBatch, Loader, Normalize, Transform};

/// JPEGs and PNGs of assorted sizes, with an unreadable item (3), a file
/// that is not an image (5) and a truncated JPEG (8).
fn files() -> Vec<Option<Vec<u8>>> {
    (0..12u32)
        .map(|i| {
            let (width, height) = (90 + 37 * i, 140 - 7 * i);
            let rgb = natural_image(width, height, u64::from(i));
            match i {
                3 => None,
                5 => Some(b"<html>not found</html>".to_vec()),
                8 => {
                    let jpeg = encode_jpeg(width, height, jpeg_encoder::ColorType::Rgb, &rgb, |_| {});
                    Some(jpeg[..jpeg.len() * 2 / 3].to_vec())
                }
                _ if i % 2 == 0 => Some(encode_png(width, height, 3, png::BitDepth::Eight, &rgb)),
                _ => Some(encode_jpeg(width, height, jpeg_encoder::ColorType::Rgb, &rgb, |_| {})),
            }
        })
        .collect()
}

fn read(files: &[Option<Vec<u8>>]) -> impl Fn(usize) -> Result<Vec<u8>, String> + Sync + '_ {
    |i| files[i].clone().ok_or_else(|| format!("item {i}: no such file"))
}

/// All 12 files through `loader`, normalised for ImageNet.
fn load_all(loader: &Loader, files: &[Option<Vec<u8>>], seeds: &[u64], transform: Transform) -> LoadedBatch {
    loader.load(files.len(), read(files), seeds, &transform, &Normalize::IMAGENET)
}

fn seeds() -> Vec<u64> {
    (0..12).map(|i| 1000 + i * 7).collect()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn thread_count_does_not_change_a_bit() {
    let files = files();
    for transform in [Transform::ImagenetTrain { size: 64 }, Transform::ImagenetEval { size: 48 }] {
        let batches: Vec<LoadedBatch> =
            [1, 2, 3].into_iter().map(|threads| load_all(&Loader::new(threads), &files, &seeds(), transform)).collect();
        for batch in &batches[1..] {
            assert_eq!(batch.kept, batches[0].kept);
            assert!(same_bits(&batch.pixels, &batches[0].pixels), "{transform:?}: pixels differ between thread counts");
        }
        // And the same as decoding and transforming each item alone.
        let one = transform.output_len();
        for (slot, &i) in batches[0].kept.iter().enumerate() {
            let image = decode(files[i].as_ref().unwrap()).unwrap();
            let mut out = vec![0.0; one];
            transform_into(&image, &transform, &Normalize::IMAGENET, seeds()[i], &mut out);
            assert!(same_bits(&out, &batches[0].pixels[slot * one..(slot + 1) * one]), "item {i}");
        }
    }
}

#[test]
fn bad_items_are_reported_and_left_out() {
    let files = files();
    let transform = Transform::ImagenetTrain { size: 32 };
    let batch = load_all(&Loader::new(2), &files, &seeds(), transform);
    assert_eq!(batch.kept, vec![0, 1, 2, 4, 6, 7, 9, 10, 11]);
    assert_eq!(batch.pixels.len(), 9 * transform.output_len());
    let failed: Vec<(usize, &str)> = batch.failed.iter().map(|(i, reason)| (*i, reason.as_str())).collect();
    assert_eq!(
        failed,
        vec![
            (3, "item 3: no such file"),
            (5, "not a JPEG or PNG image (the file starts with 3c 68 74 6d 6c 3e 6e 6f)"),
            (8, "truncated JPEG data (the file ends before the image does)"),
        ]
    );
    // The good items moved up keep their own pixels: the same as a batch of them alone.
    let good: Vec<Option<Vec<u8>>> = batch.kept.iter().map(|&i| files[i].clone()).collect();
    let good_seeds: Vec<u64> = batch.kept.iter().map(|&i| seeds()[i]).collect();
    let alone = load_all(&Loader::new(1), &good, &good_seeds, transform);
    assert!(alone.failed.is_empty());
    assert!(same_bits(&alone.pixels, &batch.pixels));
}

#[test]
fn seeds_choose_the_crops() {
    let files = files();
    let transform = Transform::ImagenetTrain { size: 32 };
    let loader = Loader::new(2);
    let first = load_all(&loader, &files, &seeds(), transform);
    let other_seeds: Vec<u64> = seeds().iter().map(|s| s + 1).collect();
    let second = load_all(&loader, &files, &other_seeds, transform);
    let one = transform.output_len();
    let differing = (0..first.kept.len())
        .filter(|slot| {
            !same_bits(&first.pixels[slot * one..(slot + 1) * one], &second.pixels[slot * one..(slot + 1) * one])
        })
        .count();
    assert_eq!(differing, first.kept.len(), "every item gets a new crop from a new seed");
}

#[test]
fn prefetch_gives_what_load_gives() {
    let files = Arc::new(files());
    let loader = Loader::new(2);
    let transform = Transform::ImagenetTrain { size: 40 };
    let shared = Arc::clone(&files);
    let pending = loader.prefetch(
        12,
        move |i| shared[i].clone().ok_or_else(|| format!("item {i}: no such file")),
        seeds(),
        transform,
        Normalize::IMAGENET,
    );
    let loaded = load_all(&loader, &files, &seeds(), transform);
    assert_eq!(pending.wait(), loaded);
}

#[test]
fn a_pending_batch_outlives_its_loader() {
    let files = Arc::new(files());
    let pending = {
        let loader = Loader::new(1);
        let shared = Arc::clone(&files);
        loader.prefetch(
            12,
            move |i| shared[i].clone().ok_or_else(|| "gone".to_string()),
            seeds(),
            Transform::Resize { size: 16 },
            Normalize::IMAGENET,
        )
    };
    assert_eq!(pending.wait().kept.len(), 9);
}

#[test]
#[should_panic(expected = "storage exploded")]
fn a_panic_while_prefetching_surfaces_in_wait() {
    let pending = Loader::new(2).prefetch(
        4,
        |i| if i == 2 { panic!("storage exploded") } else { Err("no data".to_string()) },
        vec![0; 4],
        Transform::Resize { size: 8 },
        Normalize::IMAGENET,
    );
    let _ = pending.wait();
}

#[test]
fn recycled_buffers_give_the_same_bits() {
    let files = files();
    let transform = Transform::ImagenetTrain { size: 24 };
    let loader = Loader::new(2);
    let fresh = load_all(&loader, &files, &seeds(), transform);
    // Whatever a recycled buffer holds, and whatever its length, is overwritten.
    for len in [0, 5, fresh.pixels.len(), 3 * fresh.pixels.len()] {
        loader.recycle(vec![f32::NAN; len]);
        let again = load_all(&loader, &files, &seeds(), transform);
        assert!(same_bits(&again.pixels, &fresh.pixels), "after recycling {len} floats");
    }
}

#[test]
fn an_empty_batch_is_empty() {
    let batch =
        Loader::new(2).load(0, |_| Err("none".to_string()), &[], &Transform::Resize { size: 8 }, &Normalize::IMAGENET);
    assert!(batch.pixels.is_empty() && batch.kept.is_empty() && batch.failed.is_empty());
}
