//! A job's own data, without libtorch: the dataset kinds `image-folder`,
//! `tar-shards` and `tensors` of [`rwp_spec::DataSource`].
//!
//! [`DataIndex::build`] lists a job's data into a sample index: for each
//! split (train, optional validation, test) the samples in a fixed order,
//! where each one's bytes are, and its label. The order depends only on
//! names (class folders and files sorted by name, shards in the order their
//! brace range counts, tar members in archive order, tensor rows in file
//! order), so every worker and the local trainer that list the same data
//! get the same index; its [`DataIndex::summary`] carries a digest of it,
//! which every reader checks ([`DataIndex::check`]) before it trains.
//!
//! Listing reads names, sizes, tar headers, `.cls` members and safetensors
//! headers and labels; it never decodes an image. Every problem found is a
//! [`DataError`] naming the split's field, the file and what is wrong.
//!
//! Whatever the data holds is untrusted: sizes, counts and labels are
//! bounded ([`limits`]) before anything is allocated from them.

pub mod cache;
mod error;
mod image_folder;
mod index;
pub mod inspect;
pub mod limits;
mod object;
mod storage;
mod tar_shards;
mod tensors;

pub use error::DataError;
pub use index::{DataIndex, Split, SplitIndex, TensorDtype};
