//! Fault injection for the project's own fault tests (`make chaos`): named
//! points in the code where a test can make the process kill itself or
//! stall, so that "the server died while writing a checkpoint" happens at
//! exactly that moment rather than whenever a signal lands.
//!
//! Off unless `RWP_TEST_FAULTS` is set, as a comma-separated list of
//! `point:action[:after=N]`:
//!
//! - points: `checkpoint-write` (half of a checkpoint's bytes are in its
//!   temporary file), `aggregation` (an update's shard results are in, the
//!   update is not applied yet), `evaluation` (a worker is about to
//!   evaluate a shard), `gradient` (a worker is about to compute a
//!   gradient task);
//! - actions: `kill` (SIGKILL to this process) or `pause=MS`;
//! - `after=N`: let the first N hits pass, act on the next one (default 0).
//!
//! Each action is taken once and announced on stderr first.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const VARIABLE: &str = "RWP_TEST_FAULTS";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Kill,
    Pause(Duration),
}

#[derive(Debug)]
struct Fault {
    action: Action,
    after: u64,
    hits: u64,
}

fn faults() -> &'static Mutex<HashMap<String, Fault>> {
    static FAULTS: OnceLock<Mutex<HashMap<String, Fault>>> = OnceLock::new();
    FAULTS.get_or_init(|| {
        let spec = std::env::var(VARIABLE).unwrap_or_default();
        let parsed = parse(&spec).unwrap_or_else(|e| panic!("{VARIABLE}={spec:?}: {e}"));
        Mutex::new(parsed)
    })
}

fn parse(spec: &str) -> Result<HashMap<String, Fault>, String> {
    let mut faults = HashMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = entry.split(':');
        let point = parts.next().unwrap_or_default();
        if !["checkpoint-write", "aggregation", "evaluation", "gradient"].contains(&point) {
            return Err(format!("unknown fault point {point:?} (checkpoint-write, aggregation, evaluation, gradient)"));
        }
        let action = match parts.next() {
            Some("kill") => Action::Kill,
            Some(p) if p.starts_with("pause=") => Action::Pause(Duration::from_millis(
                p["pause=".len()..].parse().map_err(|e| format!("{entry}: pause=MS: {e}"))?,
            )),
            other => return Err(format!("{entry}: unknown action {other:?} (kill, pause=MS)")),
        };
        let mut after = 0;
        for option in parts {
            after = option
                .strip_prefix("after=")
                .ok_or_else(|| format!("{entry}: unknown option {option:?} (after=N)"))?
                .parse()
                .map_err(|e| format!("{entry}: after=N: {e}"))?;
        }
        faults.insert(point.to_owned(), Fault { action, after, hits: 0 });
    }
    Ok(faults)
}

/// Marks that execution reached `point`; takes the configured action if its turn came.
pub fn hit(point: &str) {
    let action = {
        let mut faults = faults().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(fault) = faults.get_mut(point) else { return };
        fault.hits += 1;
        if fault.hits != fault.after + 1 {
            return;
        }
        fault.action
    };
    eprintln!("rwp: injected fault at {point}: {action:?}");
    match action {
        Action::Kill => {
            let _ = std::process::Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
            // The signal is on its way; never go on past the point.
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Action::Pause(duration) => std::thread::sleep(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_mistakes_are_named() {
        let f = parse("checkpoint-write:kill:after=2, aggregation:pause=150").unwrap();
        assert_eq!((f["checkpoint-write"].action, f["checkpoint-write"].after), (Action::Kill, 2));
        assert_eq!(f["aggregation"].action, Action::Pause(Duration::from_millis(150)));
        assert!(parse("").unwrap().is_empty());
        assert!(parse("checkpoint:kill").unwrap_err().contains("unknown fault point"));
        assert!(parse("aggregation:explode").unwrap_err().contains("unknown action"));
        assert!(parse("aggregation:kill:every=2").unwrap_err().contains("unknown option"));
    }
}
