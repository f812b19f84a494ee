//! The configuration of `rwp-server` and `rwp-worker`, one mechanism for
//! both: a service describes its settings once, as one serde struct with a
//! `Default` and doc comments (its [`schemars::JsonSchema`] is derived), and
//! this crate gives it, from that struct alone,
//!
//! - the layers, lowest first: the struct's defaults < a TOML file
//!   (`--config`) < environment variables < command-line flags, merged with
//!   [`figment`] ([`load`]);
//! - one environment variable per key, `RWP_` and the key in capitals, unless
//!   the field names another with `#[schemars(extend("x-env" = "RWP_..."))]`;
//! - one flag per key, `--` and the key with dashes ([`Flags`], a
//!   [`clap::Args`] to flatten into the binary's parser);
//! - the effective configuration with its schema, for `--print-config`
//!   ([`print_config`]): each key's type, default, variable, flag and doc;
//! - a check that every key can be set from every layer ([`check`]), which
//!   each service runs as a test.
//!
//! Unknown keys are errors naming them: in the file (the struct denies
//! unknown fields), and among the environment's `RWP_*` variables, except
//! the ones other programs of this repository read ([`PROJECT_VARIABLES`]):
//! the two services share the prefix with each other, the CLI, the scripts
//! and the tests, and a shell may hold any of them.
//!
//! Values from the environment and flags are typed by the schema: integers,
//! numbers, `true`/`false`, strings, and lists as comma-separated items. An
//! empty variable counts as unset. A field with `#[schemars(extend("x-secret"
//! = true))]` is shown as `"<redacted>"` when set.

pub mod check;
mod flags;
mod load;
mod print;
mod schema;
mod variables;

pub use flags::Flags;
pub use load::{load, Env, LoadError, Loaded, Origin};
pub use print::{print_config, print_config_and_exit, CommandOption, PrintedConfig, FORMAT};
pub use schema::{Key, Kind, Schema};
pub use variables::PROJECT_VARIABLES;

/// What a service's configuration struct must be: serialisable both ways,
/// with defaults and a JSON schema (its doc comments become the keys' docs).
pub trait Settings: serde::Serialize + serde::de::DeserializeOwned + Default + schemars::JsonSchema + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Default + schemars::JsonSchema + 'static> Settings for T {}

/// The text shown for a secret's value.
pub const REDACTED: &str = "<redacted>";

#[cfg(test)]
mod tests;
