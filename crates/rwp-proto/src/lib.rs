//! The gRPC contract of the RWP training service (`proto/rwp/v1`), generated
//! with protox + tonic-prost-build, and the one mapping between its messages
//! and the domain types of [`rwp_spec`]: a `From` and a `TryFrom` per message
//! (`convert/`), used alike by the parameter server, the gradient worker and
//! the SDK.
//!
//! Features: `client` (default) generates client stubs only, as the SDK and
//! CLI need; `server` adds the service traits for the parameter server.

mod convert;

pub use convert::{
    dataset_from_wire, encoding_from_wire, job_state_from_wire, method_from_wire, model_from_wire,
    param_value_from_wire, role_from_wire, sweep_state_from_wire, ConversionError,
};

/// Version 1 of the contract.
#[allow(clippy::all, missing_debug_implementations, missing_docs)]
pub mod v1 {
    tonic::include_proto!("rwp.v1");

    /// Encoded `FileDescriptorSet` of the package, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rwp_v1_descriptor");
}
