//! The local trainer's command line: a real run end to end, and bad input
//! answered with one line naming the problem and a non-zero exit, never a panic.

use std::path::Path;
use std::process::{Command, Output};

fn rwp_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rwp-train"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("rwp-train starts")
}

/// Asserts a failed run printed exactly one line on stderr containing `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].contains(needle), "'{needle}' not in: {}", lines[0]);
}

#[test]
fn m_arwp_on_the_builtin_dataset_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.jsonl");
    let checkpoints = dir.path().join("ckpt");
    let out = rwp_train(&[
        "--method",
        "m-arwp",
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--batch-size",
        "128",
        "--device",
        "cpu",
        "--quiet",
        "--metrics",
        metrics.to_str().unwrap(),
        "--checkpoint-dir",
        checkpoints.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let summary = stdout.lines().find(|l| l.starts_with("summary ")).expect("a summary line");
    assert!(summary.contains("method=m-arwp") && summary.contains("updates=14"), "{summary}");
    let accuracy: f64 = summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("test_accuracy="))
        .expect("test_accuracy in summary")
        .parse()
        .unwrap();
    // Ten classes: two epochs must already beat chance clearly.
    assert!(accuracy > 0.2, "test accuracy {accuracy}");
    assert!(summary.contains("wall_time_s="));

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every metrics line is JSON"))
        .collect();
    let updates = lines.iter().filter(|v| v["kind"] == "update").count();
    let evals = lines.iter().filter(|v| v["kind"] == "eval").count();
    assert_eq!((updates, evals), (14, 2));
    assert!(lines.iter().filter(|v| v["kind"] == "update").all(|v| v["perturbed_loss"].is_f64()));
    // Steps count updates, from 1, in update and eval lines alike (as the
    // server, its SDKs, `rwp get` and TensorBoard number them).
    let steps = |kind: &str| -> Vec<u64> {
        lines.iter().filter(|v| v["kind"] == kind).map(|v| v["step"].as_u64().unwrap()).collect()
    };
    assert_eq!(steps("update"), (1..=14).collect::<Vec<_>>());
    assert_eq!(steps("eval"), [7, 14]);
    assert!(checkpoints.join("step-00000014.safetensors").exists());
}

#[test]
fn unknown_names_are_rejected_with_the_choices() {
    for (flag, value, needle) in [
        ("--method", "adam", "unknown method 'adam'"),
        ("--model", "resnet152", "unknown model 'resnet152'"),
        ("--dataset", "imagenet", "unknown dataset 'imagenet'"),
        ("--device", "tpu", "unknown device 'tpu'"),
        ("--lr-schedule", "linear", "unknown lr schedule 'linear'"),
    ] {
        assert_one_line_error(&rwp_train(&[flag, value]), needle);
    }
}

#[test]
fn out_of_range_hyper_parameters_are_rejected() {
    for (flag, value, needle) in [
        ("--sigma", "-0.1", "sigma = -0.1"),
        ("--lambda", "1.5", "lambda = 1.5"),
        ("--lambda", "-0.5", "lambda = -0.5"),
        ("--beta", "1", "beta = 1"),
        ("--beta", "-0.1", "beta = -0.1"),
        ("--batch-size", "0", "batch_size = 0"),
        ("--eta", "NaN", "eta = NaN"),
        ("--clean-shards", "3", "clean_shards = 3"),
    ] {
        assert_one_line_error(&rwp_train(&["--device", "cpu", flag, value]), needle);
    }
}

/// `--model-file` with a built-in model, and `--model torchscript` without a
/// file, are one line naming the fix, before any file is read.
#[test]
fn model_file_mistakes_name_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("x.pt");
    let out = rwp_train(&["--device", "cpu", "--model", "mlp", "--model-file", missing.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        "error: --model-file is only for --model torchscript, not --model mlp: \
         add --model torchscript to train that file, or drop --model-file",
    );
    let out = rwp_train(&["--device", "cpu", "--model", "torchscript"]);
    assert_one_line_error(
        &out,
        "error: --model torchscript needs --model-file PATH, the file torch.jit.script(model).save(PATH) writes",
    );
    // With the right model, a missing file is what is named.
    let out = rwp_train(&["--device", "cpu", "--model", "torchscript", "--model-file", missing.to_str().unwrap()]);
    assert_one_line_error(&out, &format!("--model-file: cannot read {}", missing.display()));
}

