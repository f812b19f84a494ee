//! The test each service runs on its settings struct: every key can be set
//! from every layer, and a higher layer wins.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::{load, Env, Flags, Key, Kind, Schema, Settings, PROJECT_VARIABLES};

/// For every key of `T`'s serialised default (`serde_json::to_value`), and
/// for each layer (TOML file, environment variable, flag), sets a value
/// other than the default and checks that it, and only it, arrives in the
/// merged configuration; then that the environment beats the file and a
/// flag beats both. The value is the key's first `#[schemars(example =
/// ...)]` that differs from the default, else one made from the default
/// (an integer plus one, the other boolean, a string with `-x` appended,
/// ...). Also: the schema's keys are the serialised default's, variables
/// and flags are unique, and every variable is in [`PROJECT_VARIABLES`].
/// Returns the number of keys checked, or every problem found.
pub fn every_key_settable<T: Settings>() -> Result<usize, String> {
    let schema = Schema::of::<T>();
    let defaults = to_json(&T::default());
    let mut problems = Vec::new();

    let serialised: BTreeSet<&String> = defaults.as_object().map(|m| m.keys().collect()).unwrap_or_default();
    let described: BTreeSet<&String> = schema.keys.iter().map(|k| &k.name).collect();
    if serialised != described {
        problems.push(format!("the schema's keys {described:?} are not the serialised default's {serialised:?}"));
    }
    for (what, names) in [
        ("variable", schema.keys.iter().map(|k| &k.env).collect::<Vec<_>>()),
        ("flag", schema.keys.iter().map(|k| &k.flag).collect()),
    ] {
        let unique: BTreeSet<_> = names.iter().collect();
        if unique.len() != names.len() {
            problems.push(format!("two keys share a {what}: {names:?}"));
        }
    }
    for key in &schema.keys {
        if !PROJECT_VARIABLES.contains(&key.env.as_str()) {
            problems.push(format!("{}: add its variable {} to rwp_config::PROJECT_VARIABLES", key.name, key.env));
        }
    }

    for key in &schema.keys {
        if let Err(problem) = check_key::<T>(key, &defaults) {
            problems.push(format!("{}: {problem}", key.name));
        }
    }
    if problems.is_empty() {
        Ok(schema.keys.len())
    } else {
        Err(problems.join("\n"))
    }
}

/// [`every_key_settable`], panicking with every problem: a service's test.
pub fn assert_every_key_settable<T: Settings>() {
    if let Err(problems) = every_key_settable::<T>() {
        panic!("{} cannot be set from every layer:\n{problems}", std::any::type_name::<T>());
    }
}

/// Checks that the section `## {heading}` of the Markdown text `docs` names
/// every key of `T` and its variable, each in backquotes; panics naming
/// what is missing.
pub fn assert_documented<T: Settings>(docs: &str, heading: &str) {
    let section = docs
        .split(&format!("\n## {heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no section `## {heading}`"))
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let missing: Vec<String> = Schema::of::<T>()
        .keys
        .iter()
        .flat_map(|k| [format!("`{}`", k.name), format!("`{}`", k.env)])
        .filter(|word| !section.contains(word.as_str()))
        .collect();
    assert!(missing.is_empty(), "the section `## {heading}` does not name {}", missing.join(", "));
}

/// What one layer sets: nothing, or a value of the key.
struct Set<'a> {
    file: Option<&'a Value>,
    env: Option<&'a Value>,
    flag: Option<&'a Value>,
}

