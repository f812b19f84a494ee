//! The worker's disk cache of objects read from object storage: each object
//! is fetched whole, once, into a file named by the digest of its URL and
//! size, and read from there; the least recently used files go when the
//! cache would grow past its limit. An object larger than the whole cache
//! is not cached (it is read by ranges instead).
//!
//! Where and how large: [`configure`], else `RWP_DATA_CACHE_DIR` and
//! `RWP_DATA_CACHE_BYTES` from the environment, else `rwp-data-cache` in
//! the system's temporary directory and 8 GiB.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
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

/// The cached copy of the object at `url` (with its version) of `size` bytes, fetched with
/// `fetch` when it is not there yet; `None` when it does not fit the cache.
pub(crate) fn cached(url: &str, size: u64, fetch: impl FnOnce() -> io::Result<Vec<u8>>) -> io::Result<Option<PathBuf>> {
    let Settings { dir, bytes } = current();
    if size > bytes {
        return Ok(None);
    }
    let path = dir.join(sha256_hex(format!("{url} {size}").as_bytes()));
    if fs::metadata(&path).is_ok_and(|m| m.len() == size) {
        // Marks it recently used (best effort).
        let _ = fs::File::options().append(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
        return Ok(Some(path));
    }
    let data = fetch()?;
    if data.len() as u64 != size {
        return Err(io::Error::other(format!("{url} is {} bytes, not the {size} it was listed with", data.len())));
    }
    fs::create_dir_all(&dir)?;
    make_room(&dir, bytes.saturating_sub(size))?;
    static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = dir.join(format!(".{}.{n}.part", std::process::id()));
    let mut file = fs::File::create(&temporary)?;
    file.write_all(&data)?;
    file.sync_data()?;
    fs::rename(&temporary, &path)?;
    Ok(Some(path))
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
