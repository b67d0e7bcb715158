//! Python bindings of the atomic ops, exposed as `rocmforge.ops` (`python/rocmforge/ops.py`
//! re-exports the native submodule `rocmforge._rocmforge.ops`).
//!
//! Each function checks its arguments (TypeError for a wrong type or dtype, ValueError for a
//! wrong rank, an empty array or shapes that disagree, always naming the argument), takes a
//! C-contiguous view of each array (copying Fortran-order, strided or misaligned ones), then
//! releases the GIL while `crate::ops` computes.

use half::f16;
use numpy::{
    PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::IntoPy;
use crate::device::{resolve_device, Device};
use crate::gguf::GgmlType;
use crate::ops::activation::Activation;
use crate::ops::rope::RopeParams;
use crate::ops::{self, attention::AttentionShape, WeightView};

// ---------------------------------------------------------------------------------------------
// Argument conversion

/// A float32 argument: its shape and its elements in C order (borrowed from NumPy when the
/// array already is C-contiguous and aligned, else a copy).
struct Floats<'py> {
    shape: Vec<usize>,
    array: PyReadonlyArrayDyn<'py, f32>,
}

impl Floats<'_> {
    fn data(&self) -> &[f32] {
        self.array
            .as_slice()
            .expect("made C-contiguous on extraction")
    }
    fn rank(&self) -> usize {
        self.shape.len()
    }
    /// The shape as Python prints it: `(2, 3)`.
    fn shape_str(&self) -> String {
        shape_str(&self.shape)
    }
}

fn shape_str(shape: &[usize]) -> String {
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

fn type_error(op: &str, msg: String) -> PyErr {
    PyTypeError::new_err(format!("{op}: {msg}"))
}

fn value_error(op: &str, msg: String) -> PyErr {
    PyValueError::new_err(format!("{op}: {msg}"))
}

/// `obj` as a NumPy array, or TypeError naming the argument and what was expected.
fn ndarray<'py>(
    op: &str,
    name: &str,
    obj: &Bound<'py, PyAny>,
    expected: &str,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    obj.cast::<PyUntypedArray>().cloned().map_err(|_| {
        let type_name = obj
            .get_type()
            .fully_qualified_name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        type_error(
            op,
            format!("{name} must be a numpy.ndarray of {expected}, got {type_name}"),
        )
    })
}

/// A copy in C order if `arr` is not C-contiguous and aligned (Fortran order, slices with
/// steps, transposes, misaligned buffers), else `arr` itself.
fn c_contiguous<'py>(arr: Bound<'py, PyUntypedArray>) -> PyResult<Bound<'py, PyUntypedArray>> {
    let aligned: bool = arr.getattr("flags")?.getattr("aligned")?.extract()?;
    if arr.is_c_contiguous() && aligned {
        return Ok(arr);
    }
    Ok(arr
        .call_method1("copy", ("C",))?
        .cast_into::<PyUntypedArray>()?)
}

/// A non-empty float32 array argument.
fn floats<'py>(op: &str, name: &str, obj: &Bound<'py, PyAny>) -> PyResult<Floats<'py>> {
    let arr = ndarray(op, name, obj, "float32")?;
    let dtype = arr.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<f32>(obj.py())) {
        return Err(type_error(
            op,
            format!("{name} must have dtype float32, got {dtype}"),
        ));
    }
    let shape = arr.shape().to_vec();
    if shape.contains(&0) {
        return Err(value_error(
            op,
            format!("{name} is empty (shape {})", shape_str(&shape)),
        ));
    }
    let arr = c_contiguous(arr)?;
    let array = arr
        .cast::<PyArrayDyn<f32>>()?
        .try_readonly()
        .map_err(|e| value_error(op, format!("{name} cannot be read: {e}")))?;
    Ok(Floats { shape, array })
}

/// A non-empty integer array argument (any integer dtype, or a sequence of ints) as i64.
fn integers(op: &str, name: &str, obj: &Bound<'_, PyAny>) -> PyResult<(Vec<usize>, Vec<i64>)> {
    let np = obj.py().import("numpy")?;
    let arr = np.call_method1("asarray", (obj,))?;
    let arr = ndarray(op, name, &arr, "integers")?;
    let kind = arr.dtype().kind();
    if kind != b'i' && kind != b'u' {
        return Err(type_error(
            op,
            format!("{name} must be an integer array, got dtype {}", arr.dtype()),
        ));
    }
    let shape = arr.shape().to_vec();
    if shape.contains(&0) {
        return Err(value_error(
            op,
            format!("{name} is empty (shape {})", shape_str(&shape)),
        ));
    }
    let as_i64 = arr.call_method1("astype", ("int64",))?;
    let as_i64 = as_i64.cast::<PyArrayDyn<i64>>()?.readonly();
    let values = as_i64.as_array().iter().copied().collect();
    Ok((shape, values))
}

/// ValueError unless `x` has `rank` dimensions (`layout` names them, e.g. "[batch, seq, heads, head_dim]").
fn expect_rank(op: &str, name: &str, x: &Floats, rank: usize, layout: &str) -> PyResult<()> {
    if x.rank() != rank {
        return Err(value_error(
            op,
            format!(
                "{name} must be {rank}-D {layout}, got shape {}",
                x.shape_str()
            ),
        ));
    }
    Ok(())
}

/// ValueError unless `x` has at least `rank` dimensions.
fn expect_min_rank(op: &str, name: &str, x: &Floats, rank: usize, layout: &str) -> PyResult<()> {
    if x.rank() < rank {
        return Err(value_error(
            op,
            format!(
                "{name} must have at least {rank} dimension(s) {layout}, got shape {}",
                x.shape_str()
            ),
        ));
    }
    Ok(())
}

/// An output buffer of `n` floats, or MemoryError if the host cannot hold it. Only reserved
/// here (cheap, GIL held); it is zero-filled by `filled` once the GIL is released.
fn reserve_output(op: &str, dims: &[usize]) -> PyResult<Vec<f32>> {
    let n = ops::product(op, "the output", dims).py()?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        PyMemoryError::new_err(format!(
            "{op}: cannot allocate the output of shape {} ({} bytes)",
            shape_str(dims),
            n as u128 * 4
        ))
    })?;
    Ok(v)
}

/// `v` resized to its capacity with zeros.
fn filled(mut v: Vec<f32>) -> Vec<f32> {
    v.resize(v.capacity(), 0.0);
    v
}

fn to_numpy<'py>(
    py: Python<'py>,
    data: Vec<f32>,
    shape: Vec<usize>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    PyArray1::from_vec(py, data).reshape(shape)
}

fn device(name: &str) -> PyResult<Device> {
    resolve_device(name).py()
}

/// `1 / sqrt(head_dim)` unless given; must be finite.
fn attention_scale(op: &str, scale: Option<f64>, head_dim: usize) -> PyResult<f32> {
    let s = scale.unwrap_or(1.0 / (head_dim as f64).sqrt());
    if !s.is_finite() {
        return Err(value_error(op, format!("scale must be finite, got {s}")));
    }
    Ok(s as f32)
}

/// Shape of attention from q `[batch, seq_q, heads, head_dim]` and k or v
/// `[batch, seq_k, kv_heads, head_dim]`, with their agreement checked.
fn attention_shape(
    op: &str,
    q: &Floats,
    q_name: &str,
    kv: &Floats,
    kv_name: &str,
) -> PyResult<AttentionShape> {
    expect_rank(op, q_name, q, 4, "[batch, seq_q, heads, head_dim]")?;
    expect_rank(op, kv_name, kv, 4, "[batch, seq_k, kv_heads, head_dim]")?;
    let (qs, ks) = (&q.shape, &kv.shape);
    if qs[0] != ks[0] {
        return Err(value_error(
            op,
            format!(
                "{q_name} has batch {} but {kv_name} has batch {} ({q_name} {}, {kv_name} {})",
                qs[0],
                ks[0],
                q.shape_str(),
                kv.shape_str()
            ),
        ));
    }
    if qs[3] != ks[3] {
        return Err(value_error(
            op,
            format!(
                "{q_name} has head_dim {} but {kv_name} has head_dim {}",
                qs[3], ks[3]
            ),
        ));
    }
    if qs[2] % ks[2] != 0 {
        return Err(value_error(
            op,
            format!(
                "{q_name} has {} heads, not a multiple of {kv_name}'s {} kv_heads (GQA needs kv_heads to divide heads)",
                qs[2], ks[2]
            ),
        ));
    }
    Ok(AttentionShape {
        batch: qs[0],
        seq_q: qs[1],
        seq_k: ks[1],
        heads: qs[2],
        kv_heads: ks[2],
        head_dim: qs[3],
    })
}

