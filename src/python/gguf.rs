//! Python bindings of the GGUF reader: `GGUFFile`, `TensorInfo`, `dequantize`, `quantize`.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::IntoPy;
use crate::error::Error;
use crate::gguf::{quants, GgmlType, GgufFile, MetaValue};

/// One tensor's entry in a GGUF file.
#[pyclass(name = "TensorInfo", module = "rocmforge", frozen)]
#[derive(Clone)]
pub struct PyTensorInfo {
    /// Tensor name, e.g. "blk.0.attn_q.weight".
    #[pyo3(get)]
    name: String,
    shape: Vec<usize>,
    /// GGUF type name ("F32", "Q4_K", ...).
    #[pyo3(get)]
    dtype: String,
    /// Byte offset from the start of the file's data section.
    #[pyo3(get)]
    offset: u64,
    /// Bytes the tensor takes in the file.
    #[pyo3(get)]
    nbytes: u64,
    /// Number of elements (the product of `shape`).
    #[pyo3(get)]
    n_elements: u64,
}

/// `(4, 4)`, `(8,)`, `()`: a shape as Python writes a tuple.
fn tuple_repr(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[pymethods]
impl PyTensorInfo {
    /// Shape in NumPy order (ggml's `ne` reversed), a tuple: the last axis is contiguous.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.shape)
    }

    fn __repr__(&self) -> String {
        format!(
            "TensorInfo(name={:?}, shape={}, dtype={:?}, offset={}, nbytes={})",
            self.name,
            tuple_repr(&self.shape),
            self.dtype,
            self.offset,
            self.nbytes
        )
    }
}

/// A memory-mapped GGUF file: `GGUFFile(path)`. Also a context manager (`close()` on exit).
///
/// Raises `FileNotFoundError` / `IsADirectoryError` / `PermissionError` for bad paths and
/// `GGUFError` (naming the field and byte offset) for malformed contents.
#[pyclass(name = "GGUFFile", module = "rocmforge")]
pub struct PyGgufFile {
    inner: Option<Arc<GgufFile>>,
    path: PathBuf,
}

impl PyGgufFile {
    fn file(&self) -> PyResult<&Arc<GgufFile>> {
        self.inner.as_ref().ok_or_else(|| {
            super::to_pyerr(Error::runtime(format!(
                "GGUFFile {:?} is closed",
                self.path.display().to_string()
            )))
        })
    }
}

pub(crate) fn meta_to_py(py: Python<'_>, v: &MetaValue) -> PyResult<Py<PyAny>> {
    Ok(match v {
        MetaValue::U8(x) => x.into_pyobject(py)?.into_any().unbind(),
        MetaValue::I8(x) => x.into_pyobject(py)?.into_any().unbind(),
        MetaValue::U16(x) => x.into_pyobject(py)?.into_any().unbind(),
        MetaValue::I16(x) => x.into_pyobject(py)?.into_any().unbind(),
        MetaValue::U32(x) => x.into_pyobject(py)?.into_any().unbind(),
        MetaValue::I32(x) => x.into_pyobject(py)?.into_any().unbind(),
        MetaValue::U64(x) => x.into_pyobject(py)?.into_any().unbind(),
        MetaValue::I64(x) => x.into_pyobject(py)?.into_any().unbind(),
        MetaValue::F32(x) => x.into_pyobject(py)?.into_any().unbind(),
        MetaValue::F64(x) => x.into_pyobject(py)?.into_any().unbind(),
        MetaValue::Bool(x) => pyo3::types::PyBool::new(py, *x)
            .to_owned()
            .into_any()
            .unbind(),
        MetaValue::Str(s) => s.into_pyobject(py)?.into_any().unbind(),
        MetaValue::Array(items) => {
            let list = PyList::empty(py);
            for it in items {
                list.append(meta_to_py(py, it)?)?;
            }
            list.into_any().unbind()
        }
    })
}

