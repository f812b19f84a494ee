//! The command-line layer: one flag per key, made from the schema.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use crate::load::typed;
use crate::schema::paragraphs;
use crate::{Key, Kind, Schema, Settings};

/// The settings given as command-line flags (`--lease-timeout-ms 500`), as
/// given: typed when the layers are merged. Flatten it into the binary's
/// parser (`#[command(flatten)] settings: Flags<MyConfig>`); a key not
/// given keeps the value of the lower layers.
pub struct Flags<T> {
    values: BTreeMap<String, String>,
    settings: PhantomData<fn() -> T>,
}

impl<T> Flags<T> {
    /// The text given for `key`, if its flag was given.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The keys given, with their text.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<T: Settings> Flags<T> {
    /// Parses `args`, flags only (no program name), as the binary would.
    pub fn parse(args: &[&str]) -> Result<Self, clap::Error> {
        let command = Self::augment_args(Command::new("flags").no_binary_name(true));
        Self::from_arg_matches(&command.try_get_matches_from(args)?)
    }
}

impl<T> Default for Flags<T> {
    fn default() -> Self {
        Self { values: BTreeMap::new(), settings: PhantomData }
    }
}

impl<T> Clone for Flags<T> {
    fn clone(&self) -> Self {
        Self { values: self.values.clone(), settings: PhantomData }
    }
}

impl<T> PartialEq for Flags<T> {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl<T> Eq for Flags<T> {}

impl<T> fmt::Debug for Flags<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The values may hold a secret (a token): show the keys only.
        f.debug_struct("Flags").field("given", &self.values.keys().collect::<Vec<_>>()).finish()
    }
}

impl<T: Settings> FromArgMatches for Flags<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for key in Schema::of::<T>().keys {
            if let Ok(Some(value)) = matches.try_get_one::<String>(&key.name) {
                self.values.insert(key.name, value.clone());
            }
        }
        Ok(())
    }
}

impl<T: Settings> Args for Flags<T> {
    fn augment_args(mut command: Command) -> Command {
        for key in Schema::of::<T>().keys {
            command = command.arg(arg(key));
        }
        command
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

fn arg(key: Key) -> Arg {
    let docs = paragraphs(&key.doc);
    let mut notes = format!("[env: {}]", key.env);
    if !key.default.is_null() {
        notes.push_str(&format!(" [default: {}]", key.render(&key.default)));
    }
    let help = format!("{} {notes}", docs.first().map_or("", String::as_str));
    let long_help = format!("{}\n\n{notes}", docs.join("\n\n"));
    let numeric = matches!(key.kind, Kind::Integer | Kind::Number);
    let value_name = value_name(&key);
    let parser = move |text: &str| typed(&key, text).map(|_| text.to_owned());
    Arg::new(value_name.0)
        .long(value_name.1)
        .value_name(value_name.2)
        .action(ArgAction::Set)
        .allow_negative_numbers(numeric)
        .value_parser(parser)
        .help(help)
        .long_help(long_help)
}

/// The argument's id (the key), its long name and its value's name in help.
fn value_name(key: &Key) -> (String, String, &'static str) {
    let name = match (key.kind, key.items) {
        _ if key.name.ends_with("_ms") => "MS",
        _ if key.name.ends_with("_bytes") => "BYTES",
        (Kind::Integer, _) => "N",
        (Kind::Number, _) => "NUMBER",
        (Kind::Boolean, _) => "BOOL",
        (Kind::Array, _) => "VALUE,...",
        (Kind::String, _) => "VALUE",
    };
    (key.name.clone(), key.flag.trim_start_matches("--").to_owned(), name)
}