fn check_key<T: Settings>(key: &Key, defaults: &Value) -> Result<(), String> {
    let default = defaults.get(&key.name).cloned().unwrap_or(Value::Null);
    let candidates = key.examples.iter().cloned().chain(made_up(key, &default)).filter(|v| *v != default);
    // The first candidate the file layer takes: an example, else a made-up value.
    let mut tried = Vec::new();
    let mut value = None;
    for candidate in candidates {
        let only_file = Set { file: Some(&candidate), env: None, flag: None };
        if merged::<T>(key, &only_file).ok().and_then(|c| c.get(&key.name).cloned()) == Some(candidate.clone()) {
            value = Some(candidate);
            break;
        }
        tried.push(candidate);
    }
    let Some(value) = value else {
        return Err(format!(
            "no value other than the default {default} could be set from a TOML file (tried {tried:?}): \
             give the field a #[schemars(example = ...)]"
        ));
    };

    // Each layer alone sets it, and nothing else.
    let mut expected = defaults.clone();
    expected[&key.name] = value.clone();
    for (layer, set) in [
        ("a TOML file", Set { file: Some(&value), env: None, flag: None }),
        (key.env.as_str(), Set { file: None, env: Some(&value), flag: None }),
        (key.flag.as_str(), Set { file: None, env: None, flag: Some(&value) }),
    ] {
        let got = merged::<T>(key, &set)?;
        if got != expected {
            return Err(format!(
                "set to {value} from {layer}, the merged configuration is {got} instead of {expected}"
            ));
        }
    }

    // A higher layer wins: the default's value given again above `value`
    // (a null default cannot be given in a variable or a flag).
    if !default.is_null() {
        for (what, set) in [
            ("the environment over the file", Set { file: Some(&value), env: Some(&default), flag: None }),
            ("a flag over the environment", Set { file: None, env: Some(&value), flag: Some(&default) }),
            ("a flag over the file", Set { file: Some(&value), env: None, flag: Some(&default) }),
        ] {
            let got = merged::<T>(key, &set)?;
            if got.get(&key.name) != Some(&default) {
                return Err(format!("{what} does not win: got {got}"));
            }
        }
    }
    Ok(())
}

/// Values of `key`'s type other than `default`.
fn made_up(key: &Key, default: &Value) -> Vec<Value> {
    let scalar = |kind: Kind, default: &Value| -> Value {
        match kind {
            Kind::Integer => Value::from(default.as_u64().map_or(1, |n| n + 1)),
            Kind::Number => Value::from(default.as_f64().map_or(1.5, |n| n + 1.5)),
            Kind::Boolean => Value::from(!default.as_bool().unwrap_or(false)),
            Kind::String => Value::from(default.as_str().map_or_else(|| "x".to_owned(), |s| format!("{s}-x"))),
            Kind::Array => Value::Null,
        }
    };
    match key.kind {
        Kind::Array => {
            let item = key.items.unwrap_or(Kind::String);
            let first = match item {
                Kind::String => Value::from("/x"),
                other => scalar(other, &Value::Null),
            };
            vec![Value::Array(vec![first.clone()]), Value::Array(vec![first.clone(), first])]
        }
        kind => vec![scalar(kind, default)],
    }
}

/// The merged configuration, as JSON, with `key` set in the layers `set`
/// names.
fn merged<T: Settings>(key: &Key, set: &Set<'_>) -> Result<Value, String> {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let file = match set.file {
        Some(value) => {
            let value = toml::Value::try_from(value).map_err(|e| format!("{value} is not TOML: {e}"))?;
            let n = FILES.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("rwp-config-check-{}-{n}.toml", std::process::id()));
            std::fs::write(&path, format!("{} = {value}\n", key.name)).map_err(|e| e.to_string())?;
            Some(path)
        }
        None => None,
    };
    let variables: Vec<(String, String)> = set.env.map(|v| (key.env.clone(), key.render(v))).into_iter().collect();
    let rendered = set.flag.map(|v| key.render(v));
    let args: Vec<&str> = match &rendered {
        Some(text) => vec![key.flag.as_str(), text.as_str()],
        None => Vec::new(),
    };
    let flags = Flags::<T>::parse(&args).map_err(|e| format!("{args:?}: {e}"))?;
    let loaded = load(file.as_deref().map(Path::new), &Env::All(variables), &flags).map_err(|e| e.to_string());
    if let Some(path) = file {
        let _ = std::fs::remove_file(path);
    }
    Ok(to_json(&loaded?.config))
}

fn to_json<T: serde::Serialize>(config: &T) -> Value {
    serde_json::to_value(config).expect("a settings struct serialises to JSON")
}
