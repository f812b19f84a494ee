//! Pure formatting and arithmetic helpers: durations, ages, rates, ETAs.

use std::collections::VecDeque;

/// A duration for people, precise for short spans and compact for long ones:
/// `0.4s`, `41.2s`, `3m05s`, `1h02m`, `2d03h`. Negative or non-finite
/// input prints as `-`.
#[must_use]
pub fn format_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_owned();
    }
    if seconds < 59.95 {
        return format!("{seconds:.1}s");
    }
    let total = seconds.round() as u64;
    let (d, h, m, s) = (total / 86_400, total / 3600 % 24, total / 60 % 60, total % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else {
        format!("{m}m{s:02}s")
    }
}

/// An age in one unit, as in `ls`-like tables: `12s`, `5m`, `3h`, `2d`.
#[must_use]
pub fn format_age(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "-".to_owned();
    }
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Seconds from `then_unix_ms` to `now_unix_ms` (0 when `then` is in the future).
#[must_use]
pub fn age_seconds(then_unix_ms: i64, now_unix_ms: i64) -> f64 {
    (now_unix_ms.saturating_sub(then_unix_ms)).max(0) as f64 / 1000.0
}

/// Milliseconds since the Unix epoch, now.
#[must_use]
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds until `remaining` more updates are done at `rate` updates per
/// second; `None` when the rate is unknown or zero.
#[must_use]
pub fn eta_seconds(remaining: u64, rate: Option<f64>) -> Option<f64> {
    match rate {
        _ if remaining == 0 => Some(0.0),
        Some(r) if r.is_finite() && r > 0.0 => Some(remaining as f64 / r),
        _ => None,
    }
}

/// A metric with a fixed number of decimals, or `-` when absent or not finite.
#[must_use]
pub fn metric(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        Some(v) => v.to_string(),
        None => "-".to_owned(),
    }
}

/// Updates per second from the wall times (seconds of running time) at
/// which successive updates were applied, over a sliding window of recent
/// updates, so that bursts (a replayed history) and pauses even out.
#[derive(Clone, Debug)]
pub struct RateMeter {
    window: usize,
    /// (updates applied, wall time of the update in seconds)
    samples: VecDeque<(u64, f64)>,
}

impl RateMeter {
    /// A meter over the last `window` updates (at least 2).
    #[must_use]
    pub fn new(window: usize) -> Self {
        Self { window: window.max(2), samples: VecDeque::new() }
    }

    /// Records that `updates` updates had been applied at `wall_time_s`.
    /// Samples that go back in step or time (a server restart that resumed
    /// from a checkpoint) start the window afresh.
    pub fn record(&mut self, updates: u64, wall_time_s: f64) {
        if !wall_time_s.is_finite() {
            return;
        }
        if let Some(&(last_updates, last_wall)) = self.samples.back() {
            if updates <= last_updates || wall_time_s < last_wall {
                self.samples.clear();
            }
        }
        self.samples.push_back((updates, wall_time_s));
        while self.samples.len() > self.window {
            self.samples.pop_front();
        }
    }

    /// Updates per second over the window, once two samples span some time.
    #[must_use]
    pub fn rate(&self) -> Option<f64> {
        let (&(u0, w0), &(u1, w1)) = (self.samples.front()?, self.samples.back()?);
        let dt = w1 - w0;
        (u1 > u0 && dt > 0.0).then(|| (u1 - u0) as f64 / dt)
    }
}

/// Average updates per second of a whole run: `updates` applied in `wall_time_s`.
#[must_use]
pub fn average_rate(updates: u64, wall_time_s: f64) -> Option<f64> {
    (updates > 0 && wall_time_s.is_finite() && wall_time_s > 0.0).then(|| updates as f64 / wall_time_s)
}

