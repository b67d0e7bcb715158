//! The one error type of the crate. Every failure anywhere in rocmforge is a variant here;
//! the Python layer maps each variant to one exception class of `rocmforge.errors`.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A malformed GGUF file (or malformed model metadata): names the field and byte offset.
    #[error("{0}")]
    Gguf(String),
    /// A valid file or request we cannot run (an architecture, a quant type).
    #[error("{0}")]
    Unsupported(String),
    /// A GPU runtime failure: names the op and the runtime call.
    #[error("{0}")]
    Device(String),
    /// Device memory exhausted: says needed vs free.
    #[error("out of device memory in {what}: needed {needed} bytes, {free} bytes free")]
    OutOfMemory {
        what: String,
        needed: u64,
        free: u64,
    },
    /// A bad argument value (Python `ValueError`).
    #[error("{0}")]
    InvalidArgument(String),
    /// A bad argument type or dtype (Python `TypeError`).
    #[error("{0}")]
    InvalidType(String),
    /// Any other runtime failure that is not the caller's fault (NaN logits, use after close...).
    #[error("{0}")]
    Runtime(String),
    /// The user interrupted a long call (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
    /// Operating-system I/O errors keep their kind (not found, permission, is a directory).
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn gguf(msg: impl Into<String>) -> Self {
        Error::Gguf(msg.into())
    }
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Error::Unsupported(msg.into())
    }
    pub fn device(msg: impl Into<String>) -> Self {
        Error::Device(msg.into())
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
    pub fn invalid_type(msg: impl Into<String>) -> Self {
        Error::InvalidType(msg.into())
    }
    pub fn runtime(msg: impl Into<String>) -> Self {
        Error::Runtime(msg.into())
    }
}
