//! What a host and its sandbox say to each other over their socket: one
//! request, one answer, each a length-prefixed JSON frame; shared-memory
//! regions travel as file descriptors (`SCM_RIGHTS`) with a frame. Bulk
//! data (weights, batches, gradients, initial values) never goes through
//! the socket.
//!
//! The parent trusts nothing the child says: frames are bounded, and every
//! length the child reports is checked against the region it names.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use rwp_spec::eval::{BatchEval, EvalTask};
use rwp_spec::{JobSpec, Task};
use serde::{Deserialize, Serialize};

/// Largest frame either side accepts (a job spec is a few KiB).
const MAX_FRAME: usize = 1 << 20;

/// What the sandbox may do, fixed when it starts: given on its command
/// line as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Directories of shared libraries it may read (libtorch's, loaded lazily).
    pub library_dirs: Vec<std::path::PathBuf>,
    /// `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads (0: libtorch's default).
    pub threads: i32,
    /// Limit on its private writable memory (`RLIMIT_DATA`), bytes; 0: none.
    pub memory_bytes: u64,
    /// Limit on its CPU time (`RLIMIT_CPU`), seconds; 0: none.
    pub cpu_seconds: u64,
    /// The user and group to run as when started as root.
    pub run_as: Option<(u32, u32)>,
    /// Refuse to run where the kernel cannot enforce Landlock (true in
    /// production; tests of other machines may relax it).
    pub require_landlock: bool,
}

/// One evaluation batch's result, exact: floats travel as their bits so
/// that evaluations stay bit-identical through JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactBatch {
    pub loss_sum_bits: u64,
    pub correct_bits: u64,
    pub samples: u64,
}

impl From<BatchEval> for ExactBatch {
    fn from(b: BatchEval) -> Self {
        Self { loss_sum_bits: b.loss_sum.to_bits(), correct_bits: b.correct.to_bits(), samples: b.samples }
    }
}

impl From<ExactBatch> for BatchEval {
    fn from(b: ExactBatch) -> Self {
        Self { loss_sum: f64::from_bits(b.loss_sum_bits), correct: f64::from_bits(b.correct_bits), samples: b.samples }
    }
}

/// How many weights versions a sandbox holds at once (a worker's current
/// update and an older version it evaluates).
pub const WEIGHT_SLOTS: usize = 2;

/// Where one batch lies in the input region: `samples` inputs of the job's
/// input shape (float32) from byte `offset`, then their `samples` labels
/// (int64), both in this machine's byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAt {
    pub offset: u64,
    pub samples: u64,
}

/// A tensor's name and shape.
pub type NamedShape = (String, Vec<i64>);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// New shared regions come with this frame (input, then output).
    Regions { input: u64, output: u64 },
    /// Check the module (its file's `model_len` bytes are in the input
    /// region) and list its tensors (an upload).
    Inspect { model_len: u64 },
    /// Load the module (in the input region) for the job, checked against
    /// the input shape and classes of the job's data. The sandbox opens no
    /// data file: its host reads the batches and passes them in.
    OpenJob { spec: Box<JobSpec>, model_len: u64 },
    /// Write the job's initial weights version into the output region.
    InitialSnapshot,
    /// Install the weights version at the start of the input region into
    /// weights slot `slot` (when given), then compute `task` on `batch`
    /// with that slot's weights; the payload goes to the output region.
    Compute { task: Task, returns_buffers: bool, snapshot_len: Option<u64>, slot: usize, batch: BatchAt },
    /// The same for an evaluation shard's `batches`: per-batch results come back.
    Evaluate { task: EvalTask, snapshot_len: Option<u64>, slot: usize, batches: Vec<BatchAt> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    RegionsMapped,
    Inspected {
        params: Vec<NamedShape>,
        buffers: Vec<NamedShape>,
    },
    Opened {
        params: Vec<NamedShape>,
        buffers: Vec<NamedShape>,
        input: [i64; 3],
        classes: i64,
        train_samples: u64,
        /// Bytes of a weights version, and of the largest result payload.
        snapshot_bytes: u64,
        payload_bytes: u64,
    },
    Snapshot {
        len: u64,
    },
    Computed {
        payload_len: u64,
        gradient_bytes: u64,
        buffer_bytes: u64,
        loss_bits: u64,
        accuracy_bits: u64,
        compute_micros: u64,
    },
    Evaluated {
        batches: Vec<ExactBatch>,
        compute_micros: u64,
    },
    /// The request failed; `refused` when the module's code was refused.
    Failed {
        message: String,
        refused: bool,
    },
}

/// Sends one frame, with `fds` attached.
pub fn send<T: Serialize>(socket: &UnixStream, message: &T, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&u32::try_from(body.len()).map_err(io::Error::other)?.to_le_bytes());
    frame.extend_from_slice(&body);
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one frame"));
    }
    let mut sent = sendmsg(socket, &[IoSlice::new(&frame)], &mut control, SendFlags::NOSIGNAL)?;
    while sent < frame.len() {
        let n =
            sendmsg(socket, &[IoSlice::new(&frame[sent..])], &mut SendAncillaryBuffer::default(), SendFlags::NOSIGNAL)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        sent += n;
    }
    Ok(())
}

/// Receives one frame and the descriptors that came with it. Blocks up to
/// the socket's read timeout (`WouldBlock`/`TimedOut` then); end of stream
/// is `UnexpectedEof`.
pub fn recv<T: for<'de> Deserialize<'de>>(socket: &UnixStream) -> io::Result<(T, Vec<OwnedFd>)> {
    let mut fds = Vec::new();
    let mut header = [0u8; 4];
    fill(socket, &mut header, &mut fds)?;
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    fill(socket, &mut body, &mut fds)?;
    let message = serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((message, fds))
}

fn fill(socket: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = loop {
            match recvmsg(socket, &mut [IoSliceMut::new(&mut buf[filled..])], &mut control, RecvFlags::CMSG_CLOEXEC) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other?,
            }
        };
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if got.bytes == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += got.bytes;
    }
    Ok(())
}
