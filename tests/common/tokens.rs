//! A tokens file for a test server, with the tokens it lists.

use std::collections::HashMap;
use std::path::PathBuf;

use rwp_parameter_server::domain::CallerRole;
use rwp_parameter_server::tokens::{new_token, token_entry};
use rwp_sdk::Token;

#[derive(Debug)]
pub struct TokensFile {
    dir: tempfile::TempDir,
    /// The file, for the server's `tokens_file`.
    pub path: PathBuf,
    tokens: HashMap<String, Token>,
}

impl TokensFile {
    /// A fresh token for each (name, role), and the file listing them.
    #[must_use]
    pub fn new(entries: &[(&str, CallerRole)]) -> Self {
        let entries: Vec<_> = entries.iter().map(|(name, role)| (*name, *role, "")).collect();
        Self::with_settings(&entries)
    }

    /// [`TokensFile::new`] with more TOML lines in each entry (its limits).
    #[must_use]
    pub fn with_settings(entries: &[(&str, CallerRole, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        let mut tokens = HashMap::new();
        for (name, role, settings) in entries {
            let token = new_token().unwrap();
            text.push_str(&token_entry(name, *role, &token));
            text.push_str(settings);
            text.push('\n');
            tokens.insert((*name).to_owned(), Token::new(token));
        }
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, text).unwrap();
        Self { dir, path, tokens }
    }

    /// The token of `name`.
    #[must_use]
    pub fn token(&self, name: &str) -> &Token {
        &self.tokens[name]
    }

    /// The token of `name` alone in a file, as a worker's `token_file`.
    #[must_use]
    pub fn token_file(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.token"));
        std::fs::write(&path, format!("{}\n", self.token(name).expose())).unwrap();
        path
    }
}
