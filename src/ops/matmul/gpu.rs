//! GPU launch of `kernels/matmul.hip`: `out[m, n] = x[m, k] @ dequant(W)[n, k]^T`, W kept in
//! its GGUF type in device memory; the model's decode matvecs (kernels/matvec.hip) are
//! launched by `super::decode`, re-exported here.

use std::sync::Arc;

use crate::device::gpu::{need, to_i32, Arg, DeviceBuffer, GpuDevice};
use crate::device::kernels;
use crate::device::layout::{to_device_layout, DeviceWeight};
use crate::device::tuning::Tuning;
use crate::error::Result;
use crate::gguf::GgmlType;
use crate::ops::WeightView;

// The decode matvec family (kernels/matvec.hip) and its testing hook.
pub use super::decode::{
    decode_glu_fits, decode_matvec_fits, decode_qkv_rope_fits, fused_norm_pays, launch_matvec,
    launch_matvec_glu, launch_matvec_multi, launch_matvec_multi_blocks, launch_matvec_qkv_rope,
    stream_stages, NormIn, NormOut, Projection, QkvRope, Residual, RmsNorm, STREAM_3_STAGES_FROM,
};

/// Rows of x up to which the matrix-vector kernel is used (matmul.hip, MATVEC_MAX_M).
pub const MATVEC_MAX_M: usize = 8;
/// Weight rows per matrix-vector block (256 threads, one 32-lane group per row).
const MATVEC_ROWS_PER_BLOCK: usize = 8;
/// Output tile of the tiled kernel.
const TILE: usize = 64;

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

// ------------------------------------------------------------------------------------------
// The model's matmul: tensor cores for prefill.

/// Columns of out per tensor-core block (matmul.hip, MMA_BN), and k per step (MMA_BK).
const MMA_BN: usize = 128;
const MMA_BK: usize = 64;
/// Shared row length in f16 (matmul.hip, MMA_LD).
const MMA_LD: usize = 72;

/// Whether the model's matmul may use the tensor-core kernel on `dev`: NVIDIA sm_80 or newer
/// (`mma.sync` m16n8k16), AMD targets with matrix cores (WMMA on RDNA3 / RDNA4, MFMA on CDNA2 /
/// CDNA3: `kernels::amd_matrix_cores`), and the CPU emulation (which runs the NVIDIA form's
/// portable fallback, or an AMD form where it emulates that target). Other AMD targets keep
/// the float32 tiled kernels. `tuning.mma` off keeps the float32 kernels everywhere.
pub fn mma_available(dev: &GpuDevice, tuning: &Tuning) -> bool {
    let rt = dev.runtime();
    tuning.mma
        && match rt.backend() {
            "cuda" => rt
                .props()
                .arch
                .strip_prefix("sm_")
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|v| v >= 80),
            "hip" => kernels::amd_matrix_cores(&rt.props().arch),
            "emulator" => true,
            _ => false,
        }
}

/// The row tiles of the tensor-core kernels that `dev` has.
fn mma_row_tiles(dev: &GpuDevice) -> &'static [usize] {
    if dev.amd_matrix_cores() {
        &kernels::MMA_ROW_TILES_AMD
    } else {
        &kernels::MMA_ROW_TILES
    }
}

/// Dynamic shared memory of a tensor-core block with row tile `bm` (double-buffered x and W
/// tiles of f16).
fn mma_shared_bytes(bm: usize) -> usize {
    2 * (bm + MMA_BN) * MMA_LD * 2
}

/// Row tile for an m x n product: 128 when its blocks fill at least 90% of the
/// multiprocessors in one wave (fewer, larger tiles: each weight tile is dequantized fewer
/// times), else 64; only tiles whose shared memory fits (measured on an H200,
/// docs/perf). `tuning.mma_tile_rows` forces one where it fits.
fn mma_row_tile(dev: &GpuDevice, tuning: &Tuning, m: usize, n: usize) -> usize {
    let props = dev.runtime().props();
    let fits = |bm: usize| {
        mma_row_tiles(dev).contains(&bm) && mma_shared_bytes(bm) <= props.max_shared_per_block
    };
    if let Some(bm) = tuning.mma_tile_rows.filter(|&b| fits(b)) {
        return bm;
    }
    let blocks128 = m.div_ceil(128) * n.div_ceil(MMA_BN);
    if fits(128) && blocks128 * 10 >= props.multiprocessors as usize * 9 {
        128
    } else {
        64
    }
}

/// Device scratch the tensor-core path takes for m rows of k (any row tile): x as f16 with
/// its rows padded to the largest tile and k to MMA_BK, then one float a row.
pub fn mma_scratch_bytes(m: usize, k: usize) -> usize {
    let mp = m.div_ceil(128) * 128;
    mp * k.div_ceil(MMA_BK) * MMA_BK * 2 + mp * 4
}

/// `out[m, n] = x[m, k] @ dequant(W)[n, k]^T` on tensor cores (matmul.hip, `mma_prep_x` then
/// `matmul_mma_<type>_m<bm>`): x rounded to f16 after a per-row power-of-two scale (no
/// overflow whatever its range), W dequantized to f16, f32 accumulation; the error is that of
/// f16 inputs (relative ~2^-10 of sum |x| |w| per output), not the 1e-5 of `launch_matmul`.
/// On AMD matrix cores bf16 weights are multiplied as bf16 (exact weights, x to bf16:
/// relative ~2^-9 of sum |x| |w|).
/// Errors where `mma_available` is false.
pub fn launch_matmul_mma(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    w: &DeviceWeight,
    m: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    launch_matmul_mma_tile(dev, tuning, x, w, m, out, None)
}

