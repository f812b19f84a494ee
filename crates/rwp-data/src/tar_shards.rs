//! `tar-shards`: WebDataset's convention. A split is a list of tar files,
//! named by a brace range (`train-{0000..0127}.tar`) or found in a folder
//! (its `.tar` files sorted by name). Consecutive members that share a key
//! (the member's path up to the first dot of its file name) form a sample:
//! `KEY.jpg`, `KEY.jpeg` or `KEY.png` is its image and `KEY.cls` its label,
//! a class number in text; other members are left out. The classes are
//! `0..=` the largest label of any split.

use std::io::Read;

use crate::image_folder::is_image_name;
use crate::index::{DataIndex, SampleRef, Split, SplitIndex};
use crate::storage::{files_named, Store};
use crate::{limits, DataError};

/// A sample being gathered from consecutive members.
#[derive(Default)]
struct Pending {
    key: String,
    image: Option<(u64, u64)>,
    label: Option<u32>,
}

/// Splits a member's path into its key and its extension (lower case).
fn key_and_extension(path: &str) -> (&str, String) {
    let start = path.rfind('/').map_or(0, |i| i + 1);
    match path[start..].find('.') {
        Some(dot) => (&path[..start + dot], path[start + dot + 1..].to_ascii_lowercase()),
        None => (path, String::new()),
    }
}

pub(crate) fn index(listed: &[(Split, &str, String, Store)]) -> Result<DataIndex, DataError> {
    let mut splits = Vec::new();
    let mut largest = None;
    for (split, location, path, store) in listed {
        let field = split.field();
        let mut index = SplitIndex::new(*split, location, store);
        for shard in files_named(store, field, path, ".tar", "shard")? {
            let file = index.files.len() as u32;
            read_shard(store, field, &shard, file, &mut index)?;
            index.files.push(shard);
            if index.samples.len() as u64 > limits::MAX_SAMPLES {
                return Err(DataError::invalid(field, path.as_str(), "holds too many samples"));
            }
        }
        largest = largest.max(index.labels.iter().copied().max());
        splits.push(index);
    }
    let classes = largest.map_or(0, |l| l + 1);
    let names = (0..classes).map(|c| c.to_string()).collect();
    Ok(DataIndex::assemble(rwp_spec::DatasetKind::TarShards, names, splits))
}

fn read_shard(
    store: &Store,
    field: &'static str,
    shard: &str,
    file: u32,
    index: &mut SplitIndex,
) -> Result<(), DataError> {
    let unreadable = |e: std::io::Error| DataError::io(field, shard, &e);
    let reader = store.open(shard).map_err(unreadable)?;
    let mut archive = tar::Archive::new(reader);
    let mut pending: Option<Pending> = None;
    let finish = |pending: Option<Pending>, index: &mut SplitIndex| -> Result<(), DataError> {
        let Some(sample) = pending else { return Ok(()) };
        let Some((offset, len)) = sample.image else {
            return Err(DataError::invalid(
                field,
                shard,
                format!("has a sample '{}' with no .jpg, .jpeg or .png member (its image)", sample.key),
            ));
        };
        let Some(label) = sample.label else {
            return Err(DataError::invalid(
                field,
                shard,
                format!("has a sample '{}' with no .cls member (its label)", sample.key),
            ));
        };
        index.samples.push(SampleRef::Member { file, key: sample.key, offset, len });
        index.labels.push(label);
        Ok(())
    };
    for entry in archive.entries_with_seek().map_err(unreadable)? {
        let mut entry = entry.map_err(|e| DataError::unreadable(field, shard, format!("not a valid tar file: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(unreadable)?.to_string_lossy().into_owned();
        let (key, extension) = key_and_extension(&path);
        if pending.as_ref().is_none_or(|p| p.key != key) {
            finish(pending.take(), index)?;
            pending = Some(Pending { key: key.to_owned(), ..Pending::default() });
        }
        let sample = pending.as_mut().expect("set above");
        let size = entry.size();
        if extension == "cls" {
            if size > limits::MAX_LABEL_BYTES {
                return Err(DataError::invalid(field, shard, format!("has a .cls member of {size} bytes for '{key}'")));
            }
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(unreadable)?;
            let label = text.trim().parse::<u32>().ok().filter(|&l| l < limits::MAX_CLASSES).ok_or_else(|| {
                DataError::invalid(
                    field,
                    shard,
                    format!("has a sample '{key}' whose label {:?} (.cls) is not a class number", text.trim()),
                )
            })?;
            sample.label = Some(label);
        } else if is_image_name(&path) && sample.image.is_none() {
            if size > limits::MAX_SAMPLE_BYTES {
                return Err(DataError::invalid(field, shard, format!("has an image of {size} bytes for '{key}'")));
            }
            sample.image = Some((entry.raw_file_position(), size));
        }
    }
    finish(pending, index)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::key_and_extension;

    #[test]
    fn a_key_is_the_path_up_to_the_first_dot_of_the_file_name() {
        assert_eq!(key_and_extension("n01/n01_10026.JPEG"), ("n01/n01_10026", "jpeg".to_owned()));
        assert_eq!(key_and_extension("a.b/sample.seg.png"), ("a.b/sample", "seg.png".to_owned()));
        assert_eq!(key_and_extension("plain"), ("plain", String::new()));
    }
}
