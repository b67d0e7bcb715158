//! GPU launch of `kernels/matmul.hip`: `out[m, n] = x[m, k] @ dequant(W)[n, k]^T`, W kept in
//! its GGUF type in device memory.

use std::sync::Arc;

use crate::backend::gpu::device::{need, to_device_layout, to_i32};
use crate::backend::gpu::{kernels, Arg, DeviceBuffer, GpuDevice};
use crate::error::Result;
use crate::gguf::GgmlType;
use crate::ops::embedding::gpu::DeviceWeight;
use crate::ops::WeightView;

/// Rows of x up to which the matrix-vector kernel is used (matmul.hip, MATVEC_MAX_M).
pub const MATVEC_MAX_M: usize = 8;
/// Weight rows per matrix-vector block (256 threads, one 32-lane group per row).
const MATVEC_ROWS_PER_BLOCK: usize = 8;
/// Block size of the m = 1 kernels (matmul.hip: MV_GROUPS groups of 32 lanes splitting k).
const MATVEC_FAST_THREADS: u32 = 4 * 32;
/// Output tile of the tiled kernel.
const TILE: usize = 64;

/// The m = 1 kernels can be switched off with `ROCMFORGE_NO_FAST_MATVEC=1`, and their rows
/// per block chosen with `ROCMFORGE_MATVEC_ROWS` (1, 2, 4), both read once, so that
/// benchmarks can compare them in one process. Defaults: the fastest on an H200 at Llama-3-8B's
/// shapes (bench/NOTES.md): 2 rows for Q4_0, 1 for Q8_0.
fn fast_matvec_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("ROCMFORGE_NO_FAST_MATVEC").is_none_or(|v| v != "1"))
}
fn fast_matvec_rows(ty: GgmlType) -> usize {
    static ROWS: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let chosen = *ROWS.get_or_init(|| {
        std::env::var("ROCMFORGE_MATVEC_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|r| kernels::MATVEC_FAST_ROWS.contains(r))
    });
    chosen.unwrap_or(if ty == GgmlType::Q8_0 { 1 } else { 2 })
}

pub fn launch_matmul(
    dev: &GpuDevice,
    x: &DeviceBuffer,
    w: &DeviceWeight,
    m: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    let (n, k) = (w.rows, w.cols);
    need("matmul", "x", x, m * k, 4)?;
    need("matmul", "weight", w.bytes, n * w.row_bytes(), 1)?;
    need("matmul", "out", out, m * n, 4)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if m == 1 && k % 32 == 0 && w.row_bytes() % 4 == 0 && fast_matvec_enabled() {
        let rows_per_block = fast_matvec_rows(w.ty);
        if let Some(kernel) = kernels::matvec_fast(w.ty, rows_per_block) {
            let args = [
                x.arg(),
                w.bytes.arg(),
                out.arg(),
                Arg::I32(to_i32(n, "matmul n")?),
                Arg::I32(to_i32(k, "matmul k")?),
                Arg::I64(w.row_bytes() as i64),
            ];
            let blocks = n.div_ceil(rows_per_block) as u32;
            return dev.launch(
                "matmul",
                &kernel,
                [blocks, 1, 1],
                [MATVEC_FAST_THREADS, 1, 1],
                0,
                &args,
            );
        }
    }
    let args = [
        x.arg(),
        w.bytes.arg(),
        out.arg(),
        Arg::I32(to_i32(m, "matmul m")?),
        Arg::I32(to_i32(n, "matmul n")?),
        Arg::I32(to_i32(k, "matmul k")?),
        Arg::I64(w.row_bytes() as i64),
    ];
    if m <= MATVEC_MAX_M {
        let blocks = n.div_ceil(MATVEC_ROWS_PER_BLOCK);
        // x staged in shared memory (chunks of 32 padded to 33 floats) when it fits.
        let staged_bytes = m * k.div_ceil(32) * 33 * 4;
        let float_path = w.ty.block_size() == 1 && k % 4 == 0; // matmul.hip: no staging there
        let staged = !float_path && staged_bytes <= dev.runtime().props().max_shared_per_block;
        let mut args = args.to_vec();
        args.push(Arg::I32(staged as i32));
        let shared = if staged { staged_bytes as u32 } else { 0 };
        dev.launch(
            "matmul",
            &kernels::matvec(w.ty)?,
            [blocks as u32, 1, 1],
            [32 * MATVEC_ROWS_PER_BLOCK as u32, 1, 1],
            shared,
            &args,
        )
    } else {
        let grid = [n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, 1];
        dev.launch(
            "matmul",
            &kernels::matmul_tiled(w.ty)?,
            grid,
            [256, 1, 1],
            0,
            &args,
        )
    }
}

/// Whether the fused m = 1 kernels (`matvec_multi`, `matvec_swiglu`) can take weight `w`.
fn fused_matvec_ok(w: &DeviceWeight) -> bool {
    w.cols % 32 == 0
        && w.row_bytes() % 4 == 0
        && fast_matvec_enabled()
        && kernels::matvec_swiglu(w.ty).is_some()
}

/// One matrix of a fused m = 1 launch: `out[r] (+)= x . w[r] (+ bias[r])`.
pub struct Projection<'a> {
    pub w: DeviceWeight<'a>,
    /// F32 `[w.rows]`.
    pub bias: Option<&'a DeviceBuffer>,
    pub out: &'a mut DeviceBuffer,
}

