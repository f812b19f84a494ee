//! Job files: TOML with the job's name, its method and only the settings that
//! differ from the method's reference defaults. Unknown keys are rejected
//! with their line and column.
//!
//! ```toml
//! name = "cifar-marwp"          # optional
//! method = "m-arwp"             # sgd | sam | rwp | arwp | m-rwp | m-arwp
//! model = "resnet18"            # mlp | small-cnn | resnet18 | resnet50 | vgg16-bn | wrn16-8 | wrn28-10 | torchscript
//! # model_file = "net.pt"       # with model = "torchscript": a torch.jit.script(...).save() file,
//!                               # relative to the job file; uploaded on submit
//! dataset = "cifar10"           # synthetic | mnist | cifar10 | cifar100 | image-folder | tar-shards | tensors
//! data_dir = "/data/cifar10"    # mnist and cifar: read by every worker
//! epochs = 200
//! batch_size = 256
//! clean_shards = 1
//! perturbed_shards = 1
//! sigma = 0.015
//! validation_fraction = 0.1   # hold out 10% of the training set (seeded)
//! lr_schedule = { kind = "cosine-per-epoch" }
//!
//! # Your own data (dataset = "image-folder", "tar-shards" or "tensors"):
//! # [data]
//! # train = "s3://bucket/imagenet/train-{0000..1023}.tar"   # or a path every worker reads
//! # test = "s3://bucket/imagenet/val-{0000..0063}.tar"
//! # image_size = 224            # images: the side the model sees
//! # transforms = "imagenet"     # imagenet | cifar | resize
//! # bad_samples = "fail"        # fail | skip
//! ```

use std::path::{Path, PathBuf};

use rwp_spec::{
    check_model_file, schedule_keys, DatasetKind, GradientEncoding, JobSpec, LrSchedule, Method, ModelFile, ModelKind,
    NonFinitePolicy, SigmaSchedule, Spelling,
};
use serde::Deserialize;

use crate::SdkError;

/// A job file as written: every setting optional except the method.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub name: Option<String>,
    pub method: Option<Method>,
    pub model: Option<ModelKind>,
    pub dataset: Option<DatasetKind>,
    pub data_dir: Option<PathBuf>,
    pub seed: Option<u64>,
    pub epochs: Option<u32>,
    pub max_updates: Option<u64>,
    pub batch_size: Option<u32>,
    pub clean_shards: Option<u32>,
    pub perturbed_shards: Option<u32>,
    pub independent_noise: Option<bool>,
    pub lr: Option<f64>,
    pub momentum: Option<f64>,
    pub nesterov: Option<bool>,
    pub weight_decay: Option<f64>,
    /// `{ kind = NAME, ... }`, read by `read_lr_schedule`: its errors list
    /// the names, never serde's words for the enum.
    #[serde(default, deserialize_with = "lr_schedule_table")]
    pub lr_schedule: Option<LrSchedule>,
    pub warmup_updates: Option<u64>,
    pub sigma: Option<f64>,
    #[serde(default, deserialize_with = "sigma_schedule_table")]
    pub sigma_schedule: Option<SigmaSchedule>,
    pub lambda: Option<f64>,
    pub eta: Option<f64>,
    pub beta: Option<f64>,
    pub rho: Option<f64>,
    pub augment: Option<bool>,
    pub non_finite: Option<NonFinitePolicy>,
    pub gradient_encoding: Option<GradientEncoding>,
    /// The TorchScript file of `model = "torchscript"`, relative to the job
    /// file's directory.
    pub model_file: Option<PathBuf>,
    /// The directory of the job file read, which `model_file` is relative to.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    pub validation_fraction: Option<f64>,
    /// A job's own data (`dataset = "image-folder"`, `"tar-shards"`, `"tensors"`).
    pub data: Option<rwp_spec::DataSource>,
}

fn lr_schedule_table<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<LrSchedule>, D::Error> {
    let value = toml::Value::deserialize(d)?;
    read_lr_schedule(&value).map(Some).map_err(serde::de::Error::custom)
}

fn sigma_schedule_table<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SigmaSchedule>, D::Error> {
    let value = toml::Value::deserialize(d)?;
    read_sigma_schedule(&value).map(Some).map_err(serde::de::Error::custom)
}

