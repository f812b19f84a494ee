//! A job file as `rwp submit JOBFILE.toml` reads it: arbitrary UTF-8 through
//! `JobFile::parse` and `JobFile::into_spec` (crates/rwp-sdk/src/job_file.rs).
//! A bad file is an error naming the problem, never a panic; a spec that is
//! accepted crosses the wire unchanged, the server accepts it too, and its
//! schedules and plan work.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwp_sdk::JobFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = match JobFile::parse(text, "fuzz.toml") {
        Ok(file) => file,
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("fuzz.toml"), "a parse error does not name the file: {message}");
            return;
        }
    };
    let spec = match file.into_spec() {
        Ok((_, spec)) => spec,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    spec.validate().expect("into_spec returns a validated spec");
    rwp_fuzz::check_crosses_the_wire(&spec);
    rwp_fuzz::check_valid_spec(&spec);
});