/// A weight matrix `[n, k]` for `matmul`/`embedding`: float32 `[n, k]`, or uint8 GGUF blocks
/// `[n, row_bytes]` of `dtype`. Returns (type, rows, cols, little-endian bytes).
fn gguf_matrix(
    op: &str,
    name: &str,
    obj: &Bound<'_, PyAny>,
    dtype: &str,
) -> PyResult<(GgmlType, usize, usize, Vec<u8>)> {
    let ty = GgmlType::from_name(dtype).py()?;
    let arr = ndarray(op, name, obj, "float32 (dtype='F32') or uint8 GGUF blocks")?;
    let arr_dtype = arr.dtype();
    if arr.ndim() != 2 {
        return Err(value_error(
            op,
            format!("{name} must be 2-D, got shape {}", shape_str(arr.shape())),
        ));
    }
    if arr.shape().contains(&0) {
        return Err(value_error(
            op,
            format!("{name} is empty (shape {})", shape_str(arr.shape())),
        ));
    }
    let (rows, last) = (arr.shape()[0], arr.shape()[1]);
    if arr_dtype.is_equiv_to(&numpy::dtype::<f32>(obj.py())) {
        if ty != GgmlType::F32 {
            return Err(type_error(
                op,
                format!("{name} is float32 but dtype={dtype:?}: quantized weights are uint8 arrays of GGUF blocks"),
            ));
        }
        let w = floats(op, name, obj)?;
        let bytes = w.data().iter().flat_map(|v| v.to_le_bytes()).collect();
        return Ok((ty, rows, last, bytes));
    }
    if !arr_dtype.is_equiv_to(&numpy::dtype::<u8>(obj.py())) {
        return Err(type_error(
            op,
            format!("{name} must have dtype float32 or uint8 (GGUF blocks), got {arr_dtype}"),
        ));
    }
    if last % ty.type_size() != 0 {
        return Err(value_error(
            op,
            format!(
                "{name} rows hold {last} bytes, not a whole number of {ty} blocks ({} bytes each)",
                ty.type_size()
            ),
        ));
    }
    let cols = last / ty.type_size() * ty.block_size();
    let arr = c_contiguous(arr)?;
    let bytes = arr
        .cast::<PyArrayDyn<u8>>()?
        .readonly()
        .as_slice()
        .expect("C-contiguous")
        .to_vec();
    Ok((ty, rows, cols, bytes))
}

// ---------------------------------------------------------------------------------------------
// Attention

/// Attention scores: `scores[b, h, i, j] = (q[b, i, h, :] . k[b, j, h // (heads // kv_heads), :]) * scale`.
///
/// q: float32 `[batch, seq_q, heads, head_dim]`; k: float32 `[batch, seq_k, kv_heads, head_dim]`
/// with `heads % kv_heads == 0` (GQA: each kv head serves `heads // kv_heads` query heads).
/// scale: default `1 / sqrt(head_dim)`. Returns float32 scores `[batch, heads, seq_q, seq_k]`.
#[pyfunction]
#[pyo3(signature = (q, k, scale=None, *, device="auto"))]
fn qkt_matmul<'py>(
    py: Python<'py>,
    q: &Bound<'py, PyAny>,
    k: &Bound<'py, PyAny>,
    scale: Option<f64>,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = "qkt_matmul";
    let dev = self::device(device)?;
    let (q, k) = (floats(op, "q", q)?, floats(op, "k", k)?);
    let s = attention_shape(op, &q, "q", &k, "k")?;
    let scale = attention_scale(op, scale, s.head_dim)?;
    let out_shape = vec![s.batch, s.heads, s.seq_q, s.seq_k];
    let out = reserve_output(op, &out_shape)?;
    let (qd, kd) = (q.data(), k.data());
    let out = py
        .detach(|| {
            let mut out = filled(out);
            ops::attention::qkt_matmul(&dev, qd, kd, &s, scale, &mut out).map(|_| out)
        })
        .py()?;
    to_numpy(py, out, out_shape)
}

/// `x * factor`, element-wise (e.g. attention scores times `1 / sqrt(head_dim)`).
///
/// x: float32 of any shape `[...]`; factor: a float. Returns a new float32 array of x's shape.
#[pyfunction]
#[pyo3(name = "scale", signature = (x, factor, *, device="auto"))]
fn scale_op<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    factor: f64,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let dev = self::device(device)?;
    let x = floats("scale", "x", x)?;
    let mut out = x.data().to_vec();
    let n = out.len();
    py.detach(|| ops::elementwise::scale(&dev, &mut out, factor as f32, n))
        .py()?;
    to_numpy(py, out, x.shape.clone())
}

/// Causal mask, bottom-right aligned: a copy of `scores` with `-inf` where key `j > i + (seq_k - seq_q)`.
///
/// scores: float32 `[..., seq_q, seq_k]` (usually `[batch, heads, seq_q, seq_k]`). Any seq_q and
/// seq_k: when decoding with a cache (seq_k >= seq_q) the last query sees every key; when
/// seq_q > seq_k the first `seq_q - seq_k` queries see none (their softmax row is zeros).
#[pyfunction]
#[pyo3(signature = (scores, *, device="auto"))]
fn causal_mask<'py>(
    py: Python<'py>,
    scores: &Bound<'py, PyAny>,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = "causal_mask";
    let dev = self::device(device)?;
    let x = floats(op, "scores", scores)?;
    expect_min_rank(op, "scores", &x, 2, "[..., seq_q, seq_k]")?;
    let r = x.rank();
    let (seq_q, seq_k) = (x.shape[r - 2], x.shape[r - 1]);
    let rows = x.shape[..r - 2].iter().product();
    let mut out = x.data().to_vec();
    py.detach(|| ops::attention::causal_mask(&dev, &mut out, rows, seq_q, seq_k))
        .py()?;
    to_numpy(py, out, x.shape.clone())
}

/// Softmax over the last axis: `exp(x - max) / sum(exp(x - max))`, row by row.
///
/// x: float32 `[..., n]` (e.g. masked scores `[batch, heads, seq_q, seq_k]`). A row whose
/// entries are all `-inf` gives zeros, never NaN. Returns a new float32 array of x's shape.
#[pyfunction]
#[pyo3(signature = (x, *, device="auto"))]
fn softmax<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = "softmax";
    let dev = self::device(device)?;
    let x = floats(op, "x", x)?;
    expect_min_rank(op, "x", &x, 1, "[..., n]")?;
    let cols = *x.shape.last().unwrap();
    let rows = x.data().len() / cols;
    let mut out = x.data().to_vec();
    py.detach(|| ops::attention::softmax(&dev, &mut out, rows, cols))
        .py()?;
    to_numpy(py, out, x.shape.clone())
}

