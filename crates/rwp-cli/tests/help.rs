//! `--help` texts and shell completions.

mod common;

use common::{rwp, stdout};

#[test]
fn top_level_help_lists_every_subcommand_and_the_exit_codes() {
    let o = rwp(&["--help"]);
    assert!(o.status.success());
    let text = stdout(&o);
    for sub in ["submit", "list", "get", "watch", "cancel", "export", "plot", "completions"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(sub)), "{sub} missing from:\n{text}");
    }
    for want in ["--server", "RWP_SERVER", "--tls-ca", "--tls-domain", "Examples:", "Exit status:"] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    // Without arguments: the usage, as a usage error.
    let o = rwp(&[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn submit_help_explains_the_job_file_and_the_flags() {
    let o = rwp(&["submit", "--help"]);
    assert!(o.status.success());
    let text = stdout(&o);
    for want in [
        "JOBFILE",
        "Job file (TOML)",
        "unknown keys are rejected",
        "method = \"m-arwp\"",
        "lr_schedule",
        "--method",
        "--epochs",
        "--batch-size",
        "--sigma",
        "--lambda",
        "--clean-shards",
        "--perturbed-shards",
        "--max-updates",
        "--data-dir",
        "--watch",
        "--name",
        "m-arwp",
        "Examples:",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}

#[test]
fn watch_help_documents_its_exit_codes() {
    let text = stdout(&rwp(&["watch", "--help"]));
    for want in ["0 the job succeeded", "1 it failed", "3 it was cancelled", "130", "summary"] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    let text = stdout(&rwp(&["plot", "--help"]));
    assert!(text.contains(".png or .svg") && text.contains("--output"), "{text}");
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    let o = rwp(&["completions", "bash"]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains("_rwp()") && text.contains("complete -F _rwp"), "{text}");
    assert!(text.contains("submit") && text.contains("--max-updates"), "not the whole command line");
    let text = stdout(&rwp(&["completions", "zsh"]));
    assert!(text.starts_with("#compdef rwp"), "{}", &text[..text.len().min(200)]);
    let text = stdout(&rwp(&["completions", "fish"]));
    assert!(text.contains("complete -c rwp"), "{}", &text[..text.len().min(200)]);
    let o = rwp(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn version_is_printed() {
    let o = rwp(&["--version"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("rwp "), "{}", stdout(&o));
}
