//! Checks of what a client names: job and sweep names, request ids, data
//! directories; and the per-request-id locks that make a retried submission
//! find what its first attempt created.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use rwp_spec::data::Location;
use rwp_spec::JobSpec;

use crate::domain::Principal;
use crate::error::ServerError;
use crate::store::RequestKey;

/// Longest job (or sweep) name, in characters.
const MAX_JOB_NAME_CHARS: usize = 256;

/// `path` with `.` and `..` resolved lexically (symlinks are not followed:
/// the server may not be able to read the directory); `..` at the root
/// stays there, as the file system has it.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A job's `data_dir` lies under one of `roots` (when the server has them).
/// The refusal names the roots as configured, and nothing the server found.
pub(super) fn check_data_dir(roots: Option<&[PathBuf]>, data_dir: Option<&Path>) -> Result<(), String> {
    let (Some(roots), Some(dir)) = (roots, data_dir) else { return Ok(()) };
    let dir = normalize(dir);
    if dir.is_absolute() && roots.iter().any(|root| dir.starts_with(normalize(root))) {
        return Ok(());
    }
    let allowed = if roots.is_empty() {
        "none: this server allows only the built-in dataset".to_owned()
    } else {
        roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    };
    Err(format!("data_dir must be an absolute path under one of this server's data roots (data_roots): {allowed}"))
}

/// A job's own data as a client sends it: without a summary (the server
/// has a worker inspect the data), its local paths under one of `roots`
/// (when the server has them). Object-store locations are the owner's.
pub(super) fn check_data_locations(roots: Option<&[PathBuf]>, spec: &JobSpec) -> Result<(), String> {
    let Some(data) = &spec.data else { return Ok(()) };
    if data.summary.is_some() {
        return Err("data.summary is written by the server when a worker inspects the data; leave it unset".into());
    }
    for (field, location) in data.locations() {
        if let Ok(Location::Path(path)) = Location::parse(field, location) {
            // A brace range names files in the folder it lies in.
            let folder = path.to_string_lossy().split('{').next().map(PathBuf::from).unwrap_or_default();
            check_data_dir(roots, Some(&folder))
                .map_err(|e| format!("{field}: {}", e.replacen("data_dir", "a path", 1)))?;
        }
    }
    Ok(())
}

/// `spec` as its client sent it: without the summary the server added.
pub(super) fn without_summary(spec: &JobSpec) -> JobSpec {
    let mut spec = spec.clone();
    if let Some(data) = &mut spec.data {
        data.summary = None;
    }
    spec
}

/// Longest client request id, in characters.
const MAX_REQUEST_ID_CHARS: usize = 128;

/// A client's request id: 1 to [`MAX_REQUEST_ID_CHARS`] printable characters.
pub(super) fn request_key(principal: &Principal, named: Named, id: String) -> Result<RequestKey, ServerError> {
    let (kind, error): (&'static str, fn(String) -> ServerError) = match named {
        Named::Job => ("job", ServerError::InvalidSpec),
        Named::Sweep => ("sweep", ServerError::InvalidSweep),
    };
    let chars = id.chars().count();
    if !(1..=MAX_REQUEST_ID_CHARS).contains(&chars) {
        return Err(error(format!(
            "request_id is {chars} characters long; it must have 1 to {MAX_REQUEST_ID_CHARS} when set"
        )));
    }
    if let Some(c) = id.chars().find(|c| is_terminal_control(*c)) {
        return Err(error(format!("request_id holds U+{:04X}, a control character", u32::from(c))));
    }
    Ok(RequestKey { kind, owner: principal.owner().unwrap_or_default(), id })
}

/// Submissions with a client request id under way, one lock per id: a
/// retry that arrives while its first attempt is still starting the job
/// waits for it, then finds what it created.
#[derive(Debug, Default)]
pub(super) struct RequestLocks(Mutex<HashMap<RequestKey, Arc<tokio::sync::Mutex<()>>>>);

impl RequestLocks {
    pub(super) async fn lock<'a>(&'a self, key: &RequestKey) -> RequestGuard<'a> {
        let id = key.clone();
        let lock =
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(id.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        RequestGuard { locks: self, id, guard: Some(guard) }
    }
}

pub(super) struct RequestGuard<'a> {
    locks: &'a RequestLocks,
    id: RequestKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Nobody else waits on it: forget it.
        if locks.get(&self.id).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&self.id);
        }
    }
}

/// What a name names: the error it gets is that kind's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Named {
    Job,
    Sweep,
}

