//! Sweep files: a job file (the base every trial starts from) with a
//! `[search]` table, optional `[early_stopping]`, and `concurrency`.
//!
//! ```toml
//! name = "sigma-sweep"          # optional
//! concurrency = 2               # trials running at once
//! method = "m-arwp"             # the base job: job-file keys
//! model = "mlp"               # or "torchscript" with model_file (relative to this file)
//! epochs = 8
//! validation_fraction = 0.2     # required (> 0): trials are ranked on it
//!
//! [search]
//! mode = "grid"                 # grid | random
//! # n_trials = 12               # random: how many draws
//! # seed = 0                    # random: seed of the draws
//!
//! [[search.param]]
//! field = "sigma"
//! values = [0.003, 0.01, 0.03, 0.1]
//!
//! # [[search.param]]            # random search only:
//! # field = "lr"
//! # distribution = "log-uniform"  # uniform | log-uniform | int-uniform | choice
//! # low = 0.01
//! # high = 0.3
//!
//! [early_stopping]              # optional: asynchronous successive halving
//! rungs = [1, 2, 4]             # epochs at which trials are judged
//! reduction_factor = 3          # the top 1/3 at a rung go on
//! # min_validation_accuracy = 0.15   # stop below this at any rung
//! ```

use std::path::{Path, PathBuf};

use rwp_spec::sweep::{EarlyStopping, Search, SweepSpec};

use crate::{JobFile, SdkError};

/// Keys of a sweep file that are not job-file keys.
const SWEEP_KEYS: &[&str] = &["concurrency", "search", "early_stopping"];

/// A sweep file as read.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepFile {
    pub name: Option<String>,
    pub spec: SweepSpec,
    /// The TorchScript file the base job names (`model_file`), resolved
    /// against the sweep file's directory: upload it before creating the sweep.
    pub model_path: Option<PathBuf>,
}

impl SweepFile {
    /// Parses TOML text; `origin` names the file in errors. The trials are
    /// generated and checked, so every error is reported before submission.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SdkError> {
        Self::parse_in(text, origin, None)
    }

    /// [`SweepFile::parse`] with `model_file` relative to `base_dir`.
    fn parse_in(text: &str, origin: &str, base_dir: Option<&Path>) -> Result<Self, SdkError> {
        let bad = |what: String| SdkError::InvalidSpec(format!("{origin}: {what}"));
        let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_owned()))?;
        let concurrency = match table.remove("concurrency") {
            None => 1,
            Some(toml::Value::Integer(n)) => {
                u32::try_from(n).map_err(|_| bad(format!("concurrency = {n} is out of range")))?
            }
            Some(other) => return Err(bad(format!("concurrency must be a whole number, not {other}"))),
        };
        let search: Search = table
            .remove("search")
            .ok_or_else(|| bad("a [search] table with at least one [[search.param]] is required".into()))?
            .try_into()
            .map_err(|e: toml::de::Error| bad(format!("[search]: {}", e.to_string().trim_end())))?;
        let early_stopping: Option<EarlyStopping> = table
            .remove("early_stopping")
            .map(toml::Value::try_into)
            .transpose()
            .map_err(|e: toml::de::Error| bad(format!("[early_stopping]: {}", e.to_string().trim_end())))?;
        debug_assert!(SWEEP_KEYS.iter().all(|k| !table.contains_key(*k)));
        let mut job: JobFile = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| bad(format!("base job: {}", e.to_string().trim_end())))?;
        job.base_dir = base_dir.map(Path::to_path_buf);
        let model_path = job.model_path();
        let (name, base) = job.into_spec().map_err(|e| bad(e.to_string()))?;
        let spec = SweepSpec { base, search, concurrency, early_stopping };
        spec.trials().map_err(|e| bad(e.to_string()))?;
        Ok(Self { name, spec, model_path })
    }

    pub fn read(path: &Path) -> Result<Self, SdkError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SdkError::InvalidSpec(format!("cannot read sweep file {}: {e}", path.display())))?;
        Self::parse_in(&text, &path.display().to_string(), path.parent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rwp_spec::sweep::SearchMode;
    use rwp_spec::Method;

    const FILE: &str = r#"
name = "sigma"
concurrency = 2
method = "m-arwp"
model = "mlp"
epochs = 4
validation_fraction = 0.2

[search]
[[search.param]]
field = "sigma"
values = [0.003, 0.01, 0.03]

[early_stopping]
rungs = [1, 2]
"#;

    #[test]
    fn a_sweep_file_has_a_base_job_a_search_and_early_stopping() {
        let file = SweepFile::parse(FILE, "sweep.toml").unwrap();
        assert_eq!(file.name.as_deref(), Some("sigma"));
        assert_eq!(file.spec.concurrency, 2);
        assert_eq!(file.spec.base.method, Method::MArwp);
        assert_eq!(file.spec.base.epochs, 4);
        assert_eq!(file.spec.search.mode, SearchMode::Grid);
        assert_eq!(file.spec.early_stopping.as_ref().unwrap().rungs, vec![1, 2]);
        let sigmas: Vec<f64> = file.spec.trials().unwrap().iter().map(|t| t.spec.sigma).collect();
        assert_eq!(sigmas, vec![0.003, 0.01, 0.03]);
    }

    #[test]
    fn a_torchscript_base_names_its_file_relative_to_the_sweep_file() {
        let dir = std::env::temp_dir().join(format!("rwp-sweep-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("net.pt"), b"abc").unwrap();
        let text = FILE.replace("model = \"mlp\"", "model = \"torchscript\"\nmodel_file = \"net.pt\"");
        std::fs::write(dir.join("sweep.toml"), text).unwrap();
        let file = SweepFile::read(&dir.join("sweep.toml")).unwrap();
        assert_eq!(file.model_path, Some(dir.join("net.pt")));
        let named = file.spec.base.model_file.as_ref().expect("the base names the file");
        assert_eq!(named.size_bytes, 3);
        assert!(file.spec.trials().unwrap().iter().all(|t| t.spec.model_file.as_ref() == Some(named)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| SweepFile::parse(text, "sweep.toml").unwrap_err().to_string();
        let e = err(&FILE.replace("epochs = 4", "epochz = 4"));
        assert!(e.contains("epochz"), "{e}");
        let e = err(&FILE.replace("rungs = [1, 2]", "rungz = [1, 2]"));
        assert!(e.contains("[early_stopping]") && e.contains("rungz"), "{e}");
        let e = err(&FILE.replace("validation_fraction = 0.2", ""));
        assert!(e.contains("validation_fraction"), "{e}");
        let e = err(&FILE.replace("field = \"sigma\"", "field = \"sigmaa\""));
        assert!(e.contains("sigmaa"), "{e}");
        let e = err("method = \"sgd\"\nvalidation_fraction = 0.1\n");
        assert!(e.contains("[search]"), "{e}");
    }
}
