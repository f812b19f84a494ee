//! The layers, merged with figment: defaults < TOML file < environment <
//! flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::{Flags, Key, Kind, Schema, Settings, PROJECT_VARIABLES, REDACTED};

/// Where the environment layer's variables come from.
pub enum Env<'a> {
    /// Every variable of an environment: a settings' variable is read, and
    /// any other `RWP_*` one that no program of this repository reads is an
    /// error naming it ([`PROJECT_VARIABLES`]).
    All(Vec<(String, String)>),
    /// Each setting's variable looked up by name (tests): no other variable
    /// is seen.
    Lookup(&'a dyn Fn(&str) -> Option<String>),
}

impl Env<'_> {
    /// The process's environment.
    #[must_use]
    pub fn process() -> Self {
        Env::All(
            std::env::vars_os()
                .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
                .collect(),
        )
    }
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Env::All(vars) => write!(f, "Env::All({} variables)", vars.len()),
            Env::Lookup(_) => f.write_str("Env::Lookup"),
        }
    }
}

/// Why the layers could not be merged. (A value out of range is the
/// service's `validate()`'s to report.)
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// Not TOML, an unknown key (named), a value of the wrong type.
    #[error("config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// A variable's or flag's value that is not of its key's type.
    #[error("{origin}='{value}' is not valid for {key}: {reason}")]
    Invalid { key: String, origin: String, value: String, reason: String },
    /// An `RWP_*` variable that names no setting and that no other program
    /// of the repository reads.
    #[error(
        "environment variable {name} is set but names no setting{hint}; --print-config lists every setting's variable"
    )]
    UnknownVariable { name: String, hint: String },
}

/// The layer that set a key's effective value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Default,
    /// The TOML file.
    File,
    /// The key's variable.
    Env,
    /// The key's flag.
    Flag,
}

/// The merged configuration (not validated: that is the service's), with
/// the layer each key's value came from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub config: T,
    pub origins: BTreeMap<String, Origin>,
}

/// Merges the layers of `T`: its defaults < the TOML file `file` < `env` <
/// `flags`.
pub fn load<T: Settings>(file: Option<&Path>, env: &Env<'_>, flags: &Flags<T>) -> Result<Loaded<T>, LoadError> {
    let schema = Schema::of::<T>();
    let mut origins: BTreeMap<String, Origin> = schema.keys.iter().map(|k| (k.name.clone(), Origin::Default)).collect();
    let defaults = figment::providers::Serialized::defaults(T::default());
    let mut figment = Figment::from(Layer::new(Origin::Default, None, defaults_dict(&defaults)?, &schema));

    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
        let dict: Dict = toml::from_str(&text)
            .map_err(|e| LoadError::File { path: path.to_owned(), message: e.to_string().trim().to_owned() })?;
        for key in dict.keys() {
            origins.insert(key.clone(), Origin::File);
        }
        figment = figment.merge(Layer::new(Origin::File, Some(path), dict, &schema));
    }

    let mut raw = BTreeMap::new();
    let env_values = environment(&schema, env)?;
    let mut dict = Dict::new();
    for (key, variable, text) in env_values {
        dict.insert(key.name.clone(), typed(key, &text).map_err(|reason| invalid(key, &variable, &text, reason))?);
        origins.insert(key.name.clone(), Origin::Env);
        raw.insert(key.name.clone(), (variable, text));
    }
    figment = figment.merge(Layer::new(Origin::Env, None, dict, &schema));

    let mut dict = Dict::new();
    for (name, text) in flags.iter() {
        let key = schema.get(name).expect("flags hold settings' keys only");
        dict.insert(key.name.clone(), typed(key, text).map_err(|reason| invalid(key, &key.flag, text, reason))?);
        origins.insert(key.name.clone(), Origin::Flag);
        raw.insert(key.name.clone(), (key.flag.clone(), text.to_owned()));
    }
    figment = figment.merge(Layer::new(Origin::Flag, None, dict, &schema));

    let config = figment.extract::<T>().map_err(|e| extract_error(e, file, &schema, &raw))?;
    Ok(Loaded { config, origins })
}

fn defaults_dict<P: Provider>(defaults: &P) -> Result<Dict, LoadError> {
    let mut data = defaults.data().map_err(|e| LoadError::Invalid {
        key: String::new(),
        origin: "the defaults".to_owned(),
        value: String::new(),
        reason: e.to_string(),
    })?;
    Ok(data.remove(&Profile::Default).unwrap_or_default())
}