/// Attention output: `out[b, i, h, :] = sum_j weights[b, h, i, j] * v[b, j, h // (heads // kv_heads), :]`.
///
/// weights: float32 `[batch, heads, seq_q, seq_k]` (softmax of the scores); v: float32
/// `[batch, seq_k, kv_heads, head_dim]`, `heads % kv_heads == 0`. Returns float32
/// `[batch, seq_q, heads, head_dim]`.
#[pyfunction]
#[pyo3(signature = (weights, v, *, device="auto"))]
fn weighted_matmul<'py>(
    py: Python<'py>,
    weights: &Bound<'py, PyAny>,
    v: &Bound<'py, PyAny>,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = "weighted_matmul";
    let dev = self::device(device)?;
    let (w, v) = (floats(op, "weights", weights)?, floats(op, "v", v)?);
    expect_rank(op, "weights", &w, 4, "[batch, heads, seq_q, seq_k]")?;
    expect_rank(op, "v", &v, 4, "[batch, seq_k, kv_heads, head_dim]")?;
    let (ws, vs) = (&w.shape, &v.shape);
    if ws[0] != vs[0] || ws[3] != vs[1] {
        return Err(value_error(
            op,
            format!(
                "weights {} [batch, heads, seq_q, seq_k] and v {} [batch, seq_k, kv_heads, head_dim] disagree on batch or seq_k",
                w.shape_str(),
                v.shape_str()
            ),
        ));
    }
    if ws[1] % vs[2] != 0 {
        return Err(value_error(
            op,
            format!("weights has {} heads, not a multiple of v's {} kv_heads (GQA needs kv_heads to divide heads)", ws[1], vs[2]),
        ));
    }
    let s = AttentionShape {
        batch: ws[0],
        seq_q: ws[2],
        seq_k: ws[3],
        heads: ws[1],
        kv_heads: vs[2],
        head_dim: vs[3],
    };
    let out_shape = vec![s.batch, s.seq_q, s.heads, s.head_dim];
    let out = reserve_output(op, &out_shape)?;
    let (wd, vd) = (w.data(), v.data());
    let out = py
        .detach(|| {
            let mut out = filled(out);
            ops::attention::weighted_matmul(&dev, wd, vd, &s, &mut out).map(|_| out)
        })
        .py()?;
    to_numpy(py, out, out_shape)
}

/// Fused attention: equal to `weighted_matmul(softmax([causal_mask](qkt_matmul(q, k, scale))), v)`,
/// computed with an online softmax over blocks of keys, so memory does not grow with
/// seq_q * seq_k and there is no length limit.
///
/// q: float32 `[batch, seq_q, heads, head_dim]`; k, v: float32 `[batch, seq_k, kv_heads, head_dim]`
/// with `heads % kv_heads == 0` (GQA). causal: mask bottom-right aligned (query i sees key j when
/// `j <= i + seq_k - seq_q`; queries that see no key give zeros). scale: default
/// `1 / sqrt(head_dim)`. window: attention over a sliding window (Gemma's local layers; needs
/// `causal=True`, at least 1, else ValueError): query i, at position `p = i + seq_k - seq_q`, sees
/// key j when `j <= p` and `p - j < window`, so each query sees at most `window` keys, itself
/// included; the keys before a query's window are not read. `window >= seq_k` is the causal mask
/// alone. Returns float32 `[batch, seq_q, heads, head_dim]`.
#[pyfunction]
#[pyo3(signature = (q, k, v, causal=false, scale=None, window=None, *, device="auto"))]
#[allow(clippy::too_many_arguments)]
fn flash_attention<'py>(
    py: Python<'py>,
    q: &Bound<'py, PyAny>,
    k: &Bound<'py, PyAny>,
    v: &Bound<'py, PyAny>,
    causal: bool,
    scale: Option<f64>,
    window: Option<i64>,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = "flash_attention";
    let dev = self::device(device)?;
    let window = match window {
        Some(w) if w < 1 => {
            return Err(value_error(
                op,
                format!("window must be at least 1, got {w}"),
            ))
        }
        Some(_) if !causal => return Err(value_error(op, "window needs causal=True".to_string())),
        w => w.map(|w| w as usize),
    };
    let (q, k, v) = (
        floats(op, "q", q)?,
        floats(op, "k", k)?,
        floats(op, "v", v)?,
    );
    let s = attention_shape(op, &q, "q", &k, "k")?;
    if v.shape != k.shape {
        return Err(value_error(
            op,
            format!(
                "v has shape {} but k has shape {}",
                v.shape_str(),
                k.shape_str()
            ),
        ));
    }
    let scale = attention_scale(op, scale, s.head_dim)?;
    let out_shape = vec![s.batch, s.seq_q, s.heads, s.head_dim];
    let out = reserve_output(op, &out_shape)?;
    let (qd, kd, vd) = (q.data(), k.data(), v.data());
    let out = py
        .detach(|| {
            let mut out = filled(out);
            ops::attention::flash_attention(&dev, qd, kd, vd, &s, causal, scale, window, &mut out)
                .map(|_| out)
        })
        .py()?;
    to_numpy(py, out, out_shape)
}

// ---------------------------------------------------------------------------------------------
// Position, normalization, activation, projection

/// Rotary position embedding: a copy of `x` with each head's pairs of dims rotated by
/// `angle(t, i) = positions[t] * theta ** (-2 i / head_dim) / freq_factors[i]`, i < head_dim / 2.
///
/// x: float32 `[batch, seq, heads, head_dim]`, head_dim even; positions: integers `[seq]` (any
/// values, e.g. `pos0 + arange(seq)` when decoding). neox=False rotates pairs `(2i, 2i+1)`
/// (GGUF llama); neox=True rotates halves `(i, i + head_dim/2)` (qwen2, NeoX). A pair `(a, b)`
/// becomes `(a cos - b sin, a sin + b cos)`. freq_factors: float32 `[head_dim / 2]` (Llama 3
/// `rope_freqs`), default all ones. theta is used as float32 (as GGUF stores `rope.freq_base`);
/// angles are computed in float64.
#[pyfunction]
#[pyo3(signature = (x, positions, theta=10000.0, neox=false, freq_factors=None, *, device="auto"))]
#[allow(clippy::too_many_arguments)]
fn rope<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    positions: &Bound<'py, PyAny>,
    theta: f64,
    neox: bool,
    freq_factors: Option<&Bound<'py, PyAny>>,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = "rope";
    let dev = self::device(device)?;
    let x = floats(op, "x", x)?;
    expect_rank(op, "x", &x, 4, "[batch, seq, heads, head_dim]")?;
    let [batch, seq, heads, head_dim] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    if head_dim % 2 != 0 {
        return Err(value_error(
            op,
            format!("head_dim (x's last axis) must be even, got {head_dim}"),
        ));
    }
    let (pos_shape, positions) = integers(op, "positions", positions)?;
    if pos_shape != [seq] {
        return Err(value_error(
            op,
            format!(
                "positions must have shape ({seq},) (one per token of x {}), got {}",
                x.shape_str(),
                shape_str(&pos_shape)
            ),
        ));
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(value_error(
            op,
            format!("theta must be finite and > 0, got {theta}"),
        ));
    }
    let ff = match freq_factors {
        Some(obj) if !obj.is_none() => {
            let ff = floats(op, "freq_factors", obj)?;
            if ff.shape != [head_dim / 2] {
                return Err(value_error(
                    op,
                    format!(
                        "freq_factors must have shape ({},) (head_dim / 2), got {}",
                        head_dim / 2,
                        ff.shape_str()
                    ),
                ));
            }
            Some(ff)
        }
        _ => None,
    };
    let params = RopeParams {
        theta: theta as f32,
        neox,
        n_rot: head_dim,
    };
    let ffd = ff.as_ref().map(|f| f.data());
    let mut out = x.data().to_vec();
    py.detach(|| {
        ops::rope::rope(
            &dev, &mut out, batch, &positions, heads, head_dim, &params, ffd,
        )
    })
    .py()?;
    to_numpy(py, out, x.shape.clone())
}

/// `act(gate) * up` for swiglu and geglu: gate and up float32 of the same shape.
fn glu<'py>(
    py: Python<'py>,
    act: Activation,
    gate: &Bound<'py, PyAny>,
    up: &Bound<'py, PyAny>,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = act.glu_name();
    let dev = self::device(device)?;
    let (g, u) = (floats(op, "gate", gate)?, floats(op, "up", up)?);
    if g.shape != u.shape {
        return Err(value_error(
            op,
            format!(
                "gate has shape {} but up has shape {}",
                g.shape_str(),
                u.shape_str()
            ),
        ));
    }
    let n = g.data().len();
    let out = reserve_output(op, &g.shape)?;
    let (gd, ud) = (g.data(), u.data());
    let out = py
        .detach(|| {
            let mut out = filled(out);
            ops::activation::glu(&dev, gd, ud, n, act, &mut out).map(|_| out)
        })
        .py()?;
    to_numpy(py, out, g.shape.clone())
}

