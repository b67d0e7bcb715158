//! GPU bindings: `devices()`, the per-device launch counter, and the device-side
//! micro-benchmark used by `bench/ops_bench.py`.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::IntoPy;
use crate::backend::gpu;

/// Every device found: the GPUs (in the order `device="gpu"` / `"auto"` take them), then the
/// CPU. Each is a dict: device ("gpu:0", "cpu"), name, backend ("cuda", "hip", "cpu"), arch,
/// memory_total and memory_free (bytes), warp_size, multiprocessors, launches (kernels run so
/// far). A GPU that fails to open is listed with an "error" entry.
#[pyfunction]
fn devices(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    let infos = py.detach(gpu::devices);
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
                d.set_item("warp_size", info.warp_size)?;
                d.set_item("multiprocessors", info.multiprocessors)?;
                d.set_item("launches", info.launches)?;
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
    py.detach(|| gpu::device(index).map(|d| d.launch_count()))
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
        gpu::default_device()
            .and_then(|dev| gpu::bench::bench_op(&dev, op, &params, dtype, warmup, iters))
    })
    .py()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_launch_count, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_bench, m)?)?;
    Ok(())
}
