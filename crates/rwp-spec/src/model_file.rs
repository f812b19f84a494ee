//! Model files (TorchScript) named by their content: the SHA-256 a job spec
//! carries, computed the same way by the SDK, the server and the workers.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// A model file stored by the parameter server, named by its content.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// SHA-256 of the file: 64 lower-case hex digits.
    pub sha256: String,
    pub size_bytes: u64,
}

impl ModelFile {
    /// Size and SHA-256 of the file at `path`.
    pub fn of_path(path: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::default();
        let mut buf = vec![0u8; 1 << 20];
        let mut size_bytes = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size_bytes += n as u64;
        }
        Ok(Self { sha256: hasher.finish_hex(), size_bytes })
    }

    /// Checks that `sha256` is 64 lower-case hex digits (it becomes a file name).
    pub fn validate(&self) -> Result<(), SpecError> {
        if is_sha256_hex(&self.sha256) {
            Ok(())
        } else {
            Err(SpecError::OutOfRange {
                field: "model_file.sha256",
                value: format!("{:?}", truncate(&self.sha256, 80)),
                rule: "must be 64 lower-case hex digits",
            })
        }
    }
}

/// Whether `s` is a SHA-256 written as 64 lower-case hex digits.
#[must_use]
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The SHA-256 of `bytes`, as 64 lower-case hex digits.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Incremental SHA-256 (uploads and downloads arrive in chunks).
pub struct Sha256(ring::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Sha256 {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest as 64 lower-case hex digits.
    #[must_use]
    pub fn finish_hex(self) -> String {
        hex(self.0.finish().as_ref())
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_a_known_digest() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut incremental = Sha256::default();
        incremental.update(b"a");
        incremental.update(b"bc");
        assert_eq!(incremental.finish_hex(), sha256_hex(b"abc"));
    }

    #[test]
    fn of_path_hashes_the_whole_file() {
        let dir = std::env::temp_dir().join(format!("rwp-model-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.pt");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = ModelFile::of_path(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(file, ModelFile { sha256: sha256_hex(&bytes), size_bytes: 3_000_000 });
        assert!(file.validate().is_ok());
    }
}
