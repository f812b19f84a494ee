//! Bearer tokens: the tokens file, and making and hashing tokens.
//!
//! The file (TOML, `tokens_file`, mounted from a Secret) lists each token by
//! the SHA-256 of its text, never the text itself:
//!
//! ```toml
//! [[token]]
//! name = "alice"        # owner of the jobs it submits; letters, digits, . _ @ -
//! role = "user"         # user | admin | worker
//! sha256 = "9f86d0..."  # `rwp-server token new` prints the entry, `token hash` the hash
//! # Optional, instead of the server's max_active_jobs_per_token,
//! # requests_per_second and request_burst:
//! max_active_jobs = 2
//! requests_per_second = 5.0
//! request_burst = 10
//! ```
//!
//! Tokens are 256 random bits (`rwp_` and 64 hex digits), so a plain
//! SHA-256 is enough to store them: there is nothing to guess that a slow
//! password hash would protect. Several entries may share a name (during a
//! rotation, the old and the new token); they must then share its role and
//! limits, which apply to the name (its jobs, its requests).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::domain::{CallerRole, Limits, Principal, Rate};
use crate::error::ServerError;

/// Prefix of the tokens `rwp-server token new` makes.
pub const TOKEN_PREFIX: &str = "rwp_";
/// Longest token name.
const MAX_NAME_LENGTH: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: CallerRole,
    sha256: String,
    max_active_jobs: Option<u32>,
    requests_per_second: Option<f64>,
    request_burst: Option<u32>,
}

impl TokenEntry {
    /// Its limits: its own settings, else `defaults`'.
    fn limits(&self, defaults: &Limits) -> Result<Limits, String> {
        if self.max_active_jobs == Some(0) {
            return Err("max_active_jobs must be at least 1".to_owned());
        }
        if self.requests_per_second.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err("requests_per_second must be a finite number > 0".to_owned());
        }
        if self.request_burst == Some(0) {
            return Err("request_burst must be at least 1".to_owned());
        }
        let rate = defaults.rate.map(|d| Rate {
            per_second: self.requests_per_second.unwrap_or(d.per_second),
            burst: self.request_burst.unwrap_or(d.burst),
        });
        Ok(Limits { max_active_jobs: self.max_active_jobs.or(defaults.max_active_jobs), rate })
    }
}

/// The tokens a server accepts, by the SHA-256 of their text.
#[derive(Debug, Clone)]
pub struct TokenTable {
    by_hash: HashMap<[u8; 32], Principal>,
}

/// A fresh token: `rwp_` and 256 random bits in hex.
pub fn new_token() -> Result<String, ServerError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ServerError::Credentials("the system's random number generator failed".into()))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// The SHA-256 of a token's text, in lowercase hex, as the tokens file holds it.
#[must_use]
pub fn hash_token(token: &str) -> String {
    hex(&sha256(token))
}

/// The tokens file entry of a token.
#[must_use]
pub fn token_entry(name: &str, role: CallerRole, token: &str) -> String {
    format!("[[token]]\nname = \"{name}\"\nrole = \"{}\"\nsha256 = \"{}\"\n", role.name(), hash_token(token))
}

fn sha256(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Checks a token's name: it names owners in logs and listings.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!("name '{name}' must be 1 to {MAX_NAME_LENGTH} letters, digits, '.', '_', '@' or '-'"))
    }
}