/// `silu(gate) * up` element-wise, `silu(g) = g / (1 + exp(-g))`; gate and up float32 of the
/// same shape (usually `[tokens, ffn_dim]`). Returns a new float32 array of that shape.
#[pyfunction]
#[pyo3(signature = (gate, up, *, device="auto"))]
fn swiglu<'py>(
    py: Python<'py>,
    gate: &Bound<'py, PyAny>,
    up: &Bound<'py, PyAny>,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    glu(py, Activation::Silu, gate, up, device)
}

/// `gelu(gate) * up` element-wise with the tanh form of GELU (as `gelu`; Gemma's feed-forward);
/// gate and up float32 of the same shape (usually `[tokens, ffn_dim]`). Returns a new float32
/// array of that shape.
#[pyfunction]
#[pyo3(signature = (gate, up, *, device="auto"))]
fn geglu<'py>(
    py: Python<'py>,
    gate: &Bound<'py, PyAny>,
    up: &Bound<'py, PyAny>,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    glu(py, Activation::GeluTanh, gate, up, device)
}

/// GELU, tanh form, element-wise: `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x**3)))`.
///
/// x: float32 of any shape `[...]`. Returns a new float32 array of x's shape.
#[pyfunction]
#[pyo3(signature = (x, *, device="auto"))]
fn gelu<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = "gelu";
    let dev = self::device(device)?;
    let x = floats(op, "x", x)?;
    let n = x.data().len();
    let out = reserve_output(op, &x.shape)?;
    let xd = x.data();
    let out = py
        .detach(|| {
            let mut out = filled(out);
            ops::activation::gelu(&dev, xd, n, &mut out).map(|_| out)
        })
        .py()?;
    to_numpy(py, out, x.shape.clone())
}

/// RMS normalization over the last axis, times weight:
/// `x / sqrt(mean(x**2, axis=-1, keepdims=True) + eps) * weight`.
///
/// x: float32 `[..., dim]`; weight: float32 `[dim]`; eps >= 0. Returns float32 of x's shape.
#[pyfunction]
#[pyo3(signature = (x, weight, eps=1e-6, *, device="auto"))]
fn rms_norm<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
    eps: f64,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = "rms_norm";
    let dev = self::device(device)?;
    let (x, w) = (floats(op, "x", x)?, floats(op, "weight", weight)?);
    expect_min_rank(op, "x", &x, 1, "[..., dim]")?;
    expect_rank(op, "weight", &w, 1, "[dim]")?;
    let dim = *x.shape.last().unwrap();
    if w.shape[0] != dim {
        return Err(value_error(
            op,
            format!(
                "weight has shape {} but x's last axis is {dim} (x {})",
                w.shape_str(),
                x.shape_str()
            ),
        ));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(value_error(
            op,
            format!("eps must be finite and >= 0, got {eps}"),
        ));
    }
    let rows = x.data().len() / dim;
    let out = reserve_output(op, &x.shape)?;
    let (xd, wd) = (x.data(), w.data());
    let out = py
        .detach(|| {
            let mut out = filled(out);
            ops::norm::rms_norm(&dev, xd, wd, eps as f32, rows, &mut out).map(|_| out)
        })
        .py()?;
    to_numpy(py, out, x.shape.clone())
}

/// Projection `x @ W.T` with W `[n, k]` as GGUF stores it: `out[..., j] = sum_c x[..., c] * W[j, c]`.
///
/// x: float32 `[..., k]` (usually `[m, k]`). w: float32 `[n, k]` when dtype="F32", or the GGUF
/// blocks of any type rocmforge dequantizes (dtype "F16", "BF16", "Q4_0", "Q4_K", ...): a uint8
/// array `[n, row_bytes]` as `GGUFFile.raw(name)` and `rocmforge.quantize` return; the result is
/// then `x @ dequantize(w).T`. Returns float32 `[..., n]`. Types rocmforge cannot dequantize
/// raise `UnsupportedError`.
#[pyfunction]
#[pyo3(signature = (x, w, dtype="F32", *, device="auto"))]
fn matmul<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    dtype: &str,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = "matmul";
    let dev = self::device(device)?;
    let x = floats(op, "x", x)?;
    expect_min_rank(op, "x", &x, 1, "[..., k]")?;
    let k = *x.shape.last().unwrap();
    let m = x.data().len() / k;
    let mut out_shape = x.shape.clone();
    let xd = x.data();
    let w_is_f32 = w
        .cast::<PyUntypedArray>()
        .is_ok_and(|a| a.dtype().is_equiv_to(&numpy::dtype::<f32>(py)));
    let out = if w_is_f32 && GgmlType::from_name(dtype).ok() == Some(GgmlType::F32) {
        // float32 weights: no byte conversion
        let w = floats(op, "w", w)?;
        expect_rank(op, "w", &w, 2, "[n, k]")?;
        let n = w.shape[0];
        if w.shape[1] != k {
            return Err(value_error(
                op,
                format!(
                    "x's last axis is {k} but w {} [n, k] has k = {}",
                    w.shape_str(),
                    w.shape[1]
                ),
            ));
        }
        *out_shape.last_mut().unwrap() = n;
        let out = reserve_output(op, &out_shape)?;
        let wd = w.data();
        py.detach(|| {
            let mut out = filled(out);
            ops::matmul::matmul_f32(&dev, xd, wd, m, n, k, &mut out).map(|_| out)
        })
        .py()?
    } else {
        let (ty, n, cols, bytes) = gguf_matrix(op, "w", w, dtype)?;
        if cols != k {
            return Err(value_error(
                op,
                format!("x's last axis is {k} but w holds {ty} rows of {cols} values"),
            ));
        }
        *out_shape.last_mut().unwrap() = n;
        let out = reserve_output(op, &out_shape)?;
        py.detach(|| {
            let view = WeightView::new(ty, n, cols, &bytes)?;
            let mut out = filled(out);
            ops::matmul::matmul_gguf(&dev, xd, &view, m, &mut out).map(|_| out)
        })
        .py()?
    };
    to_numpy(py, out, out_shape)
}

// ---------------------------------------------------------------------------------------------
// Small ops of the model

/// Embedding lookup: `out[..., :] = dequantize(table)[ids[...], :]`.
///
/// table: float32 `[vocab, dim]` when dtype="F32", else uint8 GGUF blocks `[vocab, row_bytes]`
/// of dtype (as `matmul`'s w). ids: integers of any shape, each in `[0, vocab)`.
/// Returns float32 `ids.shape + (dim,)`.
#[pyfunction]
#[pyo3(signature = (table, ids, dtype="F32", *, device="auto"))]
fn embedding<'py>(
    py: Python<'py>,
    table: &Bound<'py, PyAny>,
    ids: &Bound<'py, PyAny>,
    dtype: &str,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = "embedding";
    let dev = self::device(device)?;
    let (ty, vocab, dim, bytes) = gguf_matrix(op, "table", table, dtype)?;
    let (ids_shape, ids) = integers(op, "ids", ids)?;
    if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as u64 >= vocab as u64) {
        return Err(value_error(
            op,
            format!("ids holds {bad}, outside the table's {vocab} rows"),
        ));
    }
    let ids: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
    let mut out_shape = ids_shape;
    out_shape.push(dim);
    let out = reserve_output(op, &out_shape)?;
    let out = py
        .detach(|| {
            let view = WeightView::new(ty, vocab, dim, &bytes)?;
            let mut out = filled(out);
            ops::embedding::embedding(&dev, &view, &ids, &mut out).map(|_| out)
        })
        .py()?;
    to_numpy(py, out, out_shape)
}