/// Up to three m = 1 projections of x in one launch (matmul.hip `matvec_multi`), each
/// `out = x @ w^T (+ bias)`, added to what `out` holds when `accumulate`. Returns false,
/// launching nothing, where the fused kernel does not apply (weight types that differ or
/// have no fast kernel, k not a multiple of 32): the caller then runs the unfused ops.
pub fn launch_matvec_multi(
    dev: &GpuDevice,
    x: &DeviceBuffer,
    parts: &mut [Projection],
    accumulate: bool,
) -> Result<bool> {
    let Some(first) = parts.first() else {
        return Ok(true);
    };
    let (ty, k, row_bytes) = (first.w.ty, first.w.cols, first.w.row_bytes());
    if parts.len() > 3
        || !parts
            .iter()
            .all(|p| p.w.ty == ty && p.w.cols == k && fused_matvec_ok(&p.w))
    {
        return Ok(false);
    }
    need("matmul", "x", x, k, 4)?;
    for p in parts.iter() {
        need("matmul", "weight", p.w.bytes, p.w.rows * row_bytes, 1)?;
        need("matmul", "out", p.out, p.w.rows, 4)?;
        if let Some(b) = p.bias {
            need("matmul", "bias", b, p.w.rows, 4)?;
        }
    }
    let rows_per_block = fast_matvec_rows(ty);
    let kernel = kernels::matvec_multi(ty, rows_per_block).expect("fast type");
    let mut args = vec![
        x.arg(),
        Arg::I32(to_i32(k, "matmul k")?),
        Arg::I64(row_bytes as i64),
        Arg::I32(accumulate as i32),
    ];
    let mut blocks = 0;
    for i in 0..3 {
        match parts.get(i) {
            Some(p) => {
                args.extend([
                    p.w.bytes.arg(),
                    p.out.arg(),
                    p.bias.map_or(Arg::Ptr(0), |b| b.arg()),
                    Arg::I32(to_i32(p.w.rows, "matmul n")?),
                ]);
                blocks += p.w.rows.div_ceil(rows_per_block);
            }
            None => args.extend([Arg::Ptr(0), Arg::Ptr(0), Arg::Ptr(0), Arg::I32(0)]),
        }
    }
    if blocks == 0 {
        return Ok(true);
    }
    dev.launch(
        "matmul",
        &kernel,
        [to_i32(blocks, "matmul blocks")? as u32, 1, 1],
        [MATVEC_FAST_THREADS, 1, 1],
        0,
        &args,
    )?;
    Ok(true)
}

/// `out[r] = silu(x . w_gate[r]) * (x . w_up[r])` for m = 1 in one launch (matmul.hip
/// `matvec_swiglu`). Returns false, launching nothing, where the fused kernel does not apply.
pub fn launch_matvec_swiglu(
    dev: &GpuDevice,
    x: &DeviceBuffer,
    w_gate: &DeviceWeight,
    w_up: &DeviceWeight,
    out: &mut DeviceBuffer,
) -> Result<bool> {
    let (n, k) = (w_gate.rows, w_gate.cols);
    if w_up.ty != w_gate.ty || w_up.rows != n || w_up.cols != k || !fused_matvec_ok(w_gate) {
        return Ok(false);
    }
    need("matmul", "x", x, k, 4)?;
    need(
        "matmul",
        "gate weight",
        w_gate.bytes,
        n * w_gate.row_bytes(),
        1,
    )?;
    need("matmul", "up weight", w_up.bytes, n * w_up.row_bytes(), 1)?;
    need("matmul", "out", out, n, 4)?;
    if n == 0 {
        return Ok(true);
    }
    dev.launch(
        "matmul",
        &kernels::matvec_swiglu(w_gate.ty).expect("fast type"),
        [to_i32(n, "matmul n")? as u32, 1, 1],
        [MATVEC_FAST_THREADS, 1, 1],
        0,
        &[
            x.arg(),
            w_gate.bytes.arg(),
            w_up.bytes.arg(),
            out.arg(),
            Arg::I32(to_i32(n, "matmul n")?),
            Arg::I32(to_i32(k, "matmul k")?),
            Arg::I64(w_gate.row_bytes() as i64),
        ],
    )?;
    Ok(true)
}

#[allow(clippy::too_many_arguments)]
fn run(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    ty: GgmlType,
    n: usize,
    k: usize,
    bytes: &[u8],
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    let xd = DeviceBuffer::from_slice(dev, &x[..m * k], "matmul")?;
    let wd = DeviceBuffer::from_slice(dev, &to_device_layout(ty, k, bytes), "matmul")?;
    let mut od = DeviceBuffer::alloc(dev, m * n * 4, "matmul")?;
    launch_matmul(
        dev,
        &xd,
        &DeviceWeight {
            ty,
            rows: n,
            cols: k,
            bytes: &wd,
        },
        m,
        &mut od,
    )?;
    od.read(&mut out[..m * n], "matmul")
}

/// `out[m, n] = x[m, k] @ w[n, k]^T`, all float32 host arrays.
pub fn matmul_f32(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) -> Result<()> {
    // SAFETY: f32 is plain data; the byte view covers exactly w[..n * k].
    let bytes = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, n * k * 4) };
    run(dev, x, GgmlType::F32, n, k, bytes, m, out)
}

/// `out[m, n] = x[m, k] @ dequant(w)[n, k]^T`, w in its GGUF type.
pub fn matmul_gguf(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    w: &WeightView,
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    kernels::matvec(w.ty)?; // an unsupported type fails before any upload
    run(dev, x, w.ty, w.rows, w.cols, w.bytes, m, out)
}