/// The settings' variables that are set (not empty) in `env`, with the
/// value trimmed; an unknown `RWP_*` variable is an error.
fn environment<'s>(schema: &'s Schema, env: &Env<'_>) -> Result<Vec<(&'s Key, String, String)>, LoadError> {
    let mut found = Vec::new();
    match env {
        Env::Lookup(lookup) => {
            for key in &schema.keys {
                if let Some(value) = lookup(&key.env) {
                    found.push((key, key.env.clone(), value));
                }
            }
        }
        Env::All(vars) => {
            for (name, value) in vars {
                if let Some(key) = schema.by_env(name) {
                    found.push((key, name.clone(), value.clone()));
                } else if name.starts_with("RWP_") && !PROJECT_VARIABLES.contains(&name.as_str()) {
                    let hint = closest(name, schema.keys.iter().map(|k| k.env.as_str()))
                        .map(|near| format!(" (did you mean {near}?)"))
                        .unwrap_or_default();
                    return Err(LoadError::UnknownVariable { name: name.clone(), hint });
                }
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|(key, variable, value)| (key, variable, value.trim().to_owned()))
        .filter(|(_, _, value)| !value.is_empty())
        .collect())
}

/// The candidate nearest to `name` by edit distance, if it is near (a typo).
fn closest<'c>(name: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut previous = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let next = (row[j + 1] + 1).min(row[j] + 1).min(previous + usize::from(ca != *cb));
                previous = row[j + 1];
                row[j + 1] = next;
            }
        }
        row[b.len()]
    }
    candidates.map(|c| (distance(name, c), c)).filter(|(d, _)| *d <= 3).min().map(|(_, c)| c)
}

/// A variable's or flag's text as a value of `key`'s type.
pub(crate) fn typed(key: &Key, text: &str) -> Result<Value, String> {
    scalar(key.kind, key.items, text)
}

fn scalar(kind: Kind, items: Option<Kind>, text: &str) -> Result<Value, String> {
    match kind {
        Kind::Integer => match text.parse::<u64>() {
            Ok(n) => Ok(n.into()),
            Err(_) => text.parse::<i64>().map(Value::from).map_err(|e| format!("expected an integer ({e})")),
        },
        Kind::Number => text.parse::<f64>().map(Value::from).map_err(|e| format!("expected a number ({e})")),
        Kind::Boolean => text.parse::<bool>().map(Value::from).map_err(|_| "expected true or false".to_owned()),
        Kind::String => Ok(text.into()),
        Kind::Array if text.is_empty() => Ok(Value::from(Vec::<Value>::new())),
        Kind::Array => {
            let item = items.unwrap_or(Kind::String);
            text.split(',').map(|t| scalar(item, None, t)).collect::<Result<Vec<_>, _>>().map(Value::from)
        }
    }
}

fn invalid(key: &Key, origin: &str, text: &str, reason: String) -> LoadError {
    let value = if key.secret { REDACTED.to_owned() } else { text.to_owned() };
    LoadError::Invalid { key: key.name.clone(), origin: origin.to_owned(), value, reason }
}

/// Names the layer and the key of the first error figment found.
fn extract_error(
    error: figment::Error,
    file: Option<&Path>,
    schema: &Schema,
    raw: &BTreeMap<String, (String, String)>,
) -> LoadError {
    let key = error.path.first().cloned().unwrap_or_default();
    let layer = error.metadata.as_ref().map(|m| m.name.to_string());
    let reason = error.kind.to_string();
    match (layer.as_deref(), file) {
        (Some(FILE), Some(path)) => {
            let message = match &error.kind {
                figment::error::Kind::UnknownField(found, expected) => {
                    let hint = closest(found, expected.iter().copied())
                        .map(|near| format!(" (did you mean `{near}`?)"))
                        .unwrap_or_default();
                    format!("unknown key `{found}`{hint}; --print-config lists the keys")
                }
                _ if key.is_empty() => reason,
                _ => format!("`{key}`: {reason}"),
            };
            LoadError::File { path: path.to_owned(), message }
        }
        _ => match (raw.get(&key), schema.get(&key)) {
            (Some((origin, text)), Some(k)) => invalid(k, origin, text, reason),
            _ => LoadError::Invalid { key, origin: layer.unwrap_or_default(), value: String::new(), reason },
        },
    }
}

const DEFAULTS: &str = "defaults";
const FILE: &str = "TOML file";
const ENVIRONMENT: &str = "environment";
const FLAGS: &str = "command-line flags";

/// One layer's values for figment, its metadata naming each key as that
/// layer spells it (`RWP_LISTEN`, `--listen`, `listen`).
struct Layer {
    origin: Origin,
    path: Option<PathBuf>,
    dict: Dict,
    names: Arc<BTreeMap<String, String>>,
}

impl Layer {
    fn new(origin: Origin, path: Option<&Path>, dict: Dict, schema: &Schema) -> Self {
        let names = schema
            .keys
            .iter()
            .map(|k| {
                let name = match origin {
                    Origin::Env => k.env.clone(),
                    Origin::Flag => k.flag.clone(),
                    Origin::Default | Origin::File => k.name.clone(),
                };
                (k.name.clone(), name)
            })
            .collect();
        Self { origin, path: path.map(Path::to_owned), dict, names: Arc::new(names) }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let name = match self.origin {
            Origin::Default => DEFAULTS,
            Origin::File => FILE,
            Origin::Env => ENVIRONMENT,
            Origin::Flag => FLAGS,
        };
        let names = Arc::clone(&self.names);
        let metadata = Metadata::named(name).interpolater(move |_: &Profile, keys: &[&str]| {
            keys.first().and_then(|k| names.get(*k)).cloned().unwrap_or_else(|| keys.join("."))
        });
        match &self.path {
            Some(path) => metadata.source(path.as_path()),
            None => metadata,
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}
