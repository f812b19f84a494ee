//! `rwp model`: list and delete uploaded model files.

use std::io::Write;

use rwp_sdk::StoredModel;
use serde_json::{json, Value};

use super::{to_json, Connection};
use crate::cli::ModelCommand;
use crate::error::CliError;
use crate::format::{age_seconds, format_age, now_unix_ms};
use crate::table::{Align, Table};

pub async fn run(
    command: ModelCommand,
    connect: impl Fn() -> Result<Connection, CliError>,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    match command {
        ModelCommand::List(args) => {
            let models = connect()?.connect().await?.list_models().await?;
            if args.json {
                let json: Vec<Value> = models.iter().map(model_json).collect();
                writeln!(out, "{}", to_json(&json)?)?;
            } else {
                out.write_all(models_table(&models, now_unix_ms()).as_bytes())?;
            }
            Ok(0)
        }
        ModelCommand::Delete(args) => {
            connect()?.connect().await?.delete_model(&args.sha256).await?;
            writeln!(out, "deleted your copy of model file {}", args.sha256)?;
            Ok(0)
        }
    }
}

/// One uploaded file as JSON; `owner` is null on a server without authentication.
#[must_use]
pub fn model_json(m: &StoredModel) -> Value {
    json!({
        "sha256": m.sha256,
        "size_bytes": m.size_bytes,
        "uploaded_unix_ms": m.uploaded_unix_ms,
        "owner": m.owner,
    })
}

/// The files as a table: digest, size, age of the last upload, and the
/// owner when the server has owners.
#[must_use]
pub fn models_table(models: &[StoredModel], now_unix_ms: i64) -> String {
    let owners = models.iter().any(|m| m.owner.is_some());
    let mut columns = vec![("SHA256", Align::Left), ("SIZE", Align::Right), ("UPLOADED", Align::Right)];
    if owners {
        columns.push(("OWNER", Align::Left));
    }
    let mut table = Table::new(&columns);
    for m in models {
        let mut row = vec![
            m.sha256.clone(),
            m.size_bytes.to_string(),
            format!("{} ago", format_age(age_seconds(m.uploaded_unix_ms, now_unix_ms))),
        ];
        if owners {
            row.push(m.owner.clone().unwrap_or_else(|| "-".to_owned()));
        }
        table.push(row);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(sha: char, size: u64, owner: Option<&str>) -> StoredModel {
        StoredModel {
            sha256: sha.to_string().repeat(64),
            size_bytes: size,
            uploaded_unix_ms: 1_000_000,
            owner: owner.map(str::to_owned),
        }
    }

    #[test]
    fn the_table_shows_owners_only_when_the_server_has_them() {
        let now = 1_000_000 + 90_000;
        let text = models_table(&[model('a', 1234, Some("alice")), model('b', 5, Some("bob"))], now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["SHA256", "SIZE", "UPLOADED", "OWNER"]);
        assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), [&"a".repeat(64), "1234", "1m", "ago", "alice"]);
        let open = models_table(&[model('c', 7, None)], now);
        assert!(!open.contains("OWNER"), "{open}");
        assert_eq!(model_json(&model('c', 7, None))["owner"], Value::Null);
    }
}
