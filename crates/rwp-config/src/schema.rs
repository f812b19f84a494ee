//! The keys of a settings struct, read from its JSON schema and its default.

use serde::Serialize;
use serde_json::Value;

use crate::{Settings, REDACTED};

/// The JSON type of a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Integer,
    Number,
    Boolean,
    String,
    Array,
}

impl Kind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "integer" => Kind::Integer,
            "number" => Kind::Number,
            "boolean" => Kind::Boolean,
            "string" => Kind::String,
            "array" => Kind::Array,
            _ => return None,
        })
    }
}

/// One setting: everything `--print-config` says about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Key {
    /// The key, as in the TOML file: the struct's field name.
    #[serde(skip)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The type of a list's items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Kind>,
    /// Whether the key may be unset (`null`): an `Option` field.
    pub nullable: bool,
    /// The value when no layer sets it (`"<redacted>"` for a secret).
    pub default: Value,
    /// The environment variable.
    pub env: String,
    /// The command-line flag.
    pub flag: String,
    /// The field's doc comment.
    pub doc: String,
    /// Whether the value is shown redacted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
    /// Example values, from `#[schemars(example = ...)]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Value>,
}

impl Key {
    /// How the value `value` of this key is written in a variable or after
    /// its flag: lists comma-separated.
    #[must_use]
    pub fn render(&self, value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            Value::Array(items) => items.iter().map(|v| self.render(v)).collect::<Vec<_>>().join(","),
            other => other.to_string(),
        }
    }

    /// `value`, or `"<redacted>"` for a secret that is set.
    #[must_use]
    pub fn shown(&self, value: &Value) -> Value {
        if self.secret && !value.is_null() {
            Value::String(REDACTED.to_owned())
        } else {
            value.clone()
        }
    }
}

/// The settings of one struct, ordered by key.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub keys: Vec<Key>,
}

impl Schema {
    /// Reads the keys of `T` from its JSON schema, with `T::default()`'s
    /// values. Panics on a field type the layers cannot carry (anything but
    /// scalars and lists of scalars, optional or not): a bug that every
    /// test of the service meets at once.
    #[must_use]
    pub fn of<T: Settings>() -> Self {
        let schema = schemars::schema_for!(T);
        let defaults = serde_json::to_value(T::default()).expect("a settings struct serialises to JSON");
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("rwp-config: {} is not a struct with named fields", std::any::type_name::<T>()));
        let keys = properties
            .iter()
            .map(|(name, property)| {
                let (kind, nullable) = kind_of(property).unwrap_or_else(|| {
                    panic!("rwp-config: setting `{name}` has a type the layers cannot carry: {property}")
                });
                let items = match kind {
                    Kind::Array => Some(
                        property
                            .get("items")
                            .and_then(kind_of)
                            .filter(|(k, nullable)| *k != Kind::Array && !nullable)
                            .map(|(k, _)| k)
                            .unwrap_or_else(|| panic!("rwp-config: setting `{name}` must be a list of scalars")),
                    ),
                    _ => None,
                };
                let text = |field: &str| property.get(field).and_then(Value::as_str).map(str::to_owned);
                let secret = property.get("x-secret").and_then(Value::as_bool).unwrap_or(false);
                let mut key = Key {
                    name: name.clone(),
                    kind,
                    items,
                    nullable,
                    default: Value::Null,
                    env: text("x-env").unwrap_or_else(|| format!("RWP_{}", name.to_uppercase())),
                    flag: format!("--{}", name.replace('_', "-")),
                    doc: paragraphs(&text("description").unwrap_or_default()).join("\n\n"),
                    secret,
                    examples: property.get("examples").and_then(Value::as_array).cloned().unwrap_or_default(),
                };
                key.default = key.shown(defaults.get(name).unwrap_or(&Value::Null));
                key
            })
            .collect();
        Self { keys }
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// The key whose environment variable is `variable`.
    #[must_use]
    pub fn by_env(&self, variable: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.env == variable)
    }
}

/// The type of a property and whether it may be null: `{"type": "integer"}`
/// or `{"type": ["string", "null"]}`.
fn kind_of(property: &Value) -> Option<(Kind, bool)> {
    match property.get("type")? {
        Value::String(t) => Some((Kind::parse(t)?, false)),
        Value::Array(types) => {
            let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            let nullable = names.contains(&"null");
            match names.iter().filter(|t| **t != "null").collect::<Vec<_>>().as_slice() {
                [one] => Some((Kind::parse(one)?, nullable)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A doc comment as one line per paragraph (doc comments wrap at 80-odd
/// columns; help and JSON readers wrap themselves).
#[must_use]
pub(crate) fn paragraphs(doc: &str) -> Vec<String> {
    doc.split("\n\n").map(|p| p.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|p| !p.is_empty()).collect()
}