#[pymethods]
impl PyGgufFile {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let p = path.clone();
        let file = py.detach(move || GgufFile::open(&p)).py()?;
        Ok(PyGgufFile {
            inner: Some(Arc::new(file)),
            path,
        })
    }

    /// GGUF format version (2 or 3).
    #[getter]
    fn version(&self) -> PyResult<u32> {
        Ok(self.file()?.version)
    }

    /// The file's path.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// Size of the file in bytes.
    #[getter]
    fn file_size(&self) -> PyResult<u64> {
        Ok(self.file()?.file_size())
    }

    /// Alignment of the data section (`general.alignment`, default 32).
    #[getter]
    fn alignment(&self) -> PyResult<u64> {
        Ok(self.file()?.alignment)
    }

    /// All metadata as a dict (file order): `bool | int | float | str | list` values.
    /// Each access builds a new dict, so changing it changes nothing else.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let file = self.file()?;
        let d = PyDict::new(py);
        for (k, v) in &file.metadata {
            d.set_item(k, meta_to_py(py, v)?)?;
        }
        Ok(d)
    }

    /// Tensor infos in file order.
    #[getter]
    fn tensors(&self) -> PyResult<Vec<PyTensorInfo>> {
        Ok(self
            .file()?
            .tensors
            .iter()
            .map(|t| PyTensorInfo {
                name: t.name.clone(),
                shape: t.shape(),
                dtype: t.ggml_type.name().to_string(),
                offset: t.offset,
                nbytes: t.nbytes,
                n_elements: t.n_elements,
            })
            .collect())
    }

    /// The tensor `name` dequantized to float32, in NumPy order.
    ///
    /// Raises `KeyError` for an unknown name and `UnsupportedError` for types rocmforge
    /// cannot dequantize (the IQ types but IQ4_NL and IQ4_XS, TQ*, MXFP4, ...).
    fn tensor<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let file = self.file()?.clone();
        let info = file
            .tensor_info(name)
            .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(name.to_string()))?
            .clone();
        if !info.ggml_type.can_dequantize() {
            return Err(super::to_pyerr(Error::unsupported(format!(
                "tensor {name:?} has type {}, which rocmforge cannot dequantize",
                info.ggml_type
            ))));
        }
        let n = info.n_elements as usize;
        let out = py
            .detach(|| -> crate::Result<Vec<f32>> {
                let mut out = vec![0f32; n];
                quants::dequantize(info.ggml_type, file.tensor_bytes(&info), &mut out).map_err(
                    |e| match e {
                        Error::Unsupported(m) => {
                            Error::Unsupported(format!("tensor {name:?}: {m}"))
                        }
                        other => other,
                    },
                )?;
                Ok(out)
            })
            .py()?;
        PyArray1::from_vec(py, out).reshape(info.shape())
    }

    /// The stored bytes of tensor `name`, shape (rows, bytes_per_row).
    fn raw<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
        let file = self.file()?;
        let info = file
            .tensor_info(name)
            .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(name.to_string()))?;
        let bytes = file.tensor_bytes(info).to_vec();
        PyArray1::from_vec(py, bytes).reshape(vec![info.n_rows(), info.row_bytes()])
    }

    /// Release the memory map. Using the file afterwards raises `RocmForgeError`; closing twice is fine.
    fn close(&mut self) {
        self.inner = None;
    }

    /// Whether `close()` has been called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_none()
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyResult<PyRef<'_, Self>> {
        slf.file()?;
        Ok(slf)
    }

    fn __exit__(
        &mut self,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        match &self.inner {
            None => format!("GGUFFile({:?}, closed)", self.path.display().to_string()),
            Some(f) => format!(
                "GGUFFile({:?}, version={}, architecture={:?}, tensors={}, metadata={}, size={} bytes)",
                self.path.display().to_string(),
                f.version,
                f.architecture().unwrap_or("?"),
                f.tensors.len(),
                f.metadata.len(),
                f.file_size()
            ),
        }
    }
}

fn parse_dtype(dtype: &str) -> PyResult<GgmlType> {
    GgmlType::from_name(dtype).py()
}

/// Dequantize GGUF blocks of `dtype` stored in `raw` (uint8) to float32.
///
/// `dtype`: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL,
/// IQ4_XS (bit for bit as `gguf.quants.dequantize`) or Q8_K (as ggml's `dequantize_row_q8_K`);
/// other types raise `UnsupportedError`.
///
/// `shape` gives the output shape (NumPy order); by default it is `raw.shape[:-1] +
/// (raw.shape[-1] // type_size * block_size,)` like `gguf.quants.dequantize`.
#[pyfunction]
#[pyo3(signature = (raw, dtype, shape=None))]
fn dequantize<'py>(
    py: Python<'py>,
    raw: PyReadonlyArrayDyn<'py, u8>,
    dtype: &str,
    shape: Option<Vec<usize>>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let ty = parse_dtype(dtype)?;
    let in_shape = raw.shape().to_vec();
    let bytes: Vec<u8> = raw.as_array().iter().copied().collect();
    let n = quants::elements_in(ty, bytes.len()).py()?;
    let shape = match shape {
        Some(s) => {
            let want: usize = s.iter().product();
            if want != n {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "shape {s:?} has {want} elements but raw holds {n} {ty} elements"
                )));
            }
            s
        }
        None => {
            let mut s = in_shape.clone();
            match s.last_mut() {
                Some(last) if *last % ty.type_size() == 0 => {
                    *last = *last / ty.type_size() * ty.block_size()
                }
                _ => {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!(
                        "raw's last axis ({:?}) is not a whole number of {ty} blocks ({} bytes)",
                        in_shape.last(),
                        ty.type_size()
                    )))
                }
            }
            s
        }
    };
    let out = py
        .detach(|| -> crate::Result<Vec<f32>> {
            let mut out = vec![0f32; n];
            quants::dequantize(ty, &bytes, &mut out)?;
            Ok(out)
        })
        .py()?;
    PyArray1::from_vec(py, out).reshape(shape)
}

/// Quantize float32 `x` to GGUF blocks of `dtype`; the last axis must be a whole number of
/// blocks. Returns uint8 of shape `x.shape[:-1] + (row_bytes,)` like `gguf.quants.quantize`.
#[pyfunction]
fn quantize<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    dtype: &str,
) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let ty = parse_dtype(dtype)?;
    let mut shape = x.shape().to_vec();
    let last = *shape.last().ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err("x must have at least one dimension")
    })?;
    if last % ty.block_size() != 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "x's last axis ({last}) is not a multiple of {ty}'s block size {}",
            ty.block_size()
        )));
    }
    let data: Vec<f32> = x.as_array().iter().copied().collect();
    let out = py.detach(|| quants::quantize(ty, &data)).py()?;
    *shape.last_mut().unwrap() = last / ty.block_size() * ty.type_size();
    PyArray1::from_vec(py, out).reshape(shape)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTensorInfo>()?;
    m.add_class::<PyGgufFile>()?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    Ok(())
}
