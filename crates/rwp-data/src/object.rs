//! Object stores (`s3://`, `gs://`, `az://`), read with the `object_store`
//! crate on a runtime of this crate's own, so that the (blocking) readers
//! of this crate can call it from any thread, a runtime's included.
//!
//! Credentials come from the environment, as each cloud's tools read them
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` for an S3-compatible server, `AWS_ALLOW_HTTP`;
//! `GOOGLE_SERVICE_ACCOUNT`; `AZURE_STORAGE_ACCOUNT_NAME`, ...): on
//! Kubernetes, from a Secret in the workers' environment.
//!
//! Whole objects are streamed into the worker's disk cache ([`crate::cache`])
//! and then read from there, so a shard is fetched once, not once per sample.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

/// The runtime object-store requests run on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rwp-object-store")
            .enable_all()
            .build()
            .expect("the object-store runtime starts")
    })
}

/// Runs `future` on [`runtime`] and waits for it, from any thread.
pub(crate) fn wait<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = sender.send(future.await);
    });
    receiver.recv().expect("the object-store runtime answers")
}

/// What [`Bucket::list`] finds under a prefix: objects (name, size) and "folders" (names).
pub(crate) type Listing = (Vec<(String, u64)>, Vec<String>);

/// One bucket of an object store.
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`: how paths are shown.
    pub(crate) url: String,
    /// Each object's size and version tag, asked once.
    heads: Arc<Mutex<HashMap<String, (u64, String)>>>,
}

/// How long a request is retried before the storage counts as unreachable:
/// a few attempts within 15 s, not object_store's 3 minutes, so that a job
/// whose storage went away pauses soon.
fn retries() -> object_store::RetryConfig {
    object_store::RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(15), ..Default::default() }
}

/// Says what an object-store failure means for the reader: refused
/// credentials are `PermissionDenied`, a missing object `NotFound`; a
/// missing bucket and storage that cannot be reached are `NotConnected`
/// (the storage's fault, which may pass).
fn io_error(e: object_store::Error, bucket: &str) -> io::Error {
    let text = e.to_string();
    if text.contains("NoSuchBucket") {
        // The bucket went away (or never was): the storage, not a sample,
        // is missing.
        return io::Error::new(io::ErrorKind::NotConnected, format!("the bucket {bucket} does not exist"));
    }
    let refused =
        matches!(e, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })
            || ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"].iter().any(|s| text.contains(s));
    if refused {
        return io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("access to {bucket} was refused: check the credentials in the workers' environment ({text})"),
        );
    }
    if matches!(e, object_store::Error::NotFound { .. }) {
        return io::Error::new(io::ErrorKind::NotFound, "no such object");
    }
    // Anything else (refused connections, time-outs, server errors after
    // the retries) is the storage's, not the data's.
    io::Error::new(io::ErrorKind::NotConnected, format!("{bucket} cannot be reached: {text}"))
}

impl Bucket {
    /// The bucket `bucket` of `scheme`, with credentials from the environment.
    pub(crate) fn open(scheme: &str, bucket: &str) -> io::Result<Self> {
        let built: object_store::Result<Arc<dyn ObjectStore>> = match scheme {
            "s3" => object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retries())
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retries())
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            "az" => object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .with_retry(retries())
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            other => return Err(io::Error::other(format!("{other}:// is not an object store this version reads"))),
        };
        let store = built.map_err(|e| io::Error::other(format!("cannot use {scheme}://{bucket}: {e}")))?;
        Ok(Self { store, url: format!("{scheme}://{bucket}"), heads: Arc::default() })
    }

    /// A bucket over `store` (tests: an in-memory store).
    #[cfg(test)]
    pub(crate) fn over(store: Arc<dyn ObjectStore>, url: &str) -> Self {
        Self { store, url: url.to_owned(), heads: Arc::default() }
    }

    /// The objects and "folders" right under `prefix` (a key ending
    /// without `/`), by name, with their sizes.
    pub(crate) fn list(&self, prefix: &str) -> io::Result<Listing> {
        let store = Arc::clone(&self.store);
        let path = ObjectPath::from(prefix);
        let url = self.url.clone();
        wait(async move {
            let listed = store.list_with_delimiter(Some(&path)).await.map_err(|e| io_error(e, &url))?;
            let name = |p: &ObjectPath| p.filename().unwrap_or_default().to_owned();
            let objects = listed.objects.iter().map(|o| (name(&o.location), o.size)).collect();
            let folders = listed.common_prefixes.iter().map(name).collect();
            Ok((objects, folders))
        })
    }

    pub(crate) fn size(&self, key: &str) -> io::Result<u64> {
        self.head(key).map(|(size, _)| size)
    }

    /// The size of `key` and its version tag (ETag, else modification
    /// time), asked of the store once per bucket handle.
    pub(crate) fn head(&self, key: &str) -> io::Result<(u64, String)> {
        let known = self.heads.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned();
        if let Some(head) = known {
            return Ok(head);
        }
        let head = self.ask_head(key)?;
        self.heads.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.to_owned(), head.clone());
        Ok(head)
    }

    fn ask_head(&self, key: &str) -> io::Result<(u64, String)> {
        let store = Arc::clone(&self.store);
        let path = ObjectPath::from(key);
        let url = self.url.clone();
        wait(async move {
            let meta = match store.head(&path).await {
                Ok(meta) => meta,
                // A HEAD answer has no body to say whether the bucket or the
                // object is missing: a listing says.
                Err(missing @ object_store::Error::NotFound { .. }) => {
                    let listing = store.list(Some(&path)).next().await;
                    return Err(io_error(listing.and_then(Result::err).unwrap_or(missing), &url));
                }
                Err(e) => return Err(io_error(e, &url)),
            };
            let version = meta.e_tag.clone().unwrap_or_else(|| meta.last_modified.to_rfc3339());
            Ok((meta.size, version))
        })
    }

    /// Writes the whole of `key` to `file` as it arrives.
    pub(crate) fn download(&self, key: &str, file: &mut std::fs::File) -> io::Result<()> {
        let store = Arc::clone(&self.store);
        let path = ObjectPath::from(key);
        let url = self.url.clone();
        let mut file = file.try_clone()?;
        wait(async move {
            let mut stream = store.get(&path).await.map_err(|e| io_error(e, &url))?.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| io_error(e, &url))?;
                // A local disk write: short enough for this runtime's threads.
                std::io::Write::write_all(&mut file, &chunk)?;
            }
            Ok(())
        })
    }

    /// The bytes `offset..offset + len` of `key`.
    pub(crate) fn read_range(&self, key: &str, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let store = Arc::clone(&self.store);
        let path = ObjectPath::from(key);
        let url = self.url.clone();
        wait(async move {
            let bytes = store.get_range(&path, offset..offset + len).await.map_err(|e| io_error(e, &url))?;
            Ok(bytes.to_vec())
        })
    }
}
