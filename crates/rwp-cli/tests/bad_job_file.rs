//! A bad job file is reported as one line naming the file, the key and the
//! line or rule, with exit status 2, before any server is contacted.

mod common;

use common::{assert_clean_error, rwp, stderr, stdout, write_file};

/// Nothing listens here: a job-file error must come before any connection.
const NO_SERVER: &str = "http://127.0.0.1:1";

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "job.toml", "method = \"m-arwp\"\nepochs = 2\nsigmaa = 0.1\n");
    let o = rwp(&["--server", NO_SERVER, "submit", &path]);
    let line = assert_clean_error(&o, 2);
    assert!(line.contains("sigmaa"), "{line}");
    assert!(line.contains("line 3"), "{line}");
    assert!(line.contains("job.toml"), "{line}");
    assert!(stdout(&o).is_empty(), "no job id on a failure");
}

#[test]
fn an_out_of_range_value_names_the_key_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "mixed.toml", "method = \"m-rwp\"\nlambda = 2.0\n");
    let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", &path]), 2);
    assert!(line.contains("lambda = 2") && line.contains("must be in [0, 1]"), "{line}");
    assert!(line.contains("mixed.toml"), "{line}");
    // The same rule for a flag.
    let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", "--method", "m-rwp", "--lambda", "1.5"]), 2);
    assert!(line.contains("lambda = 1.5") && line.contains("must be in [0, 1]"), "{line}");
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere.toml");
    let path = path.to_str().unwrap();
    let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", path]), 2);
    assert!(line.contains(path), "{line}");
}

#[test]
fn other_mistakes_are_one_line_too() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("method.toml", "method = \"adam\"\n", "adam"),
        ("type.toml", "method = \"sgd\"\nepochs = \"many\"\n", "line 2"),
        ("nomethod.toml", "epochs = 3\n", "`method` is required"),
        ("syntax.toml", "method = \"sgd\"\nepochs = \n", "line 2"),
        (
            "schedule.toml",
            "method = \"sgd\"\nlr_schedule = { kind = \"step\", milestones = [1], gama = 0.1 }\n",
            "gama",
        ),
        ("cifar.toml", "method = \"sgd\"\ndataset = \"cifar10\"\n", "data directory"),
    ];
    for (name, text, want) in cases {
        let path = write_file(dir.path(), name, text);
        let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", &path]), 2);
        assert!(line.contains(want) && line.contains(name), "{name}: {line}");
    }
    let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "submit"]), 2);
    assert!(line.contains("--method"), "{line}");
}

/// A model file with a built-in model, or `torchscript` without its file, is
/// one line naming the fix, in the words it was written in (flags or the job
/// file's keys), before any file is read or server contacted.
#[test]
fn a_model_file_mistake_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    // The file does not even exist: the mismatch is the problem, not reading it.
    let missing = dir.path().join("x.pt");
    let missing = missing.to_str().unwrap();
    let line = assert_clean_error(
        &rwp(&["--server", NO_SERVER, "submit", "--method", "sgd", "--model", "mlp", "--model-file", missing]),
        2,
    );
    assert_eq!(
        line,
        "error: --model-file is only for --model torchscript, not --model mlp: \
         add --model torchscript to train that file, or drop --model-file"
    );
    let line =
        assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", "--method", "sgd", "--model-file", missing]), 2);
    assert!(line.contains("not --model small-cnn: add --model torchscript"), "{line}");
    let line =
        assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", "--method", "sgd", "--model", "torchscript"]), 2);
    assert_eq!(
        line,
        "error: --model torchscript needs --model-file PATH, the file torch.jit.script(model).save(PATH) writes"
    );

    let path = write_file(dir.path(), "script.toml", "method = \"sgd\"\nmodel = \"torchscript\"\n");
    let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", &path]), 2);
    assert_eq!(
        line,
        format!(
            "error: {path}: model = \"torchscript\" needs model_file = \"PATH\", \
             the file torch.jit.script(model).save(PATH) writes (relative to the job file)"
        )
    );
    let path = write_file(dir.path(), "builtin.toml", "method = \"sgd\"\nmodel = \"mlp\"\nmodel_file = \"x.pt\"\n");
    let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", &path]), 2);
    assert!(
        line.starts_with(&format!(
            "error: {path}: model_file is only for model = \"torchscript\", not model = \"mlp\""
        )) && line.contains("remove model_file"),
        "{line}"
    );
    // The job file's model, the flag's file: the flag is what is wrong.
    let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", &path, "--model-file", missing]), 2);
    assert!(line.contains("--model-file is only for --model torchscript, not --model mlp"), "{line}");
}

