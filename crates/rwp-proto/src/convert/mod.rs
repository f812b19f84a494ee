//! Conversions between wire messages and domain types, one `From` (domain to
//! wire) and one `TryFrom` (wire to domain) per message, so that the server,
//! the worker and the SDK share a single mapping:
//!
//! - [`spec`]: job specs, their enums and schedules, sweep specs;
//! - [`jobs`]: what the job API reports: jobs, their events, metrics and
//!   evaluations, sweeps and their trials, stored model files;
//! - [`worker`]: what the worker API carries: leased tasks, push headers
//!   and the messages of a push stream.
//!
//! A message that does not describe a valid domain value is refused with a
//! [`ConversionError`] naming the field. Enum fields are plain `i32`s on the
//! wire, so their decoders are functions that take the field's value
//! (`method_from_wire`, ...), named in the error.

mod jobs;
mod spec;
mod worker;

pub use jobs::{job_state_from_wire, sweep_state_from_wire};
pub use spec::{dataset_from_wire, encoding_from_wire, method_from_wire, model_from_wire, param_value_from_wire};
pub use worker::role_from_wire;

/// A message field that has no domain meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConversionError {
    pub field: &'static str,
    pub reason: String,
}

fn missing(field: &'static str) -> ConversionError {
    ConversionError { field, reason: "must be set".to_owned() }
}

fn unknown(field: &'static str, value: i32) -> ConversionError {
    ConversionError { field, reason: format!("unknown value {value}") }
}