/// `a + b` for float32 arrays of the same shape (residual connections), or with b of shape
/// `[n]` added to every row of a `[..., n]` (biases). Returns a new float32 array of a's shape.
#[pyfunction]
#[pyo3(signature = (a, b, *, device="auto"))]
fn add<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    device: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let op = "add";
    let dev = self::device(device)?;
    let (a, b) = (floats(op, "a", a)?, floats(op, "b", b)?);
    let mut out = a.data().to_vec();
    let bd = b.data();
    if a.shape == b.shape {
        let n = out.len();
        py.detach(|| ops::elementwise::add(&dev, &mut out, bd, n))
            .py()?;
    } else if b.rank() == 1 && a.shape.last() == Some(&b.shape[0]) {
        let rows = out.len() / b.shape[0];
        py.detach(|| ops::elementwise::add_bias(&dev, &mut out, bd, rows))
            .py()?;
    } else {
        return Err(value_error(
            op,
            format!(
                "b must have a's shape {} or be a vector of a's last axis, got {}",
                a.shape_str(),
                b.shape_str()
            ),
        ));
    }
    to_numpy(py, out, a.shape.clone())
}

/// KV-cache append, in place: `cache[pos : pos + n] = src` (converted to the cache's dtype).
///
/// cache: a writeable C-contiguous float32 or float16 array `[n_ctx, ...]` (e.g.
/// `[n_ctx, kv_heads, head_dim]`); src: float32 `[n, ...]` with the same trailing shape;
/// `pos + n <= n_ctx`. float16 caches round to nearest even. Returns None.
#[pyfunction]
#[pyo3(signature = (cache, src, pos, *, device="auto"))]
fn kv_append(
    py: Python<'_>,
    cache: &Bound<'_, PyAny>,
    src: &Bound<'_, PyAny>,
    pos: i64,
    device: &str,
) -> PyResult<()> {
    let op = "kv_append";
    let dev = self::device(device)?;
    let src = floats(op, "src", src)?;
    let arr = ndarray(op, "cache", cache, "float32 or float16")?;
    let cache_shape = arr.shape().to_vec();
    if cache_shape.contains(&0)
        || cache_shape.len() != src.rank()
        || cache_shape[1..] != src.shape[1..]
    {
        return Err(value_error(
            op,
            format!(
                "cache {} [n_ctx, ...] and src {} [n, ...] must be non-empty with the same trailing shape",
                shape_str(&cache_shape),
                src.shape_str()
            ),
        ));
    }
    if !arr.is_c_contiguous() {
        return Err(value_error(
            op,
            "cache must be C-contiguous (it is written in place)".into(),
        ));
    }
    let (n, n_ctx) = (src.shape[0], cache_shape[0]);
    if pos < 0 || pos as u64 + n as u64 > n_ctx as u64 {
        return Err(value_error(
            op,
            format!("rows [{pos}, {pos} + {n}) do not fit a cache of {n_ctx} rows"),
        ));
    }
    let row_len = src.data().len() / n;
    let sd = src.data();
    let pos = pos as usize;
    let cannot_write = |e: numpy::BorrowError| {
        value_error(
            op,
            format!("cache must be a writeable array not shared with src ({e})"),
        )
    };
    let dtype = arr.dtype();
    if dtype.is_equiv_to(&numpy::dtype::<f32>(py)) {
        let mut c = arr
            .cast::<PyArrayDyn<f32>>()?
            .try_readwrite()
            .map_err(cannot_write)?;
        let c = c.as_slice_mut().expect("C-contiguous");
        py.detach(|| ops::kv_cache::kv_append(&dev, c, sd, pos, n, row_len))
            .py()
    } else if dtype.is_equiv_to(&numpy::dtype::<f16>(py)) {
        let mut c = arr
            .cast::<PyArrayDyn<f16>>()?
            .try_readwrite()
            .map_err(cannot_write)?;
        let c = c.as_slice_mut().expect("C-contiguous");
        py.detach(|| ops::kv_cache::kv_append(&dev, c, sd, pos, n, row_len))
            .py()
    } else {
        Err(type_error(
            op,
            format!("cache must have dtype float32 or float16, got {dtype}"),
        ))
    }
}

/// Index of the largest value of a float32 vector `[n]`: the lowest index on ties; NaN never
/// wins over a number (greedy sampling). Returns an int.
#[pyfunction]
#[pyo3(signature = (x, *, device="auto"))]
fn argmax(py: Python<'_>, x: &Bound<'_, PyAny>, device: &str) -> PyResult<usize> {
    let op = "argmax";
    let dev = self::device(device)?;
    let x = floats(op, "x", x)?;
    expect_rank(op, "x", &x, 1, "[n]")?;
    let xd = x.data();
    py.detach(|| ops::argmax::argmax(&dev, xd, xd.len())).py()
}

/// A sampling parameter: one value for every row, or one per row.
enum PerRow<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Copy> PerRow<T> {
    fn get(&self, r: usize) -> T {
        match self {
            PerRow::One(v) => *v,
            PerRow::Each(v) => v[r],
        }
    }
}

impl<T> PerRow<T> {
    /// The number of rows it gives values for (`None`: any).
    fn len(&self) -> Option<usize> {
        match self {
            PerRow::One(_) => None,
            PerRow::Each(v) => Some(v.len()),
        }
    }
}

/// `obj` (a number or a 1-D array of numbers) as float64 values.
fn per_row_floats(op: &str, name: &str, obj: &Bound<'_, PyAny>) -> PyResult<PerRow<f64>> {
    let np = obj.py().import("numpy")?;
    let arr = np
        .call_method1("asarray", (obj,))
        .and_then(|a| a.call_method1("astype", ("float64",)))
        .map_err(|_| {
            type_error(
                op,
                format!("{name} must be a number or a 1-D array of numbers"),
            )
        })?;
    let arr = arr.cast_into::<PyArrayDyn<f64>>()?;
    let ro = arr.readonly();
    let v = ro.as_array();
    match v.ndim() {
        0 => Ok(PerRow::One(v.iter().copied().next().unwrap_or(0.0))),
        1 if !v.is_empty() => Ok(PerRow::Each(v.iter().copied().collect())),
        _ => Err(value_error(
            op,
            format!(
                "{name} must be a number or a non-empty 1-D array, got shape {}",
                shape_str(v.shape())
            ),
        )),
    }
}

/// `obj` (an int or a 1-D array of ints) as i128 values (room for uint64 seeds).
fn per_row_ints(op: &str, name: &str, obj: &Bound<'_, PyAny>) -> PyResult<PerRow<i128>> {
    if let Ok(v) = obj.extract::<i128>() {
        return Ok(PerRow::One(v));
    }
    let np = obj.py().import("numpy")?;
    let arr = np.call_method1("asarray", (obj,))?;
    let arr = ndarray(op, name, &arr, "integers")?;
    let kind = arr.dtype().kind();
    if kind != b'i' && kind != b'u' {
        return Err(type_error(
            op,
            format!(
                "{name} must be an int or a 1-D array of ints, got dtype {}",
                arr.dtype()
            ),
        ));
    }
    if arr.ndim() != 1 || arr.len() == 0 {
        return Err(value_error(
            op,
            format!(
                "{name} must be an int or a non-empty 1-D array, got shape {}",
                shape_str(arr.shape())
            ),
        ));
    }
    let values: Vec<i128> = if kind == b'u' {
        let a = arr.call_method1("astype", ("uint64",))?;
        let a = a.cast::<PyArrayDyn<u64>>()?.readonly();
        a.as_array().iter().map(|&v| v as i128).collect()
    } else {
        let a = arr.call_method1("astype", ("int64",))?;
        let a = a.cast::<PyArrayDyn<i64>>()?.readonly();
        a.as_array().iter().map(|&v| v as i128).collect()
    };
    Ok(PerRow::Each(values))
}

/// ValueError unless every value of `v` is in `[lo, hi]`.
fn ints_in(op: &str, name: &str, v: &PerRow<i128>, lo: i128, hi: i128, want: &str) -> PyResult<()> {
    let bad = match v {
        PerRow::One(x) => (*x < lo || *x > hi).then_some(*x),
        PerRow::Each(xs) => xs.iter().copied().find(|x| *x < lo || *x > hi),
    };
    match bad {
        Some(x) => Err(value_error(op, format!("{name} must be {want}, got {x}"))),
        None => Ok(()),
    }
}