/// A bad schedule in a job file or on the command line lists the names
/// (the same as rwp-train's), never serde's words for the enum.
#[test]
fn a_bad_schedule_lists_the_names() {
    let lr_names = "constant, step, cosine-per-update, cosine-per-epoch";
    let dir = tempfile::tempdir().unwrap();
    for (name, text, want) in [
        ("kind.toml", "method = \"sgd\"\nlr_schedule = { kind = \"cosine\" }\n", "unknown lr schedule 'cosine'"),
        ("string.toml", "method = \"sgd\"\nlr_schedule = \"cosine-per-epoch\"\n", "must be a table with a kind"),
        (
            "sigma.toml",
            "method = \"sgd\"\nsigma_schedule = { kind = \"cosine-inc\", inc = 2.0 }\n",
            "unknown sigma schedule 'cosine-inc' (expected one of: constant, cosine-increasing)",
        ),
    ] {
        let path = write_file(dir.path(), name, text);
        let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", &path]), 2);
        assert!(line.contains(want) && line.contains(&path) && line.contains("line 2"), "{name}: {line}");
        if name != "sigma.toml" {
            assert!(line.contains(lr_names), "{name}: {line}");
        }
        for internal in ["internally tagged", "variant", "LrSchedule", "SigmaSchedule"] {
            assert!(!line.contains(internal), "{name}: {line}");
        }
    }
    // On the command line: clap's usage error, with the same names.
    let o = rwp(&["--server", NO_SERVER, "submit", "--method", "sgd", "--lr-schedule", "cosine"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("'cosine'") && err.contains(lr_names), "{err}");
    let o = rwp(&["--server", NO_SERVER, "submit", "--method", "sgd", "--sigma-schedule", "linear"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("constant, cosine-increasing"), "{}", stderr(&o));
    // A setting for a schedule the job does not have is refused, not ignored.
    let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", "--method", "sgd", "--milestones", "3"]), 2);
    assert_eq!(
        line,
        "error: --milestones and --lr-gamma are for the step schedule, and this job's lr schedule is \
         cosine-per-epoch: add --lr-schedule step"
    );
    let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "submit", "--method", "sgd", "--sigma-inc", "3"]), 2);
    assert!(line.contains("add --sigma-schedule cosine-increasing"), "{line}");
}

/// A sweep searching a schedule names its kinds as job files do; a bad one
/// is named with the choices, never with serde's words.
#[test]
fn a_sweep_over_a_bad_schedule_kind_lists_the_names() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = "name = \"s\"\nmethod = \"sgd\"\nvalidation_fraction = 0.2\n\n[search]\n\n[[search.param]]\n\
                 field = \"lr_schedule.kind\"\nvalues = [\"constant\", \"cosine\"]\n";
    let path = write_file(dir.path(), "sweep.toml", sweep);
    let line = assert_clean_error(&rwp(&["--server", NO_SERVER, "sweep", "submit", &path]), 2);
    assert!(
        line.contains(
            "lr_schedule.kind: unknown lr schedule 'cosine' \
             (expected one of: constant, step, cosine-per-update, cosine-per-epoch)"
        ) && line.contains(&path),
        "{line}"
    );
    assert!(!line.contains("variant") && !line.contains("LrSchedule"), "{line}");
}
