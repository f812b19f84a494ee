//! Job labels: free-form `key=value` pairs given at submission, shown by
//! `rwp list` and used to filter it. Checked the same way by the server
//! and the clients.

use std::collections::BTreeMap;

/// Most labels one job may carry.
pub const MAX_LABELS: usize = 32;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 63;
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 255;

/// Checks a job's labels: at most [`MAX_LABELS`]; keys of 1 to
/// [`MAX_KEY_BYTES`] letters, digits and `. _ - /`, starting with a letter
/// or digit; values of at most [`MAX_VALUE_BYTES`] printable characters.
pub fn validate(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("a job may have at most {MAX_LABELS} labels, not {}", labels.len()));
    }
    for (key, value) in labels {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("the value of label '{key}' is {} bytes; at most {MAX_VALUE_BYTES}", value.len()));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("the value of label '{key}' holds a control character"));
        }
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), String> {
    let shown: String = key.chars().flat_map(char::escape_debug).collect();
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!("label key '{shown}' must be 1 to {MAX_KEY_BYTES} bytes long"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    if !key.starts_with(|c: char| c.is_ascii_alphanumeric()) || !key.chars().all(allowed) {
        return Err(format!(
            "label key '{shown}' may hold only letters, digits and . _ - /, and must start with a letter or digit"
        ));
    }
    Ok(())
}

/// Parses `key=value` (as given to `--label`); the value may be empty.
pub fn parse(pair: &str) -> Result<(String, String), String> {
    let (key, value) = pair.split_once('=').ok_or_else(|| format!("'{pair}' is not KEY=VALUE"))?;
    check_key(key)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Whether `labels` has every pair of `selector`.
#[must_use]
pub fn matches(labels: &BTreeMap<String, String>, selector: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn keys_and_values_are_checked_with_the_reason() {
        assert!(validate(&labels(&[("team", "vision"), ("paper/table", "3"), ("note", "")])).is_ok());
        assert_eq!(validate(&labels(&[("", "x")])).unwrap_err(), "label key '' must be 1 to 63 bytes long");
        assert!(validate(&labels(&[("-team", "x")])).unwrap_err().contains("must start with a letter or digit"));
        assert!(validate(&labels(&[("te am", "x")])).unwrap_err().contains("may hold only letters"));
        assert!(validate(&labels(&[("k", "a\u{1b}[2J")])).unwrap_err().contains("control character"));
        let long = "v".repeat(MAX_VALUE_BYTES + 1);
        assert!(validate(&labels(&[("k", long.as_str())])).unwrap_err().contains("256 bytes"));
        let many: BTreeMap<String, String> = (0..=MAX_LABELS).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(validate(&many).unwrap_err(), "a job may have at most 32 labels, not 33");
    }

    #[test]
    fn pairs_parse_and_select() {
        assert_eq!(parse("team=vision").unwrap(), ("team".to_owned(), "vision".to_owned()));
        assert_eq!(parse("a=b=c").unwrap(), ("a".to_owned(), "b=c".to_owned()));
        assert_eq!(parse("team").unwrap_err(), "'team' is not KEY=VALUE");
        let job = labels(&[("team", "vision"), ("stage", "tune")]);
        assert!(matches(&job, &labels(&[("team", "vision")])));
        assert!(matches(&job, &BTreeMap::new()));
        assert!(!matches(&job, &labels(&[("team", "vision"), ("stage", "final")])));
        assert!(!matches(&job, &labels(&[("owner", "x")])));
    }
}
