//! The worker's disk cache of objects read from object storage: each object
//! is fetched whole, once, into a file named by the digest of its URL and
//! size, and read from there; the least recently used files go when the
//! cache would grow past its limit. An object larger than the whole cache
//! is not cached (it is read by ranges instead).
//!
//! The object streams to disk as it arrives (a shard of gigabytes never
//! sits in memory), and threads that want the same object at the same time
//! wait for one download rather than each starting their own: the loader's
//! threads read the samples of one shard together.
//!
//! Where and how large: [`configure`], else `RWP_DATA_CACHE_DIR` and
//! `RWP_DATA_CACHE_BYTES` from the environment, else `rwp-data-cache` in
//! the system's temporary directory and 8 GiB.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use rwp_spec::sha256_hex;

/// The cache's limit unless configured: 8 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 8 << 30;

#[derive(Debug, Clone)]
struct Settings {
    dir: PathBuf,
    bytes: u64,
}

fn settings() -> &'static Mutex<Settings> {
    static SETTINGS: OnceLock<Mutex<Settings>> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let dir = std::env::var_os("RWP_DATA_CACHE_DIR")
            .map_or_else(|| std::env::temp_dir().join("rwp-data-cache"), PathBuf::from);
        let bytes =
            std::env::var("RWP_DATA_CACHE_BYTES").ok().and_then(|b| b.parse().ok()).unwrap_or(DEFAULT_CACHE_BYTES);
        Mutex::new(Settings { dir, bytes })
    })
}

/// Puts the cache in `dir`, at most `bytes` large (0: no cache).
pub fn configure(dir: PathBuf, bytes: u64) {
    *settings().lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Settings { dir, bytes };
}

fn current() -> Settings {
    settings().lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// The cached copy of the object at `url` (with its version) of `size`
/// bytes, written by `fetch` into the file it is given when it is not there
/// yet; `None` when it does not fit the cache.
pub(crate) fn cached(
    url: &str,
    size: u64,
    fetch: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> io::Result<Option<PathBuf>> {
    let Settings { dir, bytes } = current();
    if size > bytes {
        return Ok(None);
    }
    let path = dir.join(sha256_hex(format!("{url} {size}").as_bytes()));
    if present(&path, size) {
        return Ok(Some(path));
    }
    let download = in_flight(&path);
    let fetched = {
        let _only_one = download.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another thread may have fetched it while this one waited.
        if present(&path, size) {
            Ok(())
        } else {
            fetch_into(&dir, bytes.saturating_sub(size), &path, url, size, fetch)
        }
    };
    finished(&path);
    fetched.map(|()| Some(path))
}

/// Streams the object into a temporary file of `dir`, checks its size and
/// renames it to `path`, after making room for it.
fn fetch_into(
    dir: &std::path::Path,
    keep: u64,
    path: &std::path::Path,
    url: &str,
    size: u64,
    fetch: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    make_room(dir, keep)?;
    static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = dir.join(format!(".{}.{n}.part", std::process::id()));
    let written = (|| {
        let mut file = fs::File::create(&temporary)?;
        fetch(&mut file)?;
        let len = file.metadata()?.len();
        if len != size {
            return Err(io::Error::other(format!("{url} is {len} bytes, not the {size} it was listed with")));
        }
        file.sync_data()?;
        fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// Whether the cache holds `path` whole; marks it recently used if so.
fn present(path: &std::path::Path, size: u64) -> bool {
    if !fs::metadata(path).is_ok_and(|m| m.len() == size) {
        return false;
    }
    // Best effort: a file whose time cannot be set is still there.
    let _ = fs::File::options().append(true).open(path).and_then(|f| f.set_modified(SystemTime::now()));
    true
}

type Downloads = Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>;

fn downloads() -> &'static Downloads {
    static DOWNLOADS: OnceLock<Downloads> = OnceLock::new();
    DOWNLOADS.get_or_init(Downloads::default)
}

/// The lock of the download of `path`: held by the thread fetching it.
fn in_flight(path: &std::path::Path) -> Arc<Mutex<()>> {
    let mut downloads = downloads().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(downloads.entry(path.to_owned()).or_default())
}

/// Forgets the download of `path` once no thread waits on it any more.
fn finished(path: &std::path::Path) {
    let mut downloads = downloads().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Two references: the table's and the finishing thread's own.
    if downloads.get(path).is_some_and(|lock| Arc::strong_count(lock) <= 2) {
        downloads.remove(path);
    }
}

/// Deletes the least recently used files of `dir` until at most `keep`
/// bytes of it are left.
fn make_room(dir: &std::path::Path, keep: u64) -> io::Result<()> {
    let mut files: Vec<(SystemTime, u64, PathBuf)> = fs::read_dir(dir)?
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= keep {
            break;
        }
        if fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn threads_wanting_one_object_share_one_download_and_a_short_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        configure(dir.path().to_owned(), 1 << 20);
        let fetches = AtomicUsize::new(0);
        let paths: Vec<PathBuf> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        cached("s3://b/shard.tar v1", 1000, |file| {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            file.write_all(&[7; 1000])
                        })
                        .unwrap()
                        .unwrap()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "one download for four readers");
        assert!(paths.iter().all(|p| p == &paths[0]));
        assert_eq!(fs::read(&paths[0]).unwrap(), vec![7; 1000]);
        assert!(downloads().lock().unwrap().is_empty(), "finished downloads are forgotten");

        let short = cached("s3://b/other.tar v1", 1000, |file| file.write_all(&[1; 10])).unwrap_err();
        assert!(short.to_string().contains("is 10 bytes, not the 1000 it was listed with"), "{short}");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "the failed download left nothing behind: {names:?}");

        assert!(cached("s3://b/huge.tar v1", 2 << 20, |_| unreachable!()).unwrap().is_none());
    }
}