/// Each row's history: `None`, one 1-D int array for every row, a 2-D `[rows, n]` array, or
/// a list of 1-D arrays (one per row).
fn histories(op: &str, obj: Option<&Bound<'_, PyAny>>, vocab: usize) -> PyResult<PerRow<Vec<u32>>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(PerRow::One(Vec::new()));
    };
    let check = |values: &[i64]| -> PyResult<Vec<u32>> {
        match values.iter().find(|&&t| t < 0 || t as u64 >= vocab as u64) {
            Some(t) => Err(value_error(
                op,
                format!("history holds token id {t}, outside the vocabulary (size {vocab})"),
            )),
            None => Ok(values.iter().map(|&t| t as u32).collect()),
        }
    };
    let is_list =
        obj.is_instance_of::<pyo3::types::PyList>() || obj.is_instance_of::<pyo3::types::PyTuple>();
    if is_list {
        let n = obj.len()?;
        if n == 0 {
            return Ok(PerRow::One(Vec::new()));
        }
        if obj.get_item(0)?.extract::<i64>().is_err() {
            // One sequence per row (they may differ in length).
            let mut rows = Vec::with_capacity(n);
            for item in obj.try_iter()? {
                let item = item?;
                if item.len().map(|l| l == 0).unwrap_or(false) {
                    rows.push(Vec::new());
                    continue;
                }
                let (shape, values) = integers(op, "history", &item)?;
                if shape.len() != 1 {
                    return Err(value_error(
                        op,
                        "history's rows must be 1-D sequences of ids".into(),
                    ));
                }
                rows.push(check(&values)?);
            }
            return Ok(PerRow::Each(rows));
        }
    }
    let (shape, values) = integers(op, "history", obj)?;
    match shape.len() {
        1 => Ok(PerRow::One(check(&values)?)),
        2 => Ok(PerRow::Each(
            values
                .chunks(shape[1])
                .map(check)
                .collect::<PyResult<Vec<_>>>()?,
        )),
        _ => Err(value_error(
            op,
            format!(
                "history must be 1-D (every row) or 2-D [rows, n], got shape {}",
                shape_str(&shape)
            ),
        )),
    }
}

/// Sample one token per row of logits `[vocab]` or `[rows, vocab]`, the same way on every
/// device: penalties over the last `penalty_last_n` tokens of the row's history (repetition:
/// divide positive logits and multiply negative ones by `repeat_penalty`; subtract
/// `presence_penalty` once and `frequency_penalty` per occurrence), then top-k (0: all),
/// top-p (the smallest set of most likely tokens whose probability at temperature 1 reaches
/// it), min-p (drop tokens less likely than `min_p` times the best), temperature (0: greedy,
/// lowest id on ties), then one draw from a Philox counter-based generator keyed by
/// (`seed`, `sequence`, `position`): the same key and logits give the same token on every run,
/// batch size and row (and on every device, but for a draw within float rounding of a
/// boundary, as devices sum in different orders). Ties in the order: the lower id first.
///
/// Every parameter but `logprobs` and `device` is a scalar or a 1-D array with one value per
/// row; 1-D logits with per-row arrays are one row drawn once per array element. `history`:
/// None, a 1-D int array (every row), a 2-D `[rows, n]` array, or a list of 1-D arrays (one
/// per row). `sequence` defaults to the row index, `position` to 0.
///
/// Returns the ids (an int for 1-D logits and scalar parameters, else an int64 array
/// `[rows]`); with `logprobs = n > 0`, a tuple `(ids, logprob, top_ids, top_logprobs)`: the
/// picks' log-probabilities and the `n` most likely tokens with theirs (`[rows, n]`, best
/// first), all of the model's distribution, `log_softmax(logits)` before penalties,
/// temperature and filters (as OpenAI's `logprobs`). ValueError names a parameter outside its
/// domain (NaN included); NaN or +inf logits (or none finite) raise RocmForgeError.
#[pyfunction]
#[pyo3(signature = (logits, *, temperature=None, top_k=None, top_p=None, min_p=None,
                    repeat_penalty=None, presence_penalty=None, frequency_penalty=None,
                    penalty_last_n=None, history=None, seed=None, sequence=None, position=None,
                    logprobs=0, device="auto"),
       text_signature = "(logits, *, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, penalty_last_n=64, history=None, seed=0, sequence=None, position=None, logprobs=0, device='auto')")]
#[allow(clippy::too_many_arguments)]
fn sample<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
    temperature: Option<&Bound<'py, PyAny>>,
    top_k: Option<&Bound<'py, PyAny>>,
    top_p: Option<&Bound<'py, PyAny>>,
    min_p: Option<&Bound<'py, PyAny>>,
    repeat_penalty: Option<&Bound<'py, PyAny>>,
    presence_penalty: Option<&Bound<'py, PyAny>>,
    frequency_penalty: Option<&Bound<'py, PyAny>>,
    penalty_last_n: Option<&Bound<'py, PyAny>>,
    history: Option<&Bound<'py, PyAny>>,
    seed: Option<&Bound<'py, PyAny>>,
    sequence: Option<&Bound<'py, PyAny>>,
    position: Option<&Bound<'py, PyAny>>,
    logprobs: i64,
    device: &str,
) -> PyResult<Bound<'py, PyAny>> {
    use crate::ops::sampling::{DrawKey, SampleParams, SampleRow, MAX_TOP};
    let op = "sample";
    let dev = self::device(device)?;
    let x = floats(op, "logits", logits)?;
    if x.rank() != 1 && x.rank() != 2 {
        return Err(value_error(
            op,
            format!(
                "logits must be 1-D [vocab] or 2-D [rows, vocab], got shape {}",
                x.shape_str()
            ),
        ));
    }
    let vocab = *x.shape.last().expect("rank >= 1");
    let d = SampleParams::default();
    let float = |name: &str, obj: Option<&Bound<'py, PyAny>>, default: f32| match obj {
        Some(o) if !o.is_none() => per_row_floats(op, name, o),
        _ => Ok(PerRow::One(default as f64)),
    };
    let int = |name: &str, obj: Option<&Bound<'py, PyAny>>, default: i128| match obj {
        Some(o) if !o.is_none() => per_row_ints(op, name, o),
        _ => Ok(PerRow::One(default)),
    };
    let temperature = float("temperature", temperature, d.temperature)?;
    let top_k = int("top_k", top_k, d.top_k as i128)?;
    let top_p = float("top_p", top_p, d.top_p)?;
    let min_p = float("min_p", min_p, d.min_p)?;
    let repeat = float("repeat_penalty", repeat_penalty, d.repeat_penalty)?;
    let presence = float("presence_penalty", presence_penalty, d.presence_penalty)?;
    let frequency = float("frequency_penalty", frequency_penalty, d.frequency_penalty)?;
    let last_n = int("penalty_last_n", penalty_last_n, d.penalty_last_n as i128)?;
    let seed = int("seed", seed, 0)?;
    let position = int("position", position, 0)?;
    let sequence = match sequence {
        Some(o) if !o.is_none() => Some(per_row_ints(op, "sequence", o)?),
        _ => None,
    };
    ints_in(op, "top_k", &top_k, 0, i64::MAX as i128, ">= 0")?;
    ints_in(op, "penalty_last_n", &last_n, 0, i64::MAX as i128, ">= 0")?;
    ints_in(op, "seed", &seed, 0, u64::MAX as i128, "in [0, 2**64)")?;
    ints_in(
        op,
        "position",
        &position,
        0,
        u32::MAX as i128,
        "in [0, 2**32)",
    )?;
    if let Some(s) = &sequence {
        ints_in(op, "sequence", s, 0, u64::MAX as i128, "in [0, 2**64)")?;
    }
    if logprobs < 0 || logprobs as usize > MAX_TOP.min(vocab) {
        return Err(value_error(
            op,
            format!(
                "logprobs must be in [0, {}], got {logprobs}",
                MAX_TOP.min(vocab)
            ),
        ));
    }
    let history = histories(op, history, vocab)?;
    // Rows: those of 2-D logits, or the length of the per-row arguments.
    let lens: Vec<(&str, usize)> = [
        ("temperature", temperature.len()),
        ("top_k", top_k.len()),
        ("top_p", top_p.len()),
        ("min_p", min_p.len()),
        ("repeat_penalty", repeat.len()),
        ("presence_penalty", presence.len()),
        ("frequency_penalty", frequency.len()),
        ("penalty_last_n", last_n.len()),
        ("history", history.len()),
        ("seed", seed.len()),
        ("sequence", sequence.as_ref().and_then(|s| s.len())),
        ("position", position.len()),
    ]
    .into_iter()
    .filter_map(|(name, len)| len.map(|l| (name, l)))
    .collect();
    let (n_rows, logits_rows) = if x.rank() == 2 {
        (x.shape[0], x.shape[0])
    } else {
        (lens.first().map(|l| l.1).unwrap_or(1), 1)
    };
    if let Some((name, len)) = lens.iter().find(|(_, l)| *l != n_rows) {
        return Err(value_error(
            op,
            format!(
                "{name} has {len} values for {n_rows} rows (logits {}{})",
                x.shape_str(),
                if x.rank() == 1 {
                    format!(", {} has {n_rows}", lens[0].0)
                } else {
                    String::new()
                }
            ),
        ));
    }
    let scalar = x.rank() == 1 && lens.is_empty();
    let rows: Vec<SampleRow> = (0..n_rows)
        .map(|r| SampleRow {
            params: SampleParams {
                temperature: temperature.get(r) as f32,
                top_k: top_k.get(r) as i64,
                top_p: top_p.get(r) as f32,
                min_p: min_p.get(r) as f32,
                repeat_penalty: repeat.get(r) as f32,
                presence_penalty: presence.get(r) as f32,
                frequency_penalty: frequency.get(r) as f32,
                penalty_last_n: last_n.get(r) as i64,
            },
            key: DrawKey {
                seed: seed.get(r) as u64,
                sequence: sequence
                    .as_ref()
                    .map(|s| s.get(r) as u64)
                    .unwrap_or(r as u64),
                position: position.get(r) as u32,
            },
            history: match &history {
                PerRow::One(h) => h,
                PerRow::Each(h) => &h[r],
            },
        })
        .collect();
    let n_top = logprobs as usize;
    let xd = x.data();
    let out = py
        .detach(|| ops::sampling::sample(&dev, xd, logits_rows, vocab, &rows, n_top))
        .py()?;
    let ids: Vec<i64> = out.ids.iter().map(|&v| v as i64).collect();
    let top_ids: Vec<i64> = out.top_ids.iter().map(|&v| v as i64).collect();
    if scalar {
        if n_top == 0 {
            return Ok(ids[0].into_pyobject(py)?.into_any());
        }
        let t = (
            ids[0],
            out.logprobs[0] as f64,
            PyArray1::from_vec(py, top_ids),
            PyArray1::from_vec(py, out.top_logprobs),
        );
        return Ok(t.into_pyobject(py)?.into_any());
    }
    let ids = PyArray1::from_vec(py, ids);
    if n_top == 0 {
        return Ok(ids.into_any());
    }
    let t = (
        ids,
        PyArray1::from_vec(py, out.logprobs),
        PyArray1::from_vec(py, top_ids).reshape([n_rows, n_top])?,
        PyArray1::from_vec(py, out.top_logprobs).reshape([n_rows, n_top])?,
    );
    Ok(t.into_pyobject(py)?.into_any())
}

