//! Where a dataset's bytes are read from. Paths are strings so that local
//! files and objects are handled alike: an object's path is its URL
//! (`s3://bucket/key`), which says where it is in every message.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use rwp_spec::data::Location;

use crate::object::Bucket;
use crate::{cache, DataError};

/// One child of a listed folder.
#[derive(Debug)]
pub(crate) struct Entry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

pub(crate) trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// A storage backend.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    Local,
    /// One bucket of an object store; paths are `scheme://bucket/key`.
    Object(Bucket),
}

impl Store {
    /// The store a split's location is in, and the location's path in it.
    pub(crate) fn for_location(field: &'static str, location: &str) -> Result<(Store, String), DataError> {
        match Location::parse(field, location).map_err(|e| DataError::invalid(field, location, e.to_string()))? {
            Location::Path(path) => Ok((Store::Local, path.to_string_lossy().into_owned())),
            Location::Object { scheme, bucket, .. } => {
                let bucket = Bucket::open(&scheme, &bucket).map_err(|e| DataError::io(field, location, &e))?;
                Ok((Store::Object(bucket), location.trim_end_matches('/').to_owned()))
            }
        }
    }

    /// The key of `path` in its bucket.
    fn key<'a>(bucket: &Bucket, path: &'a str) -> &'a str {
        path.strip_prefix(bucket.url.as_str()).unwrap_or(path).trim_start_matches('/')
    }

    /// The cached copy of the object `path` (fetched whole when missing),
    /// or `None` when it is larger than the cache.
    fn cached(bucket: &Bucket, path: &str) -> io::Result<Option<std::path::PathBuf>> {
        let key = Self::key(bucket, path);
        let (size, version) = bucket.head(key)?;
        cache::cached(&format!("{path} {version}"), size, |file| bucket.download(key, file))
    }

    /// The children of the folder `dir`, sorted by name (bytes).
    pub(crate) fn list(&self, dir: &str) -> io::Result<Vec<Entry>> {
        if let Store::Object(bucket) = self {
            let (objects, folders) = bucket.list(Self::key(bucket, dir))?;
            let mut entries: Vec<Entry> = objects
                .into_iter()
                .map(|(name, size)| Entry { name, is_dir: false, size })
                .chain(folders.into_iter().map(|name| Entry { name, is_dir: true, size: 0 }))
                .collect();
            if entries.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "nothing is stored under this prefix"));
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(entries);
        }
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // Follows symbolic links, as a reader of the folder would.
            let meta = std::fs::metadata(entry.path())?;
            let name = entry.file_name().into_string().map_err(|name| {
                io::Error::new(io::ErrorKind::InvalidData, format!("the file name {name:?} is not UTF-8"))
            })?;
            entries.push(Entry { name, is_dir: meta.is_dir(), size: meta.len() });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Whether `path` is a folder (an object store: a prefix with objects under it).
    pub(crate) fn is_dir(&self, path: &str) -> io::Result<bool> {
        match self {
            Store::Local => Ok(Path::new(path).is_dir()),
            Store::Object(bucket) => match bucket.list(Self::key(bucket, path)) {
                Ok((objects, folders)) => Ok(!objects.is_empty() || !folders.is_empty()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    pub(crate) fn size(&self, path: &str) -> io::Result<u64> {
        if let Store::Object(bucket) = self {
            return bucket.size(Self::key(bucket, path));
        }
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "it is a folder, not a file"));
        }
        Ok(meta.len())
    }

    pub(crate) fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek>> {
        if let Store::Object(bucket) = self {
            return match Self::cached(bucket, path)? {
                Some(file) => Ok(Box::new(io::BufReader::new(File::open(file)?))),
                None => Ok(Box::new(RangeReader::new(bucket.clone(), Self::key(bucket, path).to_owned())?)),
            };
        }
        Ok(Box::new(io::BufReader::new(File::open(path)?)))
    }

    /// `len` bytes of `path` from `offset`.
    pub(crate) fn read_range(&self, path: &str, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let local = match self {
            Store::Local => std::path::PathBuf::from(path),
            Store::Object(bucket) => match Self::cached(bucket, path)? {
                Some(file) => file,
                None => return bucket.read_range(Self::key(bucket, path), offset, len),
            },
        };
        let mut file = File::open(local)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = vec![0; usize::try_from(len).map_err(|_| io::Error::other("a range too long"))?];
        file.read_exact(&mut bytes).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), format!("the file ends before byte {}", offset + len))
            } else {
                e
            }
        })?;
        Ok(bytes)
    }

    pub(crate) fn join(&self, dir: &str, name: &str) -> String {
        match self {
            Store::Local => Path::new(dir).join(name).to_string_lossy().into_owned(),
            Store::Object(_) => format!("{}/{name}", dir.trim_end_matches('/')),
        }
    }
}