/// The `kind` of a schedule table, checked against `names`; the error says
/// what a schedule looks like and lists the names.
fn schedule_kind<'v>(
    key: &str,
    value: &'v toml::Value,
    what: &str,
    names: &[&str],
    example: &str,
) -> Result<(&'v toml::map::Map<String, toml::Value>, &'v str), String> {
    let shape = || {
        format!(
            "{key} must be a table with a kind, e.g. {key} = {{ kind = \"{example}\" }} (kinds: {})",
            names.join(", ")
        )
    };
    let table = value.as_table().ok_or_else(shape)?;
    let kind = table.get("kind").ok_or_else(shape)?.as_str().ok_or_else(shape)?;
    if !names.contains(&kind) {
        return Err(format!("{key}: unknown {what} '{kind}' (expected one of: {})", names.join(", ")));
    }
    Ok((table, kind))
}

/// Refuses keys of a schedule table that its kind does not take.
fn only_keys(
    key: &str,
    table: &toml::map::Map<String, toml::Value>,
    kind: &str,
    allowed: &[&str],
) -> Result<(), String> {
    match table.keys().find(|k| *k != "kind" && !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) if allowed.is_empty() => {
            Err(format!("{key}: kind \"{kind}\" takes no other key, not `{unknown}`"))
        }
        Some(unknown) => Err(format!("{key}: unknown key `{unknown}` (kind \"{kind}\" takes: {})", allowed.join(", "))),
    }
}

fn number(key: &str, value: Option<&toml::Value>) -> Result<f64, String> {
    match value {
        Some(toml::Value::Float(f)) => Ok(*f),
        Some(toml::Value::Integer(i)) => Ok(*i as f64),
        Some(other) => Err(format!("{key} must be a number, not {other}")),
        None => Err(format!("{key} is required")),
    }
}

/// A job file's `lr_schedule`: `{ kind = "constant" }`, `{ kind = "step",
/// milestones = [60, 120], gamma = 0.2 }`, `{ kind = "cosine-per-update" }`
/// or `{ kind = "cosine-per-epoch" }`, the names of [`LrSchedule::NAMES`]
/// (`rwp submit --lr-schedule`, `rwp-train --lr-schedule`).
fn read_lr_schedule(value: &toml::Value) -> Result<LrSchedule, String> {
    let key = "lr_schedule";
    let (table, kind) = schedule_kind(key, value, "lr schedule", &LrSchedule::NAMES, "cosine-per-epoch")?;
    only_keys(key, table, kind, schedule_keys(kind))?;
    if kind != "step" {
        return LrSchedule::from_name(kind, &[], 0.0).map_err(|e| format!("{key}: {e}"));
    }
    let milestones = match table.get("milestones") {
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|m| m.as_integer().and_then(|m| u32::try_from(m).ok()))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| format!("{key}.milestones must be a list of epochs (whole numbers >= 0)"))?,
        Some(_) => return Err(format!("{key}.milestones must be a list of epochs, e.g. [60, 120]")),
        None => return Err(format!("{key}.milestones is required for kind \"step\", e.g. [60, 120]")),
    };
    let gamma = number(&format!("{key}.gamma"), table.get("gamma"))?;
    Ok(LrSchedule::Step { milestones, gamma })
}

/// A job file's `sigma_schedule`: `{ kind = "constant" }` or `{ kind =
/// "cosine-increasing", inc = 10.0 }`, the names of [`SigmaSchedule::NAMES`].
fn read_sigma_schedule(value: &toml::Value) -> Result<SigmaSchedule, String> {
    let key = "sigma_schedule";
    let (table, kind) = schedule_kind(key, value, "sigma schedule", &SigmaSchedule::NAMES, "cosine-increasing")?;
    only_keys(key, table, kind, schedule_keys(kind))?;
    if kind == "constant" {
        return Ok(SigmaSchedule::Constant);
    }
    Ok(SigmaSchedule::CosineIncreasing { inc: number(&format!("{key}.inc"), table.get("inc"))? })
}

impl JobFile {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SdkError> {
        toml::from_str(text).map_err(|e| SdkError::InvalidSpec(format!("{origin}: {}", e.to_string().trim_end())))
    }