impl TokenTable {
    /// Reads the tokens file; errors name it (and the entry). An entry's
    /// limits default to `defaults`.
    pub fn load(path: &Path, defaults: &Limits) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Credentials(format!("cannot read the tokens file {}: {e}", path.display())))?;
        Self::parse(&text, defaults)
            .map_err(|e| ServerError::Credentials(format!("tokens file {}: {e}", path.display())))
    }

    /// Parses the text of a tokens file.
    pub fn parse(text: &str, defaults: &Limits) -> Result<Self, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        if file.token.is_empty() {
            return Err("it holds no [[token]] entry: nobody could call the server".to_owned());
        }
        let mut by_hash: HashMap<[u8; 32], Principal> = HashMap::new();
        let mut names: HashMap<&str, (CallerRole, Limits)> = HashMap::new();
        for (i, entry) in file.token.iter().enumerate() {
            let place = format!("[[token]] {} ('{}')", i + 1, entry.name);
            check_name(&entry.name).map_err(|e| format!("{place}: {e}"))?;
            let hash = unhex(&entry.sha256.to_ascii_lowercase())
                .ok_or_else(|| format!("{place}: sha256 must be 64 hex digits (rwp-server token hash)"))?;
            let limits = entry.limits(defaults).map_err(|e| format!("{place}: {e}"))?;
            if let Some((role, other)) = names.insert(&entry.name, (entry.role, limits)) {
                if role != entry.role {
                    return Err(format!(
                        "{place}: the name is also given the role {}; a name has one role",
                        role.name()
                    ));
                }
                if other != limits {
                    return Err(format!("{place}: another entry of the name sets other limits; a name has one set"));
                }
            }
            let principal = Principal { name: entry.name.clone(), role: entry.role, limits };
            if let Some(other) = by_hash.insert(hash, principal) {
                return Err(format!("{place}: the same sha256 as the entry of '{}'", other.name));
            }
        }
        Ok(Self { by_hash })
    }

    /// The principal of a token, if the file lists it.
    pub fn authenticate(&self, token: &str) -> Result<Principal, ServerError> {
        self.by_hash.get(&sha256(token)).cloned().ok_or_else(|| {
            ServerError::Unauthenticated("unknown token: it is not in the server's tokens file".to_owned())
        })
    }

    /// How many tokens of each role: (users, admins, workers).
    #[must_use]
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |role| self.by_hash.values().filter(|p| p.role == role).count();
        (count(CallerRole::User), count(CallerRole::Admin), count(CallerRole::Worker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_random_and_its_entry_authenticates_it() {
        let token = new_token().unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64, "{token}");
        assert_ne!(token, new_token().unwrap());
        let table = TokenTable::parse(&token_entry("alice", CallerRole::User, &token), &Limits::default()).unwrap();
        let alice = Principal { name: "alice".into(), role: CallerRole::User, limits: Limits::default() };
        assert_eq!(table.authenticate(&token).unwrap(), alice);
        let err = table.authenticate("rwp_guess").unwrap_err();
        assert!(matches!(err, ServerError::Unauthenticated(_)), "{err:?}");
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_text() {
        // `printf test | sha256sum`
        assert_eq!(hash_token("test"), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
        let upper = "[[token]]\nname = \"t\"\nrole = \"admin\"\nsha256 = \"9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\"\n";
        assert_eq!(
            TokenTable::parse(upper, &Limits::default()).unwrap().authenticate("test").unwrap().role,
            CallerRole::Admin
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_entry() {
        let hash = hash_token("a");
        let cases = [
            (String::new(), "holds no [[token]] entry"),
            (format!("[[token]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"{hash}\"\n"), "unknown variant `root`"),
            (format!("[[token]]\nname = \"a\"\nrole = \"anonymous\"\nsha256 = \"{hash}\"\n"), "unknown variant"),
            (format!("[[token]]\nname = \"a\"\nrole = \"user\"\nsha = \"{hash}\"\n"), "unknown field `sha`"),
            ("[[token]]\nname = \"a\"\nrole = \"user\"\nsha256 = \"abc\"\n".to_owned(), "[[token]] 1 ('a'): sha256"),
            (format!("[[token]]\nname = \"a b\"\nrole = \"user\"\nsha256 = \"{hash}\"\n"), "name 'a b'"),
            (
                format!("{}{}", token_entry("a", CallerRole::User, "x"), token_entry("b", CallerRole::User, "x")),
                "[[token]] 2 ('b'): the same sha256 as the entry of 'a'",
            ),
            (
                format!("{}{}", token_entry("a", CallerRole::User, "x"), token_entry("a", CallerRole::Admin, "y")),
                "[[token]] 2 ('a'): the name is also given the role user",
            ),
            (
                format!(
                    "{}{}max_active_jobs = 3\n",
                    token_entry("a", CallerRole::User, "x"),
                    token_entry("a", CallerRole::User, "y")
                ),
                "[[token]] 2 ('a'): another entry of the name sets other limits",
            ),
            (
                format!("{}max_active_jobs = 0\n", token_entry("a", CallerRole::User, "x")),
                "max_active_jobs must be at least 1",
            ),
            (
                format!("{}request_burst = 0\n", token_entry("a", CallerRole::User, "x")),
                "request_burst must be at least 1",
            ),
            (
                format!("{}requests_per_second = -1.0\n", token_entry("a", CallerRole::User, "x")),
                "requests_per_second must be a finite number > 0",
            ),
        ];
        for (text, want) in cases {
            let err = TokenTable::parse(&text, &Limits::default()).unwrap_err();
            assert!(err.contains(want), "{text}\n=> {err}");
        }
        // Rotation: two tokens of one name and role.
        let rotating =
            format!("{}{}", token_entry("a", CallerRole::User, "old"), token_entry("a", CallerRole::User, "new"));
        let table = TokenTable::parse(&rotating, &Limits::default()).unwrap();
        assert_eq!(table.authenticate("old").unwrap(), table.authenticate("new").unwrap());
        assert_eq!(table.counts(), (2, 0, 0));
    }

    #[test]
    fn an_entry_overrides_the_default_limits_it_names() {
        let defaults = Limits { max_active_jobs: Some(8), rate: Some(Rate { per_second: 20.0, burst: 40 }) };
        let text = format!(
            "{}max_active_jobs = 2\nrequest_burst = 5\n{}",
            token_entry("small", CallerRole::User, "s"),
            token_entry("plain", CallerRole::User, "p")
        );
        let table = TokenTable::parse(&text, &defaults).unwrap();
        let small = table.authenticate("s").unwrap().limits;
        assert_eq!(small, Limits { max_active_jobs: Some(2), rate: Some(Rate { per_second: 20.0, burst: 5 }) });
        assert_eq!(table.authenticate("p").unwrap().limits, defaults);
    }
}
