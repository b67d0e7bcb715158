//! Thin PyO3 bindings: convert arguments, release the GIL, call Rust, map errors.
//! One file per area (`gguf.rs`, `ops.rs`, ...), each with a `register` function.

use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyKeyboardInterrupt, PyOSError, PyPermissionError,
    PyTypeError, PyValueError,
};
use pyo3::prelude::*;

use crate::error::Error;

mod gguf;
mod gpu;
mod model;
mod ops;
mod serve;
mod tokenizer;

/// Turn a crate error into the matching exception of `rocmforge.errors` (or a built-in one).
pub(crate) fn to_pyerr(err: Error) -> PyErr {
    let class = match &err {
        Error::Gguf(_) => "GGUFError",
        Error::Unsupported(_) => "UnsupportedError",
        Error::Device(_) => "DeviceError",
        Error::OutOfMemory { .. } => "OutOfMemoryError",
        Error::Runtime(_) => "RocmForgeError",
        Error::InvalidArgument(m) => return PyValueError::new_err(m.clone()),
        Error::InvalidType(m) => return PyTypeError::new_err(m.clone()),
        Error::Interrupted => return PyKeyboardInterrupt::new_err(()),
        Error::Io { path, source } => {
            let msg = (
                source.raw_os_error().unwrap_or(0),
                source.to_string(),
                path.clone(),
            );
            return match source.kind() {
                std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
                std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
                std::io::ErrorKind::IsADirectory => PyIsADirectoryError::new_err(msg),
                _ => PyOSError::new_err(msg),
            };
        }
    };
    let msg = err.to_string();
    Python::attach(
        |py| match py.import("rocmforge.errors").and_then(|m| m.getattr(class)) {
            Ok(cls) => match cls.call1((msg.clone(),)) {
                Ok(inst) => PyErr::from_value(inst),
                Err(e) => e,
            },
            Err(_) => pyo3::exceptions::PyRuntimeError::new_err(msg),
        },
    )
}

/// `Result` extension so bindings can write `rust_call().map_err(to_pyerr)?` as `.py()?`.
pub(crate) trait IntoPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for crate::error::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}

#[pymodule]
#[pyo3(name = "_rocmforge")]
fn rocmforge_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Import NumPy's C API now: done lazily at the first array returned, it would run Python
    // code at a moment when a pending Ctrl-C could break it.
    numpy::PyArray1::<f32>::zeros(m.py(), 0, false);
    gguf::register(m)?;
    model::register(m)?;
    ops::register(m)?;
    tokenizer::register(m)?;
    gpu::register(m)?;
    serve::register(m)?;
    Ok(())
}