/// Whether `c` could drive or disguise a terminal that prints it: C0 and C1
/// control characters (ESC, CR, LF, NUL, DEL, CSI, ...) and the Unicode
/// bidirectional overrides and isolates (U+202A to U+202E, U+2066 to U+2069).
pub(super) fn is_terminal_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// What a worker says of a sample it left out, fit to show: terminal
/// controls replaced, at most [`MAX_SKIPPED_CHARS`] characters.
pub(super) fn printable_skip(reason: &str) -> String {
    let mut shown: String =
        reason.chars().take(MAX_SKIPPED_CHARS).map(|c| if is_terminal_control(c) { '?' } else { c }).collect();
    if reason.chars().count() > MAX_SKIPPED_CHARS {
        shown.push('…');
    }
    shown
}

/// The longest description of a skipped sample kept.
const MAX_SKIPPED_CHARS: usize = 500;

/// A job's or sweep's name: at most [`MAX_JOB_NAME_CHARS`] characters, none
/// of them a terminal control (names are printed by `rwp list` and logs).
pub(super) fn check_name(name: &str, named: Named) -> Result<(), ServerError> {
    let (what, error): (&str, fn(String) -> ServerError) = match named {
        Named::Job => ("job", ServerError::InvalidSpec),
        Named::Sweep => ("sweep", ServerError::InvalidSweep),
    };
    let chars = name.chars().count();
    if chars > MAX_JOB_NAME_CHARS {
        return Err(error(format!("the {what} name is {chars} characters long, at most {MAX_JOB_NAME_CHARS}")));
    }
    if let Some((at, c)) = name.chars().enumerate().find(|(_, c)| is_terminal_control(*c)) {
        return Err(error(format!(
            "name: character {} of the {what} name is U+{:04X}, a control character; names must be printable text",
            at + 1,
            u32::from(c)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dirs_must_lie_under_a_root_after_dot_dot_is_resolved() {
        let roots = [PathBuf::from("/datasets"), PathBuf::from("/mnt/data/")];
        let check = |dir: &str| check_data_dir(Some(&roots), Some(Path::new(dir)));
        for ok in ["/datasets", "/datasets/cifar10", "/mnt/data/x/./y", "/datasets/a/../b", "/x/../datasets/c"] {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in
            ["/etc", "/datasets2", "/datasets/../etc", "/datasets/a/../../etc", "datasets/cifar", "../datasets", "/"]
        {
            let err = check(bad).unwrap_err();
            assert!(err.ends_with("(data_roots): /datasets, /mnt/data/"), "{bad}: {err}");
        }
        // `..` above the root stays at the root, as the file system has it.
        check("/../datasets/x").unwrap();
        // No roots: any path; no data_dir: nothing to check; an empty list: none allowed.
        check_data_dir(None, Some(Path::new("/etc"))).unwrap();
        check_data_dir(Some(&roots), None).unwrap();
        let err = check_data_dir(Some(&[]), Some(Path::new("/datasets"))).unwrap_err();
        assert!(err.contains("allows only the built-in dataset"), "{err}");
    }

    #[test]
    fn names_with_terminal_controls_are_refused_naming_the_code_point() {
        for ok in ["", "sigma sweep", "σ-grid ünïcode 日本", &"n".repeat(MAX_JOB_NAME_CHARS)] {
            check_name(ok, Named::Job).unwrap();
        }
        let cases = [
            ("a\u{1b}[2J", "U+001B"),
            ("a\rb", "U+000D"),
            ("a\nb", "U+000A"),
            ("a\0", "U+0000"),
            ("a\tb", "U+0009"),
            ("a\u{7f}", "U+007F"),
            ("a\u{9b}31m", "U+009B"),
            ("abc\u{202e}gpj.exe", "U+202E"),
            ("\u{202a}", "U+202A"),
            ("\u{2066}x\u{2069}", "U+2066"),
            ("x\u{2069}", "U+2069"),
        ];
        for (name, code) in cases {
            let err = check_name(name, Named::Job).unwrap_err();
            assert!(
                matches!(&err, ServerError::InvalidSpec(m) if m.starts_with("name: ") && m.contains(code)),
                "{err:?}"
            );
            let err = check_name(name, Named::Sweep).unwrap_err();
            assert!(
                matches!(&err, ServerError::InvalidSweep(m) if m.contains("sweep name") && m.contains(code)),
                "{err:?}"
            );
        }
        let err = check_name("\u{2067}", Named::Job).unwrap_err().to_string();
        assert_eq!(err, "invalid job spec: name: character 1 of the job name is U+2067, a control character; names must be printable text");
    }
}
