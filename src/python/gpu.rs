//! GPU bindings: `devices()`, the per-device launch counter, and the device-side
//! micro-benchmark used by `bench/ops_bench.py`.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::IntoPy;
use crate::device::{self, gpu::DeviceBuffer};
use crate::ops::bench;

/// Every device found: the GPUs (in the order `device="gpu"` / `"auto"` take them), then the
/// CPU. Each is a dict: device ("gpu:0", "cpu"), name, backend ("cuda", "hip", "cpu"), arch,
/// memory_total and memory_free (bytes), memory_held (bytes rocmforge holds there),
/// warp_size, multiprocessors, launches (kernels run so far), tuning (the device's tuning
/// record, which models start from: see `Model(tuning=...)`). A GPU that fails to open is
/// listed with an "error" entry.
#[pyfunction]
fn devices(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    let infos = py.detach(device::devices);
    let mut out = Vec::new();
    for (i, info) in infos.into_iter().enumerate() {
        let d = PyDict::new(py);
        d.set_item("device", format!("gpu:{i}"))?;
        match info {
            Ok(info) => {
                d.set_item("name", info.name)?;
                d.set_item("backend", info.backend)?;
                d.set_item("arch", info.arch)?;
                d.set_item("memory_total", info.total_memory)?;
                d.set_item("memory_free", info.free_memory)?;
                d.set_item("memory_held", info.held_memory)?;
                d.set_item("warp_size", info.warp_size)?;
                d.set_item("multiprocessors", info.multiprocessors)?;
                d.set_item("launches", info.launches)?;
                d.set_item("tuning", super::model::tuning_dict(py, &info.tuning)?)?;
            }
            Err(e) => d.set_item("error", e.to_string())?,
        }
        out.push(d);
    }
    let cpu = PyDict::new(py);
    cpu.set_item("device", "cpu")?;
    cpu.set_item("name", "cpu")?;
    cpu.set_item("backend", "cpu")?;
    cpu.set_item(
        "threads",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    )?;
    out.push(cpu);
    Ok(out)
}

/// Kernels launched so far on GPU `index` (raises DeviceError when there is no such GPU).
#[pyfunction]
#[pyo3(signature = (index=0))]
fn gpu_launch_count(py: Python<'_>, index: usize) -> PyResult<u64> {
    py.detach(|| device::device(index).map(|d| d.launch_count()))
        .py()
}

/// Device times in milliseconds of `iters` runs of `op` on GPU 0 after `warmup` runs, inputs
/// random and resident on the device. `params`: the op's sizes; `dtype`: weight type for
/// matmul and embedding.
#[pyfunction]
#[pyo3(signature = (op, params, dtype="F32", warmup=5, iters=20))]
fn gpu_bench(
    py: Python<'_>,
    op: &str,
    params: HashMap<String, f64>,
    dtype: &str,
    warmup: usize,
    iters: usize,
) -> PyResult<Vec<f32>> {
    py.detach(|| {
        device::default_device()
            .and_then(|dev| bench::bench_op(&dev, op, &params, dtype, warmup, iters))
    })
    .py()
}

/// A size or a list of sizes (`rocmforge bench`'s `-p 512` or `-p 128,512`).
#[derive(FromPyObject)]
enum SizeList {
    One(usize),
    Many(Vec<usize>),
}

impl SizeList {
    fn into_vec(self) -> Vec<usize> {
        match self {
            SizeList::One(n) => vec![n],
            SizeList::Many(v) => v,
        }
    }
}

/// `rocmforge bench`: prompt-processing and generation speed of the model file `path` on
/// `device` (see `crate::bench`). `n_prompt`, `n_gen` and `depth` are lists of sizes (an int
/// is a list of one): a pp test per prompt size and a tg test per generation size, at each
/// depth (tokens already in the cache). Returns a dict: device, plan (the decode plan's
/// launches, a line a kind), file_bytes, model_size and model_n_params (all tensors, as
/// llama-bench counts them), bytes_per_token (weights a decode step reads),
/// kv_bytes_per_position, copy_bandwidth (bytes/s, read + write; 0 on the CPU),
/// peak_device_bytes, kv_cache_bytes, sampled (whether tg drew its tokens), and `tests`: per
/// test, with llama-bench's JSON names, test (`pp512`, `tg128 @ d4096`), n_prompt, n_gen,
/// n_depth, samples_ts (tokens/s of each repeat), avg_ts, stddev_ts, and roofline_ts (tg on a
/// GPU: the copy-bandwidth roofline, else None).
/// `tuning`: overrides of the device's tuning record for the model, as a dict. `sampled`: the
/// tg steps draw with llama.cpp's default sampling (temperature 0.8, top-k 40, top-p 0.95,
/// min-p 0.05) instead of picking greedily.
#[pyfunction]
#[pyo3(signature = (path, device="gpu", n_prompt=SizeList::One(512), n_gen=SizeList::One(128), repeats=3, tuning=None, sampled=false, depth=SizeList::One(0)),
       text_signature = "(path, device='gpu', n_prompt=512, n_gen=128, repeats=3, tuning=None, sampled=False, depth=0)")]
