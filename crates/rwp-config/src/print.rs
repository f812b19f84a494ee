//! `--print-config`: the effective configuration and its schema, as JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use crate::{Key, Loaded, Origin, Schema, Settings};

/// The `format` field of `--print-config`'s output; bumped when a field
/// changes meaning or goes away (adding one does not).
pub const FORMAT: &str = "rwp-config/1";

/// What `--print-config` prints, as pretty JSON (its `Display`), in this
/// order:
///
/// - `program`, `format` ([`FORMAT`]), `layers` (lowest first);
/// - `config`: each key's effective value, a secret's `"<redacted>"`;
/// - `origin`: the layer each value came from (`default`, `file`, `env`,
///   `flag`);
/// - `schema`: each key's `type` (`integer`, `number`, `boolean`, `string`,
///   `array` with its `items`' type), `nullable`, `default`, `env`, `flag`,
///   `doc`, and `secret` / `examples` where they apply;
/// - `options`: the command line's other options (`config`, the file's
///   flag, say), each with `flag`, `env` (or null), `doc` and `default` (or
///   null).
///
/// Keys are sorted within each object.
#[derive(Debug, Clone, Serialize)]
pub struct PrintedConfig {
    pub program: String,
    pub format: &'static str,
    pub layers: [Origin; 4],
    pub config: BTreeMap<String, Value>,
    pub origin: BTreeMap<String, Origin>,
    pub schema: BTreeMap<String, Key>,
    pub options: BTreeMap<String, CommandOption>,
}

/// An option of the command line that is not a setting.
#[derive(Debug, Clone, Serialize)]
pub struct CommandOption {
    pub flag: String,
    pub env: Option<String>,
    pub doc: String,
    pub default: Option<String>,
}

impl PrintedConfig {
    /// Prints it on stdout; a closed pipe (`| head`) is not an error.
    pub fn print(&self) -> std::io::Result<()> {
        use std::io::Write;
        match writeln!(std::io::stdout().lock(), "{self}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

/// A binary's `--print-config`: prints the configuration `loaded` (see
/// [`print_config`]) and returns success, or prints the error that loading
/// it gave, `error: ...` on stderr, and returns `failure` (what starting
/// with that configuration would have exited with).
pub fn print_config_and_exit<T: Settings, E: fmt::Display>(
    loaded: Result<Loaded<T>, E>,
    command: &clap::Command,
    failure: ExitCode,
) -> ExitCode {
    let printed = match loaded {
        Ok(loaded) => {
            print_config(&loaded, command).print().map_err(|e| format!("cannot print the configuration: {e}"))
        }
        Err(e) => Err(e.to_string()),
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            failure
        }
    }
}

impl fmt::Display for PrintedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string_pretty(self).map_err(|_| fmt::Error)?)
    }
}

/// The effective configuration `loaded` of the binary whose parser is
/// `command`, with the schema of its settings.
#[must_use]
pub fn print_config<T: Settings>(loaded: &Loaded<T>, command: &clap::Command) -> PrintedConfig {
    let schema = Schema::of::<T>();
    let values = serde_json::to_value(&loaded.config).expect("a settings struct serialises to JSON");
    let config =
        schema.keys.iter().map(|k| (k.name.clone(), k.shown(values.get(&k.name).unwrap_or(&Value::Null)))).collect();
    let mut options = BTreeMap::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if schema.get(id).is_some() || matches!(id, "help" | "version") {
            continue;
        }
        options.insert(
            long.to_owned(),
            CommandOption {
                flag: format!("--{long}"),
                env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                doc: arg.get_help().map(ToString::to_string).unwrap_or_default(),
                default: arg.get_default_values().first().map(|v| v.to_string_lossy().into_owned()),
            },
        );
    }
    PrintedConfig {
        program: command.get_name().to_owned(),
        format: FORMAT,
        layers: [Origin::Default, Origin::File, Origin::Env, Origin::Flag],
        config,
        origin: loaded.origins.clone(),
        schema: schema.keys.into_iter().map(|k| (k.name.clone(), k)).collect(),
        options,
    }
}
