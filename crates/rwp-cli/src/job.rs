//! Turning a job file and flags into a validated job spec, before any
//! connection is made: a bad job is reported without a server.

use std::path::Path;

use rwp_sdk::{JobFile, JobSpec, SdkError};
use rwp_spec::{check_model_file, ScheduleFlags, Spelling};

use crate::cli::{SpecFlags, SubmitArgs};
use crate::error::{one_line, CliError};

impl SpecFlags {
    /// Whether any job setting was given as a flag.
    #[must_use]
    pub fn any(&self) -> bool {
        let mut file = JobFile::default();
        self.apply(&mut file);
        file != JobFile::default() || self.schedules() != ScheduleFlags::default()
    }

    /// The schedule flags, as rwp-train takes them too.
    #[must_use]
    pub fn schedules(&self) -> ScheduleFlags {
        ScheduleFlags {
            lr_schedule: self.lr_schedule.clone(),
            milestones: self.milestones.clone(),
            lr_gamma: self.lr_gamma,
            sigma_schedule: self.sigma_schedule.clone(),
            sigma_inc: self.sigma_inc,
        }
    }

    /// Writes the flags given over the job file's settings.
    pub fn apply(&self, file: &mut JobFile) {
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { file.$f = Some(v); } )* };
        }
        over!(
            method,
            model,
            dataset,
            seed,
            epochs,
            max_updates,
            batch_size,
            clean_shards,
            perturbed_shards,
            lr,
            momentum,
            weight_decay,
            warmup_updates,
            sigma,
            lambda,
            eta,
            beta,
            rho,
            non_finite,
            gradient_encoding,
            validation_fraction
        );
        if self.independent_noise {
            file.independent_noise = Some(true);
        }
        if self.nesterov {
            file.nesterov = Some(true);
        }
        if self.no_augment {
            file.augment = Some(false);
        }
        // The server and the workers have working directories of their
        // own: a relative --data-dir is made absolute here, against ours,
        // as the shell user means it (`..` is kept: the server resolves it).
        if let Some(dir) = &self.data_dir {
            file.data_dir = Some(std::path::absolute(dir).unwrap_or_else(|_| dir.clone()));
        }
        // A path given as a flag is relative to the working directory, not
        // to the job file.
        if let Some(path) = &self.model_file {
            file.model_file = Some(std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.clone()));
        }
    }
}

/// The job `rwp submit` would send: its name, validated spec, and the
/// TorchScript file to upload first, if any.
#[derive(Debug)]
pub struct BuiltJob {
    pub name: String,
    pub spec: JobSpec,
    pub model_path: Option<std::path::PathBuf>,
}

/// The name and validated spec of the job that `rwp submit` would send.
pub fn build_job(args: &SubmitArgs) -> Result<BuiltJob, CliError> {
    let mut file = match &args.job_file {
        Some(path) => JobFile::read(path).map_err(|e| job_file_error(&e))?,
        None => JobFile::default(),
    };
    args.settings.apply(&mut file);
    if file.method.is_none() {
        return Err(CliError::Usage(match &args.job_file {
            Some(path) => format!("{}: `method` is required (or give --method)", path.display()),
            None => "give a job file or --method (rwp submit --help shows both)".to_owned(),
        }));
    }
    if let (Some(flag), Some(dir)) = (&args.settings.data_dir, &file.data_dir) {
        if dir.is_relative() && !dir.as_os_str().is_empty() {
            return Err(CliError::Usage(format!(
                "--data-dir {} is relative and the working directory cannot be read to resolve it \
                 (the server would resolve it against its own): give an absolute path",
                flag.display()
            )));
        }
    }
    check_model(&file, args)?;
    apply_schedules(&mut file, args)?;
    let origin = match &args.job_file {
        Some(path) if args.settings.any() => format!("{} with the flags given", path.display()),
        Some(path) => path.display().to_string(),
        None => "invalid job".to_owned(),
    };
    let model_path = file.model_path();
    let (file_name, spec) = file.into_spec().map_err(|e| {
        let text = e.to_string();
        let rule = text.strip_prefix("job file: ").unwrap_or(&text);
        CliError::Usage(format!("{origin}: {rule}"))
    })?;
    let name = args
        .name
        .clone()
        .or(file_name)
        .or_else(|| args.job_file.as_deref().and_then(Path::file_stem).map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    Ok(BuiltJob { name, spec, model_path })
}

/// The schedule flags over the job file's schedules (or the method's
/// reference ones); a flag for a schedule the job does not have is refused.
fn apply_schedules(file: &mut JobFile, args: &SubmitArgs) -> Result<(), CliError> {
    let flags = args.settings.schedules();
    let Some(method) = file.method else { return Ok(()) };
    if flags == ScheduleFlags::default() {
        return Ok(());
    }
    let reference = JobSpec::reference(method);
    let mut lr = file.lr_schedule.clone().unwrap_or(reference.lr_schedule);
    let mut sigma = file.sigma_schedule.clone().unwrap_or(reference.sigma_schedule);
    flags.apply(&mut lr, &mut sigma).map_err(|e| match &args.job_file {
        Some(path) => CliError::Usage(format!("{} with the flags given: {e}", path.display())),
        None => CliError::Usage(e),
    })?;
    file.lr_schedule = Some(lr);
    file.sigma_schedule = Some(sigma);
    Ok(())
}

/// A `torchscript` model without its file, or a file with a built-in model:
/// one line naming the fix, in the words the user wrote the offending
/// setting in (a flag, or the job file's key).
fn check_model(file: &JobFile, args: &SubmitArgs) -> Result<(), CliError> {
    let Some(method) = file.method else { return Ok(()) };
    let model = file.model.unwrap_or(JobSpec::reference(method).model);
    let has_file = file.model_file.is_some();
    // The setting that is wrong: the model, when it lacks its file; else the file.
    let from_flag = if has_file { args.settings.model_file.is_some() } else { args.settings.model.is_some() };
    match &args.job_file {
        Some(path) if !from_flag => check_model_file(model, has_file, Spelling::JobFile)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display()))),
        _ => check_model_file(model, has_file, Spelling::Flags).map_err(CliError::Usage),
    }
}