    pub fn read(path: &Path) -> Result<Self, SdkError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SdkError::InvalidSpec(format!("cannot read job file {}: {e}", path.display())))?;
        let mut file = Self::parse(&text, &path.display().to_string())?;
        file.base_dir = path.parent().map(Path::to_path_buf);
        Ok(file)
    }

    /// The TorchScript file this job names, resolved against the job file's
    /// directory: the file to upload before submitting.
    #[must_use]
    pub fn model_path(&self) -> Option<PathBuf> {
        let path = self.model_file.as_ref()?;
        Some(match &self.base_dir {
            Some(dir) => dir.join(path),
            None => path.clone(),
        })
    }

    /// The spec: the method's reference defaults with this file's settings on top, validated.
    pub fn into_spec(self) -> Result<(Option<String>, JobSpec), SdkError> {
        let method = self.method.ok_or_else(|| SdkError::InvalidSpec("job file: `method` is required".into()))?;
        let mut s = JobSpec::reference(method);
        // A model file with a built-in model (or torchscript without one) is
        // named before the file is read: reading it is not the problem.
        check_model_file(self.model.unwrap_or(s.model), self.model_file.is_some(), Spelling::JobFile)
            .map_err(|e| SdkError::InvalidSpec(format!("job file: {e}")))?;
        let model_file = match self.model_path() {
            Some(path) => Some(ModelFile::of_path(&path).map_err(|e| {
                SdkError::InvalidSpec(format!("job file: cannot read model_file {}: {e}", path.display()))
            })?),
            None => None,
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { s.$f = v; } )* };
        }
        set!(
            model,
            dataset,
            seed,
            epochs,
            batch_size,
            clean_shards,
            perturbed_shards,
            independent_noise,
            lr,
            momentum,
            nesterov,
            weight_decay,
            lr_schedule,
            warmup_updates,
            sigma,
            sigma_schedule,
            lambda,
            eta,
            beta,
            rho,
            augment,
            non_finite,
            gradient_encoding,
            validation_fraction
        );
        if self.data_dir.is_some() {
            s.data_dir = self.data_dir;
        }
        if self.max_updates.is_some() {
            s.max_updates = self.max_updates;
        }
        if let Some(data) = &self.data {
            if data.summary.is_some() {
                return Err(SdkError::InvalidSpec(
                    "job file: data.summary is written by the service when it inspects the data; remove it".into(),
                ));
            }
        }
        // Tensors are used as stored: the reference's augmentation is for images.
        if s.dataset == DatasetKind::Tensors && self.augment.is_none() {
            s.augment = false;
        }
        s.data = self.data;
        s.model_file = model_file;
        s.validate().map_err(|e| SdkError::InvalidSpec(format!("job file: {e}")))?;
        Ok((self.name, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_keys_keep_the_methods_reference_values() {
        let file = JobFile::parse("method = \"m-arwp\"\nepochs = 3\nsigma = 0.02\n", "job.toml").unwrap();
        let (name, spec) = file.into_spec().unwrap();
        assert_eq!(name, None);
        let mut expected = JobSpec::reference(Method::MArwp);
        expected.epochs = 3;
        expected.sigma = 0.02;
        assert_eq!(spec, expected);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = JobFile::parse("method = \"sgd\"\n\nsigmaa = 0.1\n", "job.toml").unwrap_err().to_string();
        assert!(err.contains("sigmaa") && err.contains("line 3"), "{err}");
        assert!(err.starts_with("job.toml"), "{err}");
    }

    /// Found by the `job_file` fuzz target (fuzz/): `data_dir = ""` passed
    /// validation here, but an empty string is an unset field on the wire, so
    /// the server refused the job ("dataset mnist needs a data directory").
    #[test]
    fn an_empty_data_dir_is_refused_before_it_is_lost_on_the_wire() {
        let text =
            "name = \"arwp\"\nmethod = \"arwp\"\ndataset = \"mnist\"\ndata_dir = \"\"\nepochs = 1\nbatch_size = 2\n";
        let err = JobFile::parse(text, "j").unwrap().into_spec().unwrap_err().to_string();
        assert_eq!(err, "job file: data_dir = \"\" is out of range: must not be empty when set");
        let synthetic = "method = \"sgd\"\ndata_dir = \"\"\n";
        let err = JobFile::parse(synthetic, "j").unwrap().into_spec().unwrap_err().to_string();
        assert!(err.contains("data_dir"), "{err}");
        let fine = text.replace("data_dir = \"\"", "data_dir = \"/data/mnist\"");
        assert!(JobFile::parse(&fine, "j").unwrap().into_spec().is_ok());
    }

    #[test]
    fn a_model_file_is_read_relative_to_the_job_file_and_named_by_its_digest() {
        let dir = std::env::temp_dir().join(format!("rwp-job-file-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("models")).unwrap();
        std::fs::write(dir.join("models/net.pt"), b"abc").unwrap();
        let job = dir.join("job.toml");
        std::fs::write(&job, "method = \"m-arwp\"\nmodel = \"torchscript\"\nmodel_file = \"models/net.pt\"\n").unwrap();
        let file = JobFile::read(&job).unwrap();
        assert_eq!(file.model_path(), Some(dir.join("models/net.pt")));
        let (_, spec) = file.into_spec().unwrap();
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(spec.model_file, Some(ModelFile { sha256: expected.to_owned(), size_bytes: 3 }));
        std::fs::write(&job, "method = \"m-arwp\"\nmodel = \"torchscript\"\n").unwrap();
        let err = JobFile::read(&job).unwrap().into_spec().unwrap_err().to_string();
        assert!(err.starts_with("job file: model = \"torchscript\" needs model_file = \"PATH\""), "{err}");
        // A file with a built-in model is named as such, even when the file is missing.
        std::fs::write(&job, "method = \"sgd\"\nmodel = \"mlp\"\nmodel_file = \"missing.pt\"\n").unwrap();
        let err = JobFile::read(&job).unwrap().into_spec().unwrap_err().to_string();
        assert!(err.contains("model_file is only for model = \"torchscript\", not model = \"mlp\""), "{err}");
        std::fs::write(&job, "method = \"sgd\"\nmodel = \"torchscript\"\nmodel_file = \"missing.pt\"\n").unwrap();
        let err = JobFile::read(&job).unwrap().into_spec().unwrap_err().to_string();
        assert!(err.contains("missing.pt"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn schedule_mistakes_list_the_names_in_the_users_words() {
        let err = |text: &str| JobFile::parse(&format!("method = \"sgd\"\n{text}\n"), "j").unwrap_err().to_string();
        for (text, want) in [
            (
                "lr_schedule = \"cosine-per-epoch\"",
                "lr_schedule must be a table with a kind, e.g. lr_schedule = { kind = \"cosine-per-epoch\" } \
                 (kinds: constant, step, cosine-per-update, cosine-per-epoch)",
            ),
            (
                "lr_schedule = { kind = \"cosine\" }",
                "lr_schedule: unknown lr schedule 'cosine' (expected one of: constant, step, cosine-per-update, \
                 cosine-per-epoch)",
            ),
            ("lr_schedule = { kind = \"step\", milestones = [1] }", "lr_schedule.gamma is required"),
            ("lr_schedule = { kind = \"step\", gamma = 0.1 }", "lr_schedule.milestones is required"),
            (
                "lr_schedule = { kind = \"step\", milestones = [1], gama = 0.1 }",
                "lr_schedule: unknown key `gama` (kind \"step\" takes: milestones, gamma)",
            ),
            ("lr_schedule = { kind = \"constant\", gamma = 1.0 }", "takes no other key, not `gamma`"),
            (
                "sigma_schedule = { kind = \"cosine-inc\" }",
                "sigma_schedule: unknown sigma schedule 'cosine-inc' (expected one of: constant, cosine-increasing)",
            ),
            ("sigma_schedule = { inc = 2.0 }", "sigma_schedule must be a table with a kind"),
            ("sigma_schedule = { kind = \"cosine-increasing\" }", "sigma_schedule.inc is required"),
        ] {
            let e = err(text);
            assert!(e.contains(want) && e.contains("line 2"), "{text}: {e}");
            for internal in ["internally tagged", "variant", "LrSchedule", "SigmaSchedule"] {
                assert!(!e.contains(internal), "{text}: {e}");
            }
        }
        let file = JobFile::parse(
            "method = \"sgd\"\nlr_schedule = { kind = \"step\", milestones = [2, 4], gamma = 1 }\n\
             sigma_schedule = { kind = \"cosine-increasing\", inc = 3.5 }\n",
            "j",
        )
        .unwrap();
        assert_eq!(file.lr_schedule, Some(LrSchedule::Step { milestones: vec![2, 4], gamma: 1.0 }));
        assert_eq!(file.sigma_schedule, Some(SigmaSchedule::CosineIncreasing { inc: 3.5 }));
    }

    #[test]
    fn out_of_range_values_and_a_missing_method_are_refused() {
        let err = JobFile::parse("method = \"m-rwp\"\nlambda = 2.0\n", "j").unwrap().into_spec().unwrap_err();
        assert!(err.to_string().contains("lambda = 2"), "{err}");
        let err = JobFile::parse("epochs = 2\n", "j").unwrap().into_spec().unwrap_err();
        assert!(err.to_string().contains("`method` is required"), "{err}");
        let err = JobFile::parse("method = \"adam\"\n", "j").unwrap_err();
        assert!(err.to_string().contains("adam"), "{err}");
    }
}
