//! Model files (TorchScript) named by their content: the SHA-256 a job spec
//! carries, computed the same way by the SDK, the server and the workers.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{ModelKind, SpecError};

/// Where a user wrote the settings a message is about, so that it names them
/// (and the fix) as they were written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    /// On a command line: `--model`, `--model-file`, `--lr-schedule`, ...
    Flags,
    /// In a job (or sweep) file: `model`, `model_file`, `lr_schedule`, ...
    JobFile,
}

/// Checks that a `torchscript` model comes with its file and that only a
/// `torchscript` model does, before anything is read or sent. The error is
/// one line that says what is wrong and how to fix it, in `spelling`'s words;
/// rwp-train, `rwp submit` and the SDKs' job files share it.
pub fn check_model_file(model: ModelKind, has_file: bool, spelling: Spelling) -> Result<(), String> {
    const SAVED: &str = "the file torch.jit.script(model).save(PATH) writes";
    match (model, has_file, spelling) {
        (ModelKind::TorchScript, false, Spelling::Flags) => {
            Err(format!("--model torchscript needs --model-file PATH, {SAVED}"))
        }
        (ModelKind::TorchScript, false, Spelling::JobFile) => {
            Err(format!("model = \"torchscript\" needs model_file = \"PATH\", {SAVED} (relative to the job file)"))
        }
        (ModelKind::TorchScript, true, _) | (_, false, _) => Ok(()),
        (model, true, Spelling::Flags) => Err(format!(
            "--model-file is only for --model torchscript, not --model {model}: \
             add --model torchscript to train that file, or drop --model-file"
        )),
        (model, true, Spelling::JobFile) => Err(format!(
            "model_file is only for model = \"torchscript\", not model = \"{model}\": \
             set model = \"torchscript\" to train that file, or remove model_file"
        )),
    }
}

/// A model file stored by the parameter server, named by its content.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// SHA-256 of the file: 64 lower-case hex digits.
    pub sha256: String,
    pub size_bytes: u64,
}

/// One owner's upload of a model file, as the server records and lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredModel {
    pub sha256: String,
    pub size_bytes: u64,
    /// When its owner last uploaded it.
    pub uploaded_unix_ms: i64,
    /// The token that uploaded it; `None` on a server without authentication.
    pub owner: Option<String>,
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

/// Checks a model file arriving in chunks against the size and digest
/// announced for it: chunks in order, no byte beyond the size, all of them,
/// and the SHA-256 of what came. Upload (server) and fetch (worker) share it;
/// each writes the bytes where it keeps them.
#[derive(Debug)]
pub struct ModelReceiver {
    expected: ModelFile,
    received: u64,
    hasher: Sha256,
}

impl ModelReceiver {
    #[must_use]
    pub fn new(expected: ModelFile) -> Self {
        Self { expected, received: 0, hasher: Sha256::default() }
    }

    #[must_use]
    pub fn expected(&self) -> &ModelFile {
        &self.expected
    }

    /// Accepts the chunk at `offset` (to be written after this returns Ok).
    pub fn accept(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        if offset != self.received {
            return Err(format!("chunk at offset {offset}, expected {} (chunks must arrive in order)", self.received));
        }
        let end = self.received + data.len() as u64;
        if end > self.expected.size_bytes {
            return Err(format!("more than the {} bytes announced", self.expected.size_bytes));
        }
        self.hasher.update(data);
        self.received = end;
        Ok(())
    }

    /// After the last chunk: every byte came and the digest matches.
    pub fn finish(self) -> Result<ModelFile, String> {
        if self.received != self.expected.size_bytes {
            return Err(format!("ended after {} of the {} bytes announced", self.received, self.expected.size_bytes));
        }
        let digest = self.hasher.finish_hex();
        if digest != self.expected.sha256 {
            return Err(format!(
                "checksum mismatch: the bytes received have SHA-256 {digest}, the file announced is {}",
                self.expected.sha256
            ));
        }
        Ok(self.expected)
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
    fn a_model_file_goes_with_torchscript_only_and_the_error_names_the_fix() {
        for spelling in [Spelling::Flags, Spelling::JobFile] {
            assert_eq!(check_model_file(ModelKind::TorchScript, true, spelling), Ok(()));
            assert_eq!(check_model_file(ModelKind::Mlp, false, spelling), Ok(()));
        }
        let e = check_model_file(ModelKind::TorchScript, false, Spelling::Flags).unwrap_err();
        assert!(e.starts_with("--model torchscript needs --model-file PATH"), "{e}");
        let e = check_model_file(ModelKind::Mlp, true, Spelling::Flags).unwrap_err();
        assert!(e.contains("not --model mlp") && e.contains("add --model torchscript"), "{e}");
        let e = check_model_file(ModelKind::TorchScript, false, Spelling::JobFile).unwrap_err();
        assert!(e.starts_with("model = \"torchscript\" needs model_file = \"PATH\""), "{e}");
        let e = check_model_file(ModelKind::Resnet18, true, Spelling::JobFile).unwrap_err();
        assert!(e.contains("not model = \"resnet18\"") && e.contains("remove model_file"), "{e}");
    }

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
    fn a_receiver_takes_the_announced_bytes_in_order_and_nothing_else() {
        let file = ModelFile { sha256: sha256_hex(b"abcdef"), size_bytes: 6 };
        let mut ok = ModelReceiver::new(file.clone());
        ok.accept(0, b"abc").unwrap();
        ok.accept(3, b"def").unwrap();
        assert_eq!(ok.finish().unwrap(), file);

        let mut gap = ModelReceiver::new(file.clone());
        gap.accept(0, b"ab").unwrap();
        assert!(gap.accept(3, b"def").unwrap_err().contains("chunk at offset 3, expected 2"));
        let mut long = ModelReceiver::new(file.clone());
        assert!(long.accept(0, b"abcdefg").unwrap_err().contains("more than the 6 bytes"));
        let mut short = ModelReceiver::new(file.clone());
        short.accept(0, b"abc").unwrap();
        assert!(short.finish().unwrap_err().contains("ended after 3 of the 6 bytes"));
        let mut other = ModelReceiver::new(file);
        other.accept(0, b"abcdeX").unwrap();
        assert!(other.finish().unwrap_err().starts_with("checksum mismatch"));
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
