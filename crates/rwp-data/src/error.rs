/// What is wrong with a job's data: the split's field (`data.train`, ...),
/// the file or sample, and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// A location that names nothing, or cannot be listed or read.
    #[error("{field}: cannot read {path}: {reason}")]
    Unreadable { field: &'static str, path: String, reason: String },
    /// A location whose contents do not fit the dataset kind.
    #[error("{field}: {path} {problem}")]
    Invalid { field: &'static str, path: String, problem: String },
    /// The splits disagree on the classes.
    #[error("{field}: {problem}")]
    Classes { field: &'static str, problem: String },
    /// One sample that cannot be read or decoded.
    #[error("{field}: sample {sample} cannot be used: {reason}")]
    BadSample { field: &'static str, sample: String, reason: String },
    /// The storage cannot be reached (refused connections, time-outs,
    /// server errors): nothing is wrong with the data, and reading it again
    /// later may work.
    #[error("{field}: the storage of {path} cannot be reached: {reason}")]
    Unavailable { field: &'static str, path: String, reason: String },
    /// The data listed now is not the data the job was planned with.
    #[error(
        "the data changed since the job was submitted: it now lists {found}, the job was planned with {expected}; \
         submit the job again to train on the data as it is now"
    )]
    Changed { expected: String, found: String },
}

impl DataError {
    pub(crate) fn unreadable(field: &'static str, path: impl Into<String>, reason: impl ToString) -> Self {
        Self::Unreadable { field, path: path.into(), reason: reason.to_string() }
    }

    /// An I/O failure on `path`: the storage's ([`DataError::Unavailable`])
    /// or the file's.
    pub(crate) fn io(field: &'static str, path: impl Into<String>, e: &std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotConnected {
            Self::Unavailable { field, path: path.into(), reason: e.to_string() }
        } else {
            Self::unreadable(field, path, e)
        }
    }

    /// Whether the storage, not the data, is at fault: the read may work later.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub(crate) fn invalid(field: &'static str, path: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid { field, path: path.into(), problem: problem.into() }
    }
}
