//! The worker's cache of TorchScript model files: fetched from the server
//! once, checked against the SHA-256 the job names, kept under that name.

use std::io::Write;
use std::path::{Path, PathBuf};

use rwp_proto::v1::FetchModelRequest;
use rwp_spec::{ModelFile, ModelReceiver};
use tracing::info;

use crate::rpc::Session;
use crate::WorkerError;

/// The cached file of `file`, fetched first when it is not there yet. A
/// file is only ever renamed into the cache after its checksum matched.
pub(crate) async fn cached_model(
    session: &Session,
    cache_dir: &Path,
    file: &ModelFile,
) -> Result<PathBuf, WorkerError> {
    file.validate()?;
    let path = cache_dir.join(format!("{}.pt", file.sha256));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == file.size_bytes) {
        return Ok(path);
    }
    let started = std::time::Instant::now();
    let bad = |reason: String| WorkerError::Model { sha256: file.sha256.clone(), reason };
    std::fs::create_dir_all(cache_dir).map_err(|e| bad(format!("cannot create {}: {e}", cache_dir.display())))?;
    let temp = cache_dir.join(format!("{}.{}.part", file.sha256, std::process::id()));
    let result = fetch_into(session, &temp, file).await;
    let fetched = result.and_then(|()| std::fs::rename(&temp, &path).map_err(|e| bad(format!("cannot store: {e}"))));
    if let Err(e) = fetched {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    info!(sha256 = %file.sha256, bytes = file.size_bytes, elapsed_ms = started.elapsed().as_millis() as u64, "model file fetched");
    Ok(path)
}

async fn fetch_into(session: &Session, temp: &Path, file: &ModelFile) -> Result<(), WorkerError> {
    let bad = |reason: String| WorkerError::Model { sha256: file.sha256.clone(), reason };
    let request = FetchModelRequest { sha256: file.sha256.clone() };
    let mut stream =
        session.client.clone().fetch_model(request).await.map_err(WorkerError::rpc("FetchModel"))?.into_inner();
    let mut out = std::fs::File::create(temp).map_err(|e| bad(format!("cannot create {}: {e}", temp.display())))?;
    let mut receiver = ModelReceiver::new(file.clone());
    while let Some(chunk) = stream.message().await.map_err(WorkerError::rpc("FetchModel"))? {
        receiver.accept(chunk.offset, &chunk.data).map_err(|e| bad(format!("from the server: {e}")))?;
        out.write_all(&chunk.data).map_err(|e| bad(format!("cannot write {}: {e}", temp.display())))?;
    }
    receiver.finish().map_err(|e| bad(format!("from the server: {e}")))?;
    out.sync_all().map_err(|e| bad(format!("cannot write {}: {e}", temp.display())))?;
    Ok(())
}
