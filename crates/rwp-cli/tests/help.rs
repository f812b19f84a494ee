//! `--help` texts and shell completions.

mod common;

use common::{rwp, stdout};

#[test]
fn top_level_help_lists_every_subcommand_and_the_exit_codes() {
    let o = rwp(&["--help"]);
    assert!(o.status.success());
    let text = stdout(&o);
    for sub in ["submit", "list", "get", "watch", "cancel", "resume", "delete", "export", "plot", "completions"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(sub)), "{sub} missing from:\n{text}");
    }
    for want in ["--server", "RWP_SERVER", "--tls-ca", "--tls-domain", "Examples:", "Exit status:"] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    // Without arguments: the usage, as a usage error.
    let o = rwp(&[]);
    assert_eq!(o.status.code(), Some(2));
}

/// Every exit status the code can return is listed, with what it means, in
/// the `Exit status:` section of `rwp --help` (and the watch statuses in
/// `rwp watch --help`).
#[test]
fn help_lists_every_exit_status_the_code_returns() {
    use rwp_cli::commands::Outcome;
    use rwp_cli::error::{EXIT_CANCELLED, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_STOPPED, EXIT_USAGE};

    let text = stdout(&rwp(&["--help"]));
    let section: Vec<&str> = text.lines().skip_while(|l| l.trim() != "Exit status:").skip(1).collect();
    assert!(!section.is_empty(), "no Exit status: section in:\n{text}");
    let listed = |code: u8| {
        section.iter().any(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(code.to_string().as_str()) && words.next().is_some()
        })
    };
    let watch_codes = [
        Outcome::Succeeded.exit_code(),
        Outcome::Failed.exit_code(),
        Outcome::Cancelled.exit_code(),
        Outcome::Stopped.exit_code(),
        Outcome::Interrupted.exit_code(),
    ];
    for code in
        [0, EXIT_ERROR, EXIT_USAGE, EXIT_CANCELLED, EXIT_STOPPED, EXIT_INTERRUPTED].into_iter().chain(watch_codes)
    {
        assert!(listed(code), "exit status {code} is not explained in the Exit status: section of:\n{text}");
    }
    assert!(
        section.iter().any(|l| l.trim_start().starts_with(&format!("{EXIT_STOPPED} ")) && l.contains("stopped early")),
        "{text}"
    );
    let watch = stdout(&rwp(&["watch", "--help"]));
    for code in watch_codes {
        assert!(watch.contains(&format!("{code} ")), "exit status {code} missing from rwp watch --help:\n{watch}");
    }
    assert!(watch.contains(&format!("{EXIT_STOPPED} it was stopped early")), "{watch}");
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