/// The files a split's `path` names: a brace range of files
/// (`train-{0000..0127}.tar`), one file, or a folder whose files ending
/// with `extension` are read in name order. `what` names them in errors.
pub(crate) fn files_named(
    store: &Store,
    field: &'static str,
    path: &str,
    extension: &str,
    what: &str,
) -> Result<Vec<String>, DataError> {
    let names = rwp_spec::data::expand_braces(path)
        .map_err(|e| DataError::invalid(field, path, format!("is not a {what} list: {e}")))?;
    let unreadable = |e| DataError::io(field, names[0].as_str(), &e);
    if names.len() == 1 && store.is_dir(&names[0]).map_err(unreadable)? {
        let dir = &names[0];
        let entries = store.list(dir).map_err(|e| DataError::io(field, dir.as_str(), &e))?;
        let found: Vec<String> = entries
            .into_iter()
            .filter(|e| !e.is_dir && e.name.ends_with(extension))
            .map(|e| store.join(dir, &e.name))
            .collect();
        if found.is_empty() {
            return Err(DataError::invalid(field, dir.as_str(), format!("holds no {extension} files")));
        }
        return Ok(found);
    }
    Ok(names)
}

/// Reads an object too large for the cache by ranges of [`Self::BLOCK`]
/// bytes, so that it is never held whole in memory.
struct RangeReader {
    bucket: Bucket,
    key: String,
    size: u64,
    position: u64,
    /// The block read last and where it starts.
    block: Vec<u8>,
    block_start: u64,
}

impl RangeReader {
    const BLOCK: u64 = 8 << 20;

    fn new(bucket: Bucket, key: String) -> io::Result<Self> {
        let size = bucket.size(&key)?;
        Ok(Self { bucket, key, size, position: 0, block: Vec::new(), block_start: 0 })
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.size || out.is_empty() {
            return Ok(0);
        }
        let block_end = self.block_start + self.block.len() as u64;
        if !(self.block_start..block_end).contains(&self.position) {
            let len = Self::BLOCK.min(self.size - self.position);
            self.block = self.bucket.read_range(&self.key, self.position, len)?;
            self.block_start = self.position;
        }
        let from = (self.position - self.block_start) as usize;
        let n = out.len().min(self.block.len() - from);
        out[..n].copy_from_slice(&self.block[from..from + n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(n) => self.size.checked_add_signed(n),
            SeekFrom::Current(n) => self.position.checked_add_signed(n),
        };
        self.position = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start"))?;
        Ok(self.position)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    #[test]
    fn an_object_larger_than_the_cache_reads_and_seeks_by_ranges() {
        let bytes: Vec<u8> = (0..RangeReader::BLOCK * 2 + 1000).map(|i| (i * 7 % 251) as u8).collect();
        let store = Arc::new(InMemory::new());
        let payload = PutPayload::from(bytes.clone());
        crate::object::wait({
            let store = Arc::clone(&store);
            async move { store.put(&object_store::path::Path::from("big.tar"), payload).await.map(|_| ()) }
        })
        .unwrap();
        let bucket = Bucket::over(store, "mem://b");
        let mut reader = RangeReader::new(bucket, "big.tar".to_owned()).unwrap();

        let mut whole = Vec::new();
        reader.read_to_end(&mut whole).unwrap();
        assert!(whole == bytes, "read across every block boundary");
        // Back into the first block, then from the end across the last boundary.
        let mut some = [0u8; 100];
        reader.seek(SeekFrom::Start(5)).unwrap();
        reader.read_exact(&mut some).unwrap();
        assert_eq!(&some[..], &bytes[5..105]);
        reader.seek(SeekFrom::End(-1050)).unwrap();
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, &bytes[bytes.len() - 1050..]);
        assert!(reader.seek(SeekFrom::Current(-(bytes.len() as i64) - 1)).is_err(), "before the start");
    }
}