/// `launch_matmul_mma` with the row tile `bm` (64 or 128) chosen by the caller, or by
/// `mma_row_tile` when None.
pub fn launch_matmul_mma_tile(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    w: &DeviceWeight,
    m: usize,
    out: &mut DeviceBuffer,
    bm: Option<usize>,
) -> Result<()> {
    let (n, k) = (w.rows, w.cols);
    if let Some(b) = bm {
        if !mma_row_tiles(dev).contains(&b)
            || mma_shared_bytes(b) > dev.runtime().props().max_shared_per_block
        {
            return Err(crate::error::Error::invalid(format!(
                "matmul: row tile {b} is not available on {}",
                dev.name()
            )));
        }
    }
    need("matmul", "x", x, m * k, 4)?;
    need("matmul", "weight", w.bytes, n * w.row_bytes(), 1)?;
    need("matmul", "out", out, m * n, 4)?;
    if !mma_available(dev, tuning) {
        return Err(crate::error::Error::unsupported(format!(
            "matmul: no tensor-core kernel on {} ({})",
            dev.name(),
            dev.runtime().props().arch
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let bm = bm.unwrap_or_else(|| mma_row_tile(dev, tuning, m, n));
    let (mp, kp) = (m.div_ceil(bm) * bm, k.div_ceil(MMA_BK) * MMA_BK);
    let xh_bytes = mp * kp * 2;
    debug_assert!(xh_bytes + mp * 4 <= mma_scratch_bytes(m, k));
    let scratch = dev.scratch(xh_bytes + mp * 4, "matmul")?;
    let (xh, inv) = (scratch.ptr(), scratch.ptr() + xh_bytes as u64);
    // bf16 weights on AMD matrix cores are multiplied as bf16 (matmul.hip, mma_bf16): x too.
    let prep = if dev.amd_matrix_cores() && w.ty == GgmlType::BF16 {
        kernels::mma_prep_x_bf16()
    } else {
        kernels::mma_prep_x()
    };
    dev.launch(
        "matmul",
        &prep,
        [to_i32(mp, "matmul m")? as u32, 1, 1],
        [256, 1, 1],
        0,
        &[
            x.arg(),
            Arg::Ptr(xh),
            Arg::Ptr(inv),
            Arg::I32(to_i32(m, "matmul m")?),
            Arg::I32(to_i32(k, "matmul k")?),
            Arg::I32(to_i32(kp, "matmul k")?),
        ],
    )?;
    dev.launch(
        "matmul",
        &kernels::matmul_mma(w.ty, bm)?,
        [n.div_ceil(MMA_BN) as u32, (mp / bm) as u32, 1],
        [256, 1, 1],
        mma_shared_bytes(bm) as u32,
        &[
            Arg::Ptr(xh),
            Arg::Ptr(inv),
            w.bytes.arg(),
            out.arg(),
            Arg::I32(to_i32(m, "matmul m")?),
            Arg::I32(to_i32(n, "matmul n")?),
            Arg::I32(to_i32(k, "matmul k")?),
            Arg::I32(to_i32(kp, "matmul k")?),
            Arg::I64(w.row_bytes() as i64),
        ],
    )
}

/// The model's matmul (`Backend::matmul` of the GPU backend): the tensor-core kernel from
/// `tuning.mma_min_rows` rows where `mma_available`, the decode matvec family (8-bit x,
/// kernels/matvec.hip) at m = 1 where it takes `w`, else `launch_matmul` (exact to float32
/// rounding; the op `rocmforge.ops.matmul` always takes that one). F32 weights keep the exact kernels: a file stored in F32 asks for float32
/// arithmetic, which f16 tiles would not give.
pub fn launch_matmul_model(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    w: &DeviceWeight,
    m: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    if m >= tuning.mma_min_rows && w.ty != GgmlType::F32 && mma_available(dev, tuning) {
        launch_matmul_mma(dev, tuning, x, w, m, out)
    } else if m == 1 && decode_matvec_fits(w) && launch_matvec(dev, tuning, x, w, out)? {
        Ok(())
    } else {
        launch_matmul(dev, x, w, m, out)
    }
}

/// Which kernel family `matmul_gguf_path` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulPath {
    /// `launch_matmul` (the op's path).
    Exact,
    /// `launch_matmul_model` (the model's choice).
    Model,
    /// `launch_matmul_mma`.
    TensorCores,
}

/// `matmul_gguf` through the chosen path (tests and benchmarks of the model's matmul).
pub fn matmul_gguf_path(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    w: &WeightView,
    m: usize,
    out: &mut [f32],
    path: MatmulPath,
) -> Result<()> {
    kernels::matvec(w.ty)?;
    run_path(dev, x, w.ty, w.rows, w.cols, w.bytes, m, out, path)
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
    run_path(dev, x, ty, n, k, bytes, m, out, MatmulPath::Exact)
}

#[allow(clippy::too_many_arguments)]
fn run_path(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    ty: GgmlType,
    n: usize,
    k: usize,
    bytes: &[u8],
    m: usize,
    out: &mut [f32],
    path: MatmulPath,
) -> Result<()> {
    let xd = DeviceBuffer::from_slice(dev, &x[..m * k], "matmul")?;
    let wd = DeviceBuffer::from_slice(dev, &to_device_layout(ty, k, bytes), "matmul")?;
    let mut od = DeviceBuffer::alloc(dev, m * n * 4, "matmul")?;
    let w = DeviceWeight {
        ty,
        rows: n,
        cols: k,
        bytes: &wd,
    };
    match path {
        MatmulPath::Exact => launch_matmul(dev, &xd, &w, m, &mut od)?,
        MatmulPath::Model => launch_matmul_model(dev, dev.tuning(), &xd, &w, m, &mut od)?,
        MatmulPath::TensorCores => launch_matmul_mma(dev, dev.tuning(), &xd, &w, m, &mut od)?,
    }
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
