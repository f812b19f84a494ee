//! Pure formatting and arithmetic helpers: durations, ages, rates, ETAs,
//! and the escaping of text from the server before it reaches a terminal.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Write;

/// Whether `c` may drive or disguise a terminal: C0 and C1 control
/// characters (ESC, CR, LF, NUL, DEL, CSI, ...) and the Unicode
/// bidirectional overrides and isolates (U+202A to U+202E, U+2066 to U+2069).
#[must_use]
pub fn is_terminal_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn escape_into(text: &str, keep: impl Fn(char) -> bool, out: &mut String) {
    for c in text.chars() {
        if is_terminal_control(c) && !keep(c) {
            // Every such character is in the BMP: `\uXXXX` is also a JSON escape.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
}

/// `text` (a name, an owner, an error from the server) with every
/// [terminal control](is_terminal_control), newlines and tabs included,
/// written as `\uXXXX`, so that printing it cannot move the cursor, change
/// colours, rewrite the line or reorder what is shown.
#[must_use]
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_terminal_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    escape_into(text, |_| false, &mut out);
    Cow::Owned(out)
}

/// A writer that escapes every [terminal control](is_terminal_control) but
/// newlines and tabs as `\uXXXX` (valid inside JSON strings, where they are
/// the only place such characters can appear): whatever the CLI prints on
/// stdout, tables and JSON alike, cannot drive the terminal.
#[derive(Debug)]
pub struct Printable<W: Write> {
    inner: W,
    /// The start of a UTF-8 sequence split between two writes.
    partial: Vec<u8>,
}

impl<W: Write> Printable<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, partial: Vec::new() }
    }
}

impl<W: Write> Write for Printable<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        let bytes = std::mem::take(&mut self.partial);
        let mut text = String::new();
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    escape_into(valid, |c| c == '\n' || c == '\t', &mut text);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    escape_into(
                        std::str::from_utf8(valid).expect("valid prefix"),
                        |c| c == '\n' || c == '\t',
                        &mut text,
                    );
                    match e.error_len() {
                        // Not UTF-8: shown as U+FFFD, never passed through raw.
                        Some(n) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // A sequence the next write completes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.partial = rest.to_vec();
        self.inner.write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

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

/// `2026-12-07 15:27:26.211` (UTC) for a Unix time in milliseconds.
#[must_use]
pub fn utc_time(unix_ms: i64) -> String {
    let (days, ms) = (unix_ms.div_euclid(86_400_000), unix_ms.rem_euclid(86_400_000));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{milli:03}")
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
mod utc_tests {
    use super::utc_time;

    #[test]
    fn unix_times_print_as_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00.000");
        // date -u -d @1796656046.211
        assert_eq!(utc_time(1_796_656_046_211), "2026-12-07 15:07:26.211");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00.000");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_from_the_server_are_escaped() {
        assert_eq!(printable("sigma-0.01 ünïcode"), "sigma-0.01 ünïcode");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        let hostile = "a\u{1b}[2Jb\rc\nd\0e\u{7f}f\u{9b}g\u{202e}h\u{2066}i\tj";
        assert_eq!(printable(hostile), "a\\u001b[2Jb\\u000dc\\u000ad\\u0000e\\u007ff\\u009bg\\u202eh\\u2066i\\u0009j");
    }

    #[test]
    fn the_stdout_writer_keeps_newlines_and_tabs_and_escapes_the_rest_even_split() {
        let mut out = Printable::new(Vec::new());
        write!(out, "id\tname\n1\tx\u{1b}]0;pwned\u{7}").unwrap();
        // A character split between two writes, then a bidi override.
        let rlo = "\u{202e}".as_bytes();
        out.write_all(&rlo[..1]).unwrap();
        out.write_all(&rlo[1..]).unwrap();
        out.write_all(b"\xff\n").unwrap();
        let text = String::from_utf8(out.inner).unwrap();
        assert_eq!(text, "id\tname\n1\tx\\u001b]0;pwned\\u0007\\u202e\u{fffd}\n");
        // Still valid JSON, with the same string.
        let mut out = Printable::new(Vec::new());
        let value = serde_json::json!({ "name": "a\u{9b}b\u{202e}" });
        write!(out, "{value}").unwrap();
        let read: serde_json::Value = serde_json::from_slice(&out.inner).unwrap();
        assert_eq!(read, value);
    }

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