/// A job file that cannot be read or parsed, as one line naming the file,
/// the line and the problem: `job.toml: line 3, column 1: unknown field
/// `sigmaa`, expected one of ...`.
#[must_use]
pub fn job_file_error(e: &SdkError) -> CliError {
    let text = e.to_string();
    let Some((origin, rest)) = text.split_once(": TOML parse error at ") else {
        return CliError::Usage(one_line(&text));
    };
    let mut lines = rest.lines();
    let position = lines.next().unwrap_or_default().trim();
    // What follows is a snippet of the file (`  |`, `3 | sigmaa = 0.1`,
    // `  | ^^^^^^`), then the message.
    let message: Vec<&str> = lines
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with('|') || t.split_once(" |").is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit())))
        })
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    CliError::Usage(format!("{origin}: {position}: {}", message.join(" ")))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::Parser;
    use rwp_sdk::Method;

    use super::*;
    use crate::cli::{Cli, Command};

    fn submit_args(args: &[&str]) -> SubmitArgs {
        let cli =
            Cli::try_parse_from(std::iter::once("rwp").chain(std::iter::once("submit")).chain(args.iter().copied()))
                .unwrap();
        match cli.command {
            Command::Submit(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    fn job_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn flags_alone_start_from_the_reference() {
        let BuiltJob { name, spec, .. } =
            build_job(&submit_args(&["--method", "m-arwp", "--epochs", "3", "--name", "quick"])).unwrap();
        let mut expected = JobSpec::reference(Method::MArwp);
        expected.epochs = 3;
        assert_eq!((name.as_str(), spec), ("quick", expected));
        let BuiltJob { name, .. } = build_job(&submit_args(&["--method", "sgd"])).unwrap();
        assert_eq!(name, "");
    }

    #[test]
    fn flags_override_the_file_and_the_file_names_the_job() {
        let f = job_file("name = \"from-file\"\nmethod = \"m-rwp\"\nepochs = 7\nsigma = 0.02\n");
        let path = f.path().to_str().unwrap();
        let BuiltJob { name, spec, .. } =
            build_job(&submit_args(&[path, "--sigma", "0.03", "--no-augment", "--nesterov"])).unwrap();
        assert_eq!(name, "from-file");
        assert_eq!(
            (spec.method, spec.epochs, spec.sigma, spec.augment, spec.nesterov),
            (Method::MRwp, 7, 0.03, false, true)
        );
        let BuiltJob { name, spec, .. } = build_job(&submit_args(&[path, "--method", "sgd", "--name", "n"])).unwrap();
        assert_eq!((name.as_str(), spec.method, spec.epochs), ("n", Method::Sgd, 7));
        // Without a name in the file, the file's stem.
        let f = job_file("method = \"sgd\"\n");
        let BuiltJob { name, .. } = build_job(&submit_args(&[f.path().to_str().unwrap()])).unwrap();
        assert_eq!(name, f.path().file_stem().unwrap().to_str().unwrap());
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_rule() {
        let f = job_file("method = \"sgd\"\nepochs = 2\nsigmaa = 0.1\n");
        let err = build_job(&submit_args(&[f.path().to_str().unwrap()])).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.exit_code(), 2);
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.starts_with(&format!("{}: line 3, column 1: unknown field `sigmaa`", f.path().display())),
            "{text}"
        );

        let f = job_file("method = \"m-rwp\"\nlambda = 2.0\n");
        let text = build_job(&submit_args(&[f.path().to_str().unwrap()])).unwrap_err().to_string();
        assert_eq!(text, format!("{}: lambda = 2 is out of range: must be in [0, 1]", f.path().display()));
        let text = build_job(&submit_args(&[f.path().to_str().unwrap(), "--epochs", "2"])).unwrap_err().to_string();
        assert!(text.contains("with the flags given: lambda = 2"), "{text}");

        let text = build_job(&submit_args(&["--method", "m-rwp", "--lambda", "1.5"])).unwrap_err().to_string();
        assert_eq!(text, "invalid job: lambda = 1.5 is out of range: must be in [0, 1]");
        let text = build_job(&submit_args(&[])).unwrap_err().to_string();
        assert!(text.contains("--method"), "{text}");
        let f = job_file("epochs = 2\n");
        let text = build_job(&submit_args(&[f.path().to_str().unwrap()])).unwrap_err().to_string();
        assert!(text.contains("`method` is required"), "{text}");
        let text = build_job(&submit_args(&["/no/such/job.toml"])).unwrap_err().to_string();
        assert!(text.contains("/no/such/job.toml"), "{text}");
        let f = job_file("method = \"adam\"\n");
        let text = build_job(&submit_args(&[f.path().to_str().unwrap()])).unwrap_err().to_string();
        assert!(text.contains("line 1") && text.contains("adam"), "{text}");
    }
}