/// Makes an error's cause read as part of a sentence: `Connection refused
/// (os error 111)` becomes `connection refused`.
#[must_use]
pub fn tidy_reason(reason: &str) -> String {
    let mut text = reason.trim().trim_end_matches('.').to_owned();
    if let Some(start) = text.rfind(" (os error ") {
        if text.ends_with(')') {
            text.truncate(start);
        }
    }
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && !second.is_uppercase() => {
            first.to_lowercase().chain(text.chars().skip(1)).collect()
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_precise_when_short_and_compact_when_long() {
        assert_eq!(format_duration(0.0), "0.0s");
        assert_eq!(format_duration(0.44), "0.4s");
        assert_eq!(format_duration(41.23), "41.2s");
        assert_eq!(format_duration(59.96), "1m00s");
        assert_eq!(format_duration(185.0), "3m05s");
        assert_eq!(format_duration(3720.0), "1h02m");
        assert_eq!(format_duration(2.0 * 86_400.0 + 3.0 * 3600.0 + 59.0), "2d03h");
        assert_eq!(format_duration(-1.0), "-");
        assert_eq!(format_duration(f64::NAN), "-");
        assert_eq!(format_duration(f64::INFINITY), "-");
    }

    #[test]
    fn ages_use_one_unit() {
        assert_eq!(format_age(0.2), "0s");
        assert_eq!(format_age(59.9), "59s");
        assert_eq!(format_age(60.0), "1m");
        assert_eq!(format_age(3599.0), "59m");
        assert_eq!(format_age(7200.0), "2h");
        assert_eq!(format_age(3.5 * 86_400.0), "3d");
        assert_eq!(format_age(-5.0), "0s");
        assert_eq!(age_seconds(1_000, 61_000), 60.0);
        assert_eq!(age_seconds(61_000, 1_000), 0.0);
    }

    #[test]
    fn eta_needs_a_positive_rate() {
        assert_eq!(eta_seconds(100, Some(4.0)), Some(25.0));
        assert_eq!(eta_seconds(0, None), Some(0.0));
        assert_eq!(eta_seconds(10, None), None);
        assert_eq!(eta_seconds(10, Some(0.0)), None);
        assert_eq!(eta_seconds(10, Some(f64::NAN)), None);
    }

    #[test]
    fn rate_meter_uses_the_window_and_restarts_on_regressions() {
        let mut m = RateMeter::new(3);
        assert_eq!(m.rate(), None);
        m.record(1, 1.0);
        assert_eq!(m.rate(), None);
        m.record(2, 1.5);
        assert_eq!(m.rate(), Some(2.0));
        m.record(3, 2.0);
        m.record(4, 4.0); // window: (2,1.5) (3,2.0) (4,4.0)
        assert_eq!(m.rate(), Some(2.0 / 2.5));
        // Resumed from an older checkpoint: start over.
        m.record(2, 1.2);
        assert_eq!(m.rate(), None);
        m.record(3, 1.7);
        assert_eq!(m.rate(), Some(2.0));
        // Two updates at the same wall time give no rate yet.
        let mut m = RateMeter::new(10);
        m.record(1, 3.0);
        m.record(2, 3.0);
        assert_eq!(m.rate(), None);
        m.record(3, f64::NAN);
        assert_eq!(m.rate(), None);
    }

    #[test]
    fn average_rate_and_metrics() {
        assert_eq!(average_rate(240, 40.0), Some(6.0));
        assert_eq!(average_rate(0, 40.0), None);
        assert_eq!(average_rate(5, 0.0), None);
        assert_eq!(metric(Some(0.81234), 4), "0.8123");
        assert_eq!(metric(None, 4), "-");
        assert_eq!(metric(Some(f64::NAN), 4), "NaN");
    }

    #[test]
    fn reasons_read_as_part_of_a_sentence() {
        assert_eq!(tidy_reason("Connection refused (os error 111)"), "connection refused");
        assert_eq!(tidy_reason("tcp connect error"), "tcp connect error");
        assert_eq!(tidy_reason("TLS handshake failed."), "TLS handshake failed");
        assert_eq!(tidy_reason(""), "");
    }
}