/// The schedule names are those of job files and `rwp submit`; a setting
/// for a schedule the run does not have is refused, not ignored.
#[test]
fn schedules_take_the_job_file_names() {
    let lr = "--lr-schedule: unknown lr schedule 'cosine' (expected one of: constant, step, cosine-per-update, \
              cosine-per-epoch)";
    assert_one_line_error(&rwp_train(&["--device", "cpu", "--lr-schedule", "cosine"]), lr);
    let sigma = "--sigma-schedule: unknown sigma schedule 'linear' (expected one of: constant, cosine-increasing)";
    assert_one_line_error(&rwp_train(&["--device", "cpu", "--sigma-schedule", "linear"]), sigma);
    assert_one_line_error(
        &rwp_train(&["--device", "cpu", "--method", "sgd", "--milestones", "3"]),
        "--milestones and --lr-gamma are for the step schedule, and this job's lr schedule is cosine-per-epoch",
    );
    assert_one_line_error(
        &rwp_train(&["--device", "cpu", "--method", "sgd", "--sigma-inc", "2"]),
        "add --sigma-schedule cosine-increasing",
    );
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("m.jsonl");
    let out = rwp_train(&[
        "--device",
        "cpu",
        "--quiet",
        "--threads",
        "1",
        "--eval-every",
        "0",
        "--method",
        "rwp",
        "--batch-size",
        "128",
        "--epochs",
        "2",
        "--max-updates",
        "2",
        "--lr-schedule",
        "cosine-per-update",
        "--sigma-schedule",
        "cosine-increasing",
        "--sigma-inc",
        "4",
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    // 7 updates per epoch, 14 planned: cosine per update moves the rate at
    // once, and σ grows from its first update.
    let updates: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "update")
        .collect();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0]["lr"].as_f64(), Some(0.1));
    assert!(updates[1]["lr"].as_f64().unwrap() < 0.1, "{updates:?}");
    assert!(updates[1]["sigma"].as_f64().unwrap() > updates[0]["sigma"].as_f64().unwrap(), "{updates:?}");
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn missing_and_truncated_data_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_one_line_error(
        &rwp_train(&["--device", "cpu", "--dataset", "mnist", "--data-dir", d]),
        "train-images-idx3-ubyte",
    );
    assert_one_line_error(&rwp_train(&["--device", "cpu", "--dataset", "cifar10"]), "needs a data directory");

    // A CIFAR-10 batch one byte short of two records.
    for i in 1..=5 {
        write(&dir.path().join(format!("data_batch_{i}.bin")), &vec![1u8; 3073 * 2]);
    }
    write(&dir.path().join("test_batch.bin"), &vec![1u8; 3073 * 2 - 1]);
    let out = rwp_train(&["--device", "cpu", "--dataset", "cifar10", "--data-dir", d]);
    assert_one_line_error(&out, "test_batch.bin");
    assert_one_line_error(&out, "truncated");
}

/// `--resume` trains on with the checkpoint's spec: a flag that would set the
/// spec is refused (all of them named, exit status 2) rather than silently
/// ignored; the flags that apply to a resumed run are accepted.
#[test]
fn resume_refuses_the_flags_it_would_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("ckpt");
    let ckpt_dir = checkpoints.to_str().unwrap();
    let base = ["--device", "cpu", "--quiet", "--threads", "1", "--eval-every", "0"];
    let first: Vec<&str> =
        base.iter().copied().chain(["--method", "sgd", "--epochs", "1", "--batch-size", "128"]).collect();
    let out = rwp_train(&[first.as_slice(), &["--max-updates", "2", "--checkpoint-dir", ckpt_dir]].concat());
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let checkpoint = checkpoints.join("step-00000002.safetensors");
    let ckpt = checkpoint.to_str().unwrap();

    let out = rwp_train(&["--resume", ckpt, "--method", "m-arwp", "--epochs", "5", "--lr", "0.2"]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_error(
        &out,
        "error: --resume continues with the spec in its checkpoint, so --method and --lr would be ignored: drop \
         them (with --resume: --epochs, --max-updates, --device, --threads, --eval-every, --metrics, \
         --checkpoint-dir, --checkpoint-every, --model-file, --quiet)",
    );
    let out = rwp_train(&["--resume", ckpt, "--init-from", ckpt]);
    assert_one_line_error(&out, "error: the argument '--resume <RESUME>' cannot be used with '--init-from");
    // Given with their default values, flags are still given.
    let out = rwp_train(&["--resume", ckpt, "--seed", "0"]);
    assert_one_line_error(&out, "so --seed would be ignored: drop it");
    let data = dir.path().to_str().unwrap();
    let out = rwp_train(&["--resume", ckpt, "--data-dir", data, "--sigma-schedule", "constant", "--no-augment"]);
    assert_one_line_error(&out, "so --data-dir, --sigma-schedule and --no-augment would be ignored");

    // A model file goes only with a checkpoint of a torchscript model.
    let out = rwp_train(&[&base[..], &["--resume", ckpt, "--model-file", ckpt]].concat());
    assert_one_line_error(&out, "--model-file is only for a checkpoint of a torchscript model");

    // The flags that apply on resume are taken: the run goes on to its end.
    let metrics = dir.path().join("resumed.jsonl");
    let out = rwp_train(
        &[
            &base[..],
            &["--resume", ckpt, "--metrics", metrics.to_str().unwrap(), "--checkpoint-dir", ckpt_dir],
            &["--checkpoint-every", "1"],
        ]
        .concat(),
    );
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("method=sgd") && summary.contains("updates=2"), "{summary}");

    // --max-updates 0 lifts the cap: the run goes on to the end of its epoch.
    let out = rwp_train(&[&base[..], &["--resume", ckpt, "--max-updates", "0"]].concat());
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("updates=") && !summary.contains("updates=2 "), "{summary}");
}

/// Every flag of `rwp-train --help` (and `-h`) says what it is for.
#[test]
fn every_flag_has_help_text() {
    for help in ["--help", "-h"] {
        let out = rwp_train(&[help]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("Options:")).skip(1).collect();
        let indent = |l: &str| l.len() - l.trim_start().len();
        let mut flags = 0;
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            if !trimmed.starts_with('-') {
                continue;
            }
            flags += 1;
            // `--flag <VALUE>  text`, or `--flag <VALUE>` with the text indented on the next line.
            let spec_end = trimmed.find("  ").unwrap_or(trimmed.len());
            // A `[default: ...]` alone is no description.
            let words = |t: &str| !t.is_empty() && !t.starts_with('[');
            let inline = trimmed[spec_end..].trim();
            let below = lines.get(i + 1).filter(|next| {
                words(next.trim()) && !next.trim_start().starts_with('-') && indent(next) > indent(line)
            });
            assert!(words(inline) || below.is_some(), "rwp-train {help}: no description for `{trimmed}`:\n{text}");
        }
        assert!(flags >= 38, "found only {flags} flags in rwp-train {help}:\n{text}");
    }
}