/// The model's GPU matmul (for tests and benchmarks): `x @ dequantize(w).T` on GPU 0 with x
/// float32 `[m, k]` and w as `matmul` takes it, through `path`: "model" (what the model's
/// forward pass runs: tensor cores from `MMA_MIN_M` rows where available, f16 products),
/// "mma" (the tensor-core kernel; UnsupportedError where there is none) or "exact" (the op's
/// kernels). Returns float32 `[m, n]`.
#[pyfunction]
#[pyo3(signature = (x, w, dtype="F32", path="model"))]
fn gpu_matmul<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    dtype: &str,
    path: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    use crate::ops::matmul::gpu::{matmul_gguf_path, MatmulPath};
    let op = "gpu_matmul";
    let path = match path {
        "model" => MatmulPath::Model,
        "mma" => MatmulPath::TensorCores,
        "exact" => MatmulPath::Exact,
        other => {
            return Err(value_error(
                op,
                format!("path must be \"model\", \"mma\" or \"exact\", got {other:?}"),
            ))
        }
    };
    let Device::Gpu(dev) = device("gpu")? else {
        return Err(value_error(op, "no GPU".into()));
    };
    let x = floats(op, "x", x)?;
    expect_rank(op, "x", &x, 2, "[m, k]")?;
    let (m, k) = (x.shape[0], x.shape[1]);
    let (ty, n, cols, bytes) = gguf_matrix(op, "w", w, dtype)?;
    if cols != k {
        return Err(value_error(
            op,
            format!("x's last axis is {k} but w holds {ty} rows of {cols} values"),
        ));
    }
    let out = reserve_output(op, &[m, n])?;
    let xd = x.data();
    let out = py
        .detach(|| {
            let view = WeightView::new(ty, n, cols, &bytes)?;
            let mut out = filled(out);
            matmul_gguf_path(&dev, xd, &view, m, &mut out, path).map(|_| out)
        })
        .py()?;
    to_numpy(py, out, vec![m, n])
}

/// One launch of the model's decode matvec family on GPU 0 (a testing hook, like `gpu_matmul`):
/// x `[k]` float32 (8 bits in the kernels), `weights` 1 to 3 raw GGUF matrices `[n_i,
/// row_bytes]` of `dtype`, and the epilogue: "store" (out_i = W_i x + bias_i), "add" / "add_early"
/// (out += W x + bias for one matrix, `out` its values before; with `next_norm` also xw = out *
/// next_norm and the launch's per-block sums of out^2), "glu" (act(gate x) * (up x), weights
/// gate and up; act "silu" or "gelu_tanh") or "qkv_rope" (weights q, k, v; `rope` a dict of
/// heads, kv_heads, head_dim, pos, n_ctx, theta=10000.0, neox=False, freq_factors=None,
/// kv_dtype="f32"). x is normalized by RMS norm with `norm_weight` (folded in), or taken as
/// already multiplied by it with `norm_parts` (sum(x^2) = their sum). `tuning` overrides fields
/// of the device's tuning record for this launch. Returns a dict: "out" (a list of float32
/// arrays: one per matrix for store, else one: out, or q), "xw" and "parts" (next_norm),
/// "k_cache" and "v_cache" (qkv_rope: `[n_ctx, kv_heads * head_dim]` float32), "kernel" (its
/// name). UnsupportedError where the family does not take the launch.
#[pyfunction]
#[pyo3(signature = (x, weights, dtype, epilogue="store", *, biases=None, out=None, norm_weight=None,
                    norm_parts=None, eps=1e-6, next_norm=None, act="silu", rope=None, tuning=None))]