#[allow(clippy::too_many_arguments)]
fn bench_model<'py>(
    py: Python<'py>,
    path: &str,
    device: &str,
    n_prompt: SizeList,
    n_gen: SizeList,
    repeats: usize,
    tuning: Option<&Bound<'py, PyDict>>,
    sampled: bool,
    depth: SizeList,
) -> PyResult<Bound<'py, PyDict>> {
    let tuning = super::model::tuning_pairs(tuning)?;
    let sampling = sampled.then(crate::ops::sampling::SampleParams::default);
    let (n_prompt, n_gen, depth) = (n_prompt.into_vec(), n_gen.into_vec(), depth.into_vec());
    let r = py
        .detach(|| {
            crate::bench::bench_model(
                path,
                device,
                &n_prompt,
                &n_gen,
                &depth,
                repeats,
                &tuning,
                sampling.as_ref(),
            )
        })
        .py()?;
    let d = PyDict::new(py);
    d.set_item("device", &r.device)?;
    d.set_item("plan", &r.plan)?;
    d.set_item("file_bytes", r.file_bytes)?;
    d.set_item("model_size", r.model_bytes)?;
    d.set_item("model_n_params", r.n_params)?;
    d.set_item("bytes_per_token", r.bytes_per_token)?;
    d.set_item("kv_bytes_per_position", r.kv_bytes_per_position)?;
    d.set_item("copy_bandwidth", r.copy_bandwidth)?;
    d.set_item("peak_device_bytes", r.peak_device_bytes)?;
    d.set_item("kv_cache_bytes", r.kv_cache_bytes)?;
    d.set_item("sampled", r.sampling.is_some())?;
    let tests = PyList::empty(py);
    for t in &r.tests {
        let (avg, std) = crate::bench::mean_std(&t.runs);
        let e = PyDict::new(py);
        let pp = t.kind == crate::bench::TestKind::Pp;
        e.set_item("test", t.name())?;
        e.set_item("n_prompt", if pp { t.n_tokens } else { 0 })?;
        e.set_item("n_gen", if pp { 0 } else { t.n_tokens })?;
        e.set_item("n_depth", t.depth)?;
        e.set_item("samples_ts", &t.runs)?;
        e.set_item("avg_ts", avg)?;
        e.set_item("stddev_ts", std)?;
        e.set_item("roofline_ts", r.roofline(t))?;
        tests.append(e)?;
    }
    d.set_item("tests", tests)?;
    Ok(d)
}

/// Test support: `nbytes` of device memory on GPU `index`, held until `close()` (or until the
/// object is collected), so tests can see what happens when the device is nearly full.
#[pyclass(name = "_GpuBallast", module = "rocmforge._rocmforge")]
struct GpuBallast {
    buf: Option<DeviceBuffer>,
}

#[pymethods]
impl GpuBallast {
    #[new]
    #[pyo3(signature = (nbytes, index=0))]
    fn new(py: Python<'_>, nbytes: usize, index: usize) -> PyResult<Self> {
        let buf = py
            .detach(|| {
                device::device(index).and_then(|d| DeviceBuffer::alloc(&d, nbytes, "ballast"))
            })
            .py()?;
        Ok(GpuBallast { buf: Some(buf) })
    }

    /// Bytes held (0 once closed).
    #[getter]
    fn nbytes(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.bytes())
    }

    /// Give the memory back (idempotent).
    fn close(&mut self) {
        self.buf = None;
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<GpuBallast>()?;
    m.add_function(wrap_pyfunction!(bench_model, m)?)?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_launch_count, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_bench, m)?)?;
    Ok(())
}
