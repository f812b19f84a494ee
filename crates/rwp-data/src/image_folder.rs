//! `image-folder`: one folder per class of JPEG or PNG files, torchvision's
//! `ImageFolder` convention. Classes are the folder names sorted by name
//! (every split has the same class folders); the images of a class are
//! its `.jpg`, `.jpeg` and `.png` files sorted by name; other files are
//! left out, as `ImageFolder` leaves them.

use std::collections::BTreeSet;

use crate::index::{DataIndex, SampleRef, Split, SplitIndex};
use crate::storage::Store;
use crate::{limits, DataError};

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

pub(crate) fn is_image_name(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(_, ext)| EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)))
}

pub(crate) fn index(listed: &[(Split, &str, String, Store)]) -> Result<DataIndex, DataError> {
    let mut classes: Option<(Split, Vec<String>)> = None;
    let mut splits = Vec::new();
    for (split, location, path, store) in listed {
        let field = split.field();
        if !store.is_dir(path).map_err(|e| DataError::io(field, path.as_str(), &e))? {
            return Err(DataError::unreadable(field, path.as_str(), "no such folder"));
        }
        let entries = store.list(path).map_err(|e| DataError::io(field, path.as_str(), &e))?;
        let names: Vec<String> = entries.into_iter().filter(|e| e.is_dir).map(|e| e.name).collect();
        if names.is_empty() {
            return Err(DataError::invalid(field, path.as_str(), "holds no class folders (one folder per class)"));
        }
        if names.len() as u64 > u64::from(limits::MAX_CLASSES) {
            return Err(DataError::invalid(field, path.as_str(), format!("holds {} class folders", names.len())));
        }
        match &classes {
            None => classes = Some((*split, names.clone())),
            Some((first, known)) if known != &names => {
                let (a, b): (BTreeSet<_>, BTreeSet<_>) = (known.iter().collect(), names.iter().collect());
                let missing: Vec<_> = a.difference(&b).take(5).collect();
                let extra: Vec<_> = b.difference(&a).take(5).collect();
                return Err(DataError::Classes {
                    field,
                    problem: format!(
                        "its class folders differ from those of {}: missing {missing:?}, not in {}: {extra:?}",
                        first.field(),
                        first.field()
                    ),
                });
            }
            Some(_) => {}
        }
        let mut index = SplitIndex::new(*split, location, store);
        for (label, class) in names.iter().enumerate() {
            let dir = store.join(path, class);
            let files = store.list(&dir).map_err(|e| DataError::io(field, dir.as_str(), &e))?;
            let before = index.samples.len();
            for file in files.into_iter().filter(|f| !f.is_dir && is_image_name(&f.name)) {
                if file.size > limits::MAX_SAMPLE_BYTES {
                    return Err(DataError::invalid(
                        field,
                        store.join(&dir, &file.name),
                        format!("is {} bytes; an image may have at most {}", file.size, limits::MAX_SAMPLE_BYTES),
                    ));
                }
                index.samples.push(SampleRef::File { file: index.files.len() as u32, len: file.size });
                index.files.push(store.join(&dir, &file.name));
                index.labels.push(label as u32);
            }
            if index.samples.len() == before {
                return Err(DataError::invalid(
                    field,
                    dir.as_str(),
                    format!("(class '{class}') holds no .jpg, .jpeg or .png file"),
                ));
            }
            if index.samples.len() as u64 > limits::MAX_SAMPLES {
                return Err(DataError::invalid(field, path.as_str(), "holds too many images"));
            }
        }
        splits.push(index);
    }
    let (_, class_names) = classes.expect("at least one split");
    Ok(DataIndex::assemble(rwp_spec::DatasetKind::ImageFolder, class_names, splits))
}