#[allow(clippy::too_many_arguments)]
fn gpu_matvec<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    weights: Vec<Bound<'py, PyAny>>,
    dtype: &str,
    epilogue: &str,
    biases: Option<Vec<Option<Bound<'py, PyAny>>>>,
    out: Option<Bound<'py, PyAny>>,
    norm_weight: Option<Bound<'py, PyAny>>,
    norm_parts: Option<Bound<'py, PyAny>>,
    eps: f32,
    next_norm: Option<Bound<'py, PyAny>>,
    act: &str,
    rope: Option<Bound<'py, pyo3::types::PyDict>>,
    tuning: Option<Bound<'py, pyo3::types::PyDict>>,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    use crate::device::KvDtype;
    use crate::ops::matmul::decode::{matvec_decode_gguf, DecodeCase, DecodeEpilogue, DecodeNorm};
    let op = "gpu_matvec";
    let Device::Gpu(dev) = device("gpu")? else {
        return Err(value_error(op, "no GPU".into()));
    };
    let vector = |name: &str, obj: &Bound<'py, PyAny>| -> PyResult<Vec<f32>> {
        let v = floats(op, name, obj)?;
        expect_rank(op, name, &v, 1, "[n]")?;
        Ok(v.data().to_vec())
    };
    let x = vector("x", x)?;
    let mut mats = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        let (ty, n, cols, bytes) = gguf_matrix(op, &format!("weights[{i}]"), w, dtype)?;
        if cols != x.len() {
            return Err(value_error(
                op,
                format!("x [{}] but weights[{i}] has rows of {cols} values", x.len()),
            ));
        }
        mats.push((ty, n, bytes));
    }
    let biases: Vec<Option<Vec<f32>>> = biases
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, b)| {
            b.as_ref()
                .map(|b| vector(&format!("biases[{i}]"), b))
                .transpose()
        })
        .collect::<PyResult<_>>()?;
    for (i, b) in biases.iter().enumerate() {
        if let (Some(b), Some((_, n, _))) = (b, mats.get(i)) {
            if b.len() != *n {
                return Err(value_error(
                    op,
                    format!("biases[{i}] has {} values for {n} rows", b.len()),
                ));
            }
        }
    }
    let out = out.map(|o| vector("out", &o)).transpose()?;
    let norm_weight = norm_weight.map(|o| vector("norm_weight", &o)).transpose()?;
    let norm_parts = norm_parts.map(|o| vector("norm_parts", &o)).transpose()?;
    let next_norm = next_norm.map(|o| vector("next_norm", &o)).transpose()?;
    let act = match act {
        "silu" => Activation::Silu,
        "gelu_tanh" => Activation::GeluTanh,
        other => {
            return Err(value_error(
                op,
                format!("act must be \"silu\" or \"gelu_tanh\", got {other:?}"),
            ))
        }
    };
    struct Rope {
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        pos: usize,
        n_ctx: usize,
        params: RopeParams,
        freq_factors: Option<Vec<f32>>,
        dtype: KvDtype,
    }
    let rope = match rope {
        None => None,
        Some(d) => {
            let get = |key: &str| -> PyResult<Option<Bound<'py, PyAny>>> { d.get_item(key) };
            let need_usize = |key: &str| -> PyResult<usize> {
                get(key)?
                    .ok_or_else(|| value_error(op, format!("rope needs {key:?}")))?
                    .extract()
            };
            let head_dim = need_usize("head_dim")?;
            let kv_dtype: String = get("kv_dtype")?.map_or(Ok("f32".into()), |v| v.extract())?;
            Some(Rope {
                heads: need_usize("heads")?,
                kv_heads: need_usize("kv_heads")?,
                head_dim,
                pos: need_usize("pos")?,
                n_ctx: need_usize("n_ctx")?,
                params: RopeParams {
                    theta: get("theta")?.map_or(Ok(10000.0), |v| v.extract())?,
                    neox: get("neox")?.map_or(Ok(false), |v| v.extract())?,
                    n_rot: head_dim,
                },
                freq_factors: get("freq_factors")?
                    .filter(|v| !v.is_none())
                    .map(|v| vector("rope freq_factors", &v))
                    .transpose()?,
                dtype: match kv_dtype.as_str() {
                    "f32" => KvDtype::F32,
                    "f16" => KvDtype::F16,
                    other => {
                        return Err(value_error(
                            op,
                            format!("kv_dtype must be \"f32\" or \"f16\", got {other:?}"),
                        ))
                    }
                },
            })
        }
    };
    let mut t = dev.tuning().clone();
    if let Some(d) = tuning {
        for (key, value) in d.iter() {
            let key: String = key.extract()?;
            let value = if let Ok(b) = value.extract::<bool>() {
                b.to_string()
            } else {
                value.str()?.to_string()
            };
            t.set(&key, &value).py()?;
        }
    }
    let epi = epilogue.to_string();
    let res = py
        .detach(|| {
            let views = mats
                .iter()
                .map(|(ty, n, bytes)| WeightView::new(*ty, *n, x.len(), bytes))
                .collect::<crate::error::Result<Vec<_>>>()?;
            let epilogue = match epi.as_str() {
                "store" => DecodeEpilogue::Store,
                "add" | "add_early" => DecodeEpilogue::Add {
                    early: epi == "add_early",
                    next_norm: next_norm.as_deref(),
                },
                "glu" => DecodeEpilogue::Glu(act),
                "qkv_rope" => {
                    let r = rope.as_ref().ok_or_else(|| {
                        crate::error::Error::invalid(format!("{op}: qkv_rope needs rope"))
                    })?;
                    DecodeEpilogue::QkvRope {
                        heads: r.heads,
                        kv_heads: r.kv_heads,
                        head_dim: r.head_dim,
                        params: r.params,
                        freq_factors: r.freq_factors.as_deref(),
                        dtype: r.dtype,
                        n_ctx: r.n_ctx,
                        pos: r.pos,
                    }
                }
                other => {
                    return Err(crate::error::Error::invalid(format!(
                    "{op}: epilogue must be store, add, add_early, glu or qkv_rope, got {other:?}"
                )))
                }
            };
            let norm = match (&norm_weight, &norm_parts) {
                (Some(_), Some(_)) => {
                    return Err(crate::error::Error::invalid(format!(
                        "{op}: norm_weight and norm_parts are two ways of one norm: give one"
                    )))
                }
                (Some(w), None) => DecodeNorm::Weight(w, eps),
                (None, Some(p)) => DecodeNorm::Parts(p, eps),
                (None, None) => DecodeNorm::None,
            };
            let case = DecodeCase {
                x: &x,
                weights: views,
                biases: biases.iter().map(|b| b.as_deref()).collect(),
                out_init: out.as_deref(),
                norm,
                epilogue,
            };
            matvec_decode_gguf(&dev, &t, &case)
        })
        .py()?;
    let d = pyo3::types::PyDict::new(py);
    let outs = res
        .outs
        .into_iter()
        .map(|o| {
            let n = o.len();
            to_numpy(py, o, vec![n])
        })
        .collect::<PyResult<Vec<_>>>()?;
    d.set_item("out", outs)?;
    if next_norm.is_some() {
        let (n, b) = (res.xw.len(), res.parts.len());
        d.set_item("xw", to_numpy(py, res.xw, vec![n])?)?;
        d.set_item("parts", to_numpy(py, res.parts, vec![b])?)?;
    }
    if let Some(r) = rope.as_ref().filter(|_| epilogue == "qkv_rope") {
        let shape = vec![r.n_ctx, r.kv_heads * r.head_dim];
        d.set_item("k_cache", to_numpy(py, res.k_cache, shape.clone())?)?;
        d.set_item("v_cache", to_numpy(py, res.v_cache, shape)?)?;
    }
    d.set_item("kernel", res.kernel)?;
    Ok(d)
}

/// Create the native submodule `ops` of `m` (re-exported as `rocmforge.ops`).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let sub = PyModule::new(m.py(), "ops")?;
    sub.add_function(wrap_pyfunction!(qkt_matmul, &sub)?)?;
    sub.add_function(wrap_pyfunction!(scale_op, &sub)?)?;
    sub.add_function(wrap_pyfunction!(causal_mask, &sub)?)?;
    sub.add_function(wrap_pyfunction!(softmax, &sub)?)?;
    sub.add_function(wrap_pyfunction!(weighted_matmul, &sub)?)?;
    sub.add_function(wrap_pyfunction!(flash_attention, &sub)?)?;
    sub.add_function(wrap_pyfunction!(rope, &sub)?)?;
    sub.add_function(wrap_pyfunction!(swiglu, &sub)?)?;
    sub.add_function(wrap_pyfunction!(geglu, &sub)?)?;
    sub.add_function(wrap_pyfunction!(gelu, &sub)?)?;
    sub.add_function(wrap_pyfunction!(rms_norm, &sub)?)?;
    sub.add_function(wrap_pyfunction!(matmul, &sub)?)?;
    sub.add_function(wrap_pyfunction!(embedding, &sub)?)?;
    sub.add_function(wrap_pyfunction!(add, &sub)?)?;
    sub.add_function(wrap_pyfunction!(kv_append, &sub)?)?;
    sub.add_function(wrap_pyfunction!(argmax, &sub)?)?;
    sub.add_function(wrap_pyfunction!(sample, &sub)?)?;
    m.add_submodule(&sub)?;
    m.add_function(wrap_pyfunction!(gpu_matmul, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_matvec, m)?)?;
    Ok(())
}
