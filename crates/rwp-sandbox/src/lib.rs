//! Untrusted model code, contained.
//!
//! A TorchScript module uploaded by a user is code: loading it runs its
//! `__setstate__`, training it runs its `forward`. Neither the parameter
//! server nor a worker runs it in its own process. Instead a [`ModelHost`]
//! starts the `rwp-sandbox` program for one model file, and that process:
//!
//! - confines itself before it reads the file ([`confine`]): an unprivileged
//!   user, `no_new_privs`, Landlock (read-only access to system libraries
//!   only; no writes anywhere; no TCP), seccomp
//!   (no sockets, processes, tracing or kernel interfaces beyond computing),
//!   and limits on memory and CPU time;
//! - refuses a module that calls anything outside the op [`allowlist`] in
//!   any of its functions, `__setstate__` included, naming the op and the
//!   function;
//! - answers requests (inspect an upload, open a job, compute a task,
//!   evaluate a version) over a socket, with the model file, weights,
//!   batches and gradients passed through shared memory ([`shm`]) rather
//!   than copied through the socket. The sandbox reads no data: its host
//!   loads each batch (from disk or object storage) and passes it in.
//!
//! The host bounds every request by a timeout and kills the sandbox when it
//! runs over, when its job is cancelled or when the parent shuts down
//! ([`Killer`]). See docs/security.md for the threat model.

pub mod allowlist;
mod child;
pub mod confine;
mod host;
pub mod protocol;
pub mod shm;

pub use child::main as sandbox_main;
pub use host::{parse_user, Computed, Grants, Killer, ModelHost, OpenedJob, SandboxConfig, SandboxError, DEFAULT_USER};
pub use protocol::WEIGHT_SLOTS;

/// The message of a caught panic (model code that panicked in libtorch's
/// bindings, say), for an error report.
#[must_use]
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".to_owned())
}
