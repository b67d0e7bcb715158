//! The registry of kernels: which file (`Family`) holds which `extern "C"` kernel. Launchers get
//! every name from the functions here, and `all()` enumerates the same functions, so the CI
//! compile gate checks exactly the kernels the launchers can ask for.

use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;

include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

/// One kernel file under `kernels/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Activation,
    Argmax,
    Attention,
    Elementwise,
    Embedding,
    KvCache,
    Matmul,
    Norm,
    Rope,
}

impl Family {
    pub const ALL: [Family; 9] = [
        Family::Activation,
        Family::Argmax,
        Family::Attention,
        Family::Elementwise,
        Family::Embedding,
        Family::KvCache,
        Family::Matmul,
        Family::Norm,
        Family::Rope,
    ];

    pub fn file(self) -> &'static str {
        match self {
            Family::Activation => "activation.hip",
            Family::Argmax => "argmax.hip",
            Family::Attention => "attention.hip",
            Family::Elementwise => "elementwise.hip",
            Family::Embedding => "embedding.hip",
            Family::KvCache => "kv_cache.hip",
            Family::Matmul => "matmul.hip",
            Family::Norm => "norm.hip",
            Family::Rope => "rope.hip",
        }
    }

    /// The self-contained source of this file (headers inlined).
    pub fn source(self) -> Result<String> {
        super::source::assemble(self.file(), KERNEL_SOURCES).map_err(Error::runtime)
    }
}

/// A kernel: the file it lives in and its unmangled name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub family: Family,
    pub name: String,
    /// The kernel calls `rf_grid_wait` (kernels/common.h) before it touches anything an earlier
    /// kernel writes or reads (before it, it may only read weights), so it may be launched to
    /// overlap the end of the kernel before it. These are the decode step's kernels.
    pub overlaps: bool,
}

fn k(family: Family, name: impl Into<String>) -> Kernel {
    Kernel {
        family,
        name: name.into(),
        overlaps: false,
    }
}

/// `k` for a kernel that calls `rf_grid_wait` first (`Kernel::overlaps`).
fn k_overlapping(family: Family, name: impl Into<String>) -> Kernel {
    Kernel {
        overlaps: true,
        ..k(family, name)
    }
}

pub fn rms_norm() -> Kernel {
    k_overlapping(Family::Norm, "rms_norm_f32")
}
pub fn rope() -> Kernel {
    k(Family::Rope, "rope_f32")
}
/// Rope of q and k plus the KV-cache append of k and v, for a cache of `dtype`.
pub fn rope_kv(dtype: KvDtype) -> Kernel {
    k_overlapping(Family::Rope, format!("rope_kv_{}", dtype.name()))
}
/// The gated activation `act(gate) * up` (`Activation` by its op name: swiglu, geglu).
pub fn glu(act_glu_name: &str) -> Kernel {
    k_overlapping(Family::Activation, format!("{act_glu_name}_f32"))
}
pub fn add() -> Kernel {
    k_overlapping(Family::Elementwise, "add_f32")
}
pub fn add_bias() -> Kernel {
    k(Family::Elementwise, "add_bias_f32")
}
pub fn scale() -> Kernel {
    k(Family::Elementwise, "scale_f32")
}
pub fn softcap() -> Kernel {
    k_overlapping(Family::Elementwise, "softcap_f32")
}
pub fn argmax() -> Kernel {
    k_overlapping(Family::Argmax, "argmax_f32")
}
pub fn kv_append(dtype: KvDtype) -> Kernel {
    k_overlapping(Family::KvCache, format!("kv_append_{}", dtype.name()))
}
pub fn qkt_matmul() -> Kernel {
    k(Family::Attention, "qkt_matmul_f32")
}
pub fn weighted_matmul() -> Kernel {
    k(Family::Attention, "weighted_matmul_f32")
}
pub fn causal_mask() -> Kernel {
    k(Family::Attention, "causal_mask_f32")
}
pub fn softmax() -> Kernel {
    k(Family::Attention, "softmax_f32")
}
pub fn flash_combine() -> Kernel {
    k_overlapping(Family::Attention, "flash_attn_combine")
}

/// Weight types the GPU runs on (kept in their GGUF layout in device memory), with the kernel
/// name suffix of each (`kernels/quants.h`, `RF_FOR_EACH_WEIGHT_TYPE`).
pub const WEIGHT_TYPES: [(GgmlType, &str); 14] = [
    (GgmlType::F32, "f32"),
    (GgmlType::F16, "f16"),
    (GgmlType::BF16, "bf16"),
    (GgmlType::Q4_0, "q4_0"),
    (GgmlType::Q4_1, "q4_1"),
    (GgmlType::Q5_0, "q5_0"),
    (GgmlType::Q5_1, "q5_1"),
    (GgmlType::Q8_0, "q8_0"),
    (GgmlType::Q4_K, "q4_K"),
    (GgmlType::Q5_K, "q5_K"),
    (GgmlType::Q6_K, "q6_K"),
    (GgmlType::Q2_K, "q2_K"),
    (GgmlType::Q3_K, "q3_K"),
    (GgmlType::Q8_K, "q8_K"),
];

fn weight_suffix(ty: GgmlType, op: &str) -> Result<&'static str> {
    WEIGHT_TYPES
        .iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            Error::unsupported(format!(
                "{op} on the GPU does not support weight type {} (supported: {})",
                ty.name(),
                WEIGHT_TYPES
                    .iter()
                    .map(|(t, _)| t.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

pub fn matvec(ty: GgmlType) -> Result<Kernel> {
    Ok(k(
        Family::Matmul,
        format!("matvec_{}", weight_suffix(ty, "matmul")?),
    ))
}
/// Weight rows per block the m = 1 decode kernels come in (matmul.hip, matvec_fast).
pub const MATVEC_FAST_ROWS: [usize; 3] = [1, 2, 4];

/// The suffix of the types that have m = 1 fast kernels.
fn fast_suffix(ty: GgmlType) -> Option<&'static str> {
    match ty {
        GgmlType::Q4_0 => Some("q4_0"),
        GgmlType::Q8_0 => Some("q8_0"),
        _ => None,
    }
}

/// The m = 1 decode kernel of `ty` with `rows` weight rows per block (one of
/// `MATVEC_FAST_ROWS`), for the types that have one.
pub fn matvec_fast(ty: GgmlType, rows: usize) -> Option<Kernel> {
    let suffix = fast_suffix(ty)?;
    MATVEC_FAST_ROWS
        .contains(&rows)
        .then(|| k(Family::Matmul, format!("matvec_fast_{suffix}_r{rows}")))
}

/// The fused m = 1 projections (up to three matrices, bias, accumulate) of `ty`.
pub fn matvec_multi(ty: GgmlType, rows: usize) -> Option<Kernel> {
    let suffix = fast_suffix(ty)?;
    MATVEC_FAST_ROWS
        .contains(&rows)
        .then(|| k(Family::Matmul, format!("matvec_multi_{suffix}_r{rows}")))
}

/// The fused m = 1 gate/up projections with SwiGLU of `ty`.
pub fn matvec_swiglu(ty: GgmlType) -> Option<Kernel> {
    fast_suffix(ty).map(|suffix| k(Family::Matmul, format!("matvec_swiglu_{suffix}")))
}
/// Weight rows per block the wide m = 1 kernels come in (matmul.hip, matvec_wide).
pub const MATVEC_WIDE_ROWS: [usize; 5] = [1, 2, 4, 8, 16];
/// Rows of each matrix per block the wide gate/up + SwiGLU kernel comes in.
pub const MATVEC_WIDE_SWIGLU_ROWS: [usize; 4] = [1, 2, 4, 8];

/// `matvec_wide{form}_[q8x_]<type>_r<rows>` where `rows` is one of `allowed`.
fn wide_kernel(
    form: &str,
    ty: GgmlType,
    rows: usize,
    q8x: bool,
    allowed: &[usize],
) -> Option<Kernel> {
    let suffix = fast_suffix(ty)?;
    let x = if q8x { "q8x_" } else { "" };
    allowed.contains(&rows).then(|| {
        k_overlapping(
            Family::Matmul,
            format!("matvec_wide{form}_{x}{suffix}_r{rows}"),
        )
    })
}

/// The wide m = 1 decode kernel of `ty` (16-byte quant loads, x shared by the block's rows)
/// with `rows` weight rows per block (one of `MATVEC_WIDE_ROWS`); with `q8x`, the form that
/// quantizes x to 8 bits in registers and takes integer dot products (the model's decode).
pub fn matvec_wide(ty: GgmlType, rows: usize, q8x: bool) -> Option<Kernel> {
    wide_kernel("", ty, rows, q8x, &MATVEC_WIDE_ROWS)
}

/// `matvec_multi` on the wide core (`q8x`: see `matvec_wide`).
pub fn matvec_wide_multi(ty: GgmlType, rows: usize, q8x: bool) -> Option<Kernel> {
    wide_kernel("_multi", ty, rows, q8x, &MATVEC_WIDE_ROWS)
}

/// `matvec_swiglu` on the wide core, `rows` rows of each matrix per block (`q8x`: see
/// `matvec_wide`).
pub fn matvec_wide_swiglu(ty: GgmlType, rows: usize, q8x: bool) -> Option<Kernel> {
    wide_kernel("_swiglu", ty, rows, q8x, &MATVEC_WIDE_SWIGLU_ROWS)
}
/// `matvec_wide(ty, 16, true)` with registers capped for 3 blocks per multiprocessor
/// (matmul.hip `*_r16_o3`), for rows a block reads in one pass.
pub fn matvec_wide_o3(ty: GgmlType) -> Option<Kernel> {
    let suffix = fast_suffix(ty)?;
    Some(k_overlapping(
        Family::Matmul,
        format!("matvec_wide_q8x_{suffix}_r16_o3"),
    ))
}

/// `matvec_wide_multi(ty, 16, true)`, registers capped as `matvec_wide_o3`.
pub fn matvec_wide_multi_o3(ty: GgmlType) -> Option<Kernel> {
    let suffix = fast_suffix(ty)?;
    Some(k_overlapping(
        Family::Matmul,
        format!("matvec_wide_multi_q8x_{suffix}_r16_o3"),
    ))
}

/// Rows per block the fused q/k/v + rope + KV-append kernels come in (matmul.hip,
/// matvec_qkv_rope).
pub const MATVEC_QKV_ROPE_ROWS: [usize; 4] = [2, 4, 8, 16];

/// The decode step's q/k/v projections of `ty` (8-bit x) with the rope and the append to
/// caches of `kv`, `rows` rows per block (one of `MATVEC_QKV_ROPE_ROWS`).
pub fn matvec_qkv_rope(ty: GgmlType, rows: usize, kv: KvDtype) -> Option<Kernel> {
    let suffix = fast_suffix(ty)?;
    MATVEC_QKV_ROPE_ROWS.contains(&rows).then(|| {
        k_overlapping(
            Family::Matmul,
            format!("matvec_qkv_rope_q8x_{suffix}_r{rows}_{}", kv.name()),
        )
    })
}
/// `matvec_qkv_rope(ty, 16, kv)`, registers capped as `matvec_wide_o3`.
pub fn matvec_qkv_rope_o3(ty: GgmlType, kv: KvDtype) -> Option<Kernel> {
    let suffix = fast_suffix(ty)?;
    Some(k_overlapping(
        Family::Matmul,
        format!("matvec_qkv_rope_q8x_{suffix}_r16_o3_{}", kv.name()),
    ))
}
/// Weight rows per group the streaming m = 1 kernels come in (matmul.hip, matvec_stream).
pub const MATVEC_STREAM_ROWS: [usize; 1] = [8];

/// The streaming gate/up + SwiGLU kernel of `ty` (8-bit x), `rows` weight rows (half of
/// each matrix) per group (one of `MATVEC_STREAM_ROWS`), `stages` groups' loads in flight
/// (2 or 3).
pub fn matvec_stream_swiglu(ty: GgmlType, rows: usize, stages: usize) -> Option<Kernel> {
    let suffix = fast_suffix(ty)?;
    let stages = match stages {
        2 => "",
        3 => "_s3",
        _ => return None,
    };
    MATVEC_STREAM_ROWS.contains(&rows).then(|| {
        k_overlapping(
            Family::Matmul,
            format!("matvec_stream_swiglu_q8x_{suffix}_r{rows}{stages}"),
        )
    })
}
pub fn matmul_tiled(ty: GgmlType) -> Result<Kernel> {
    Ok(k(
        Family::Matmul,
        format!("matmul_tiled_{}", weight_suffix(ty, "matmul")?),
    ))
}
/// Row tiles (BM) the tensor-core prefill kernels come in (matmul.hip, matmul_mma).
pub const MMA_ROW_TILES: [usize; 2] = [64, 128];

/// The tensor-core prefill kernel of `ty` with row tile `bm` (one of `MMA_ROW_TILES`).
pub fn matmul_mma(ty: GgmlType, bm: usize) -> Result<Kernel> {
    Ok(k(
        Family::Matmul,
        format!("matmul_mma_{}_m{bm}", weight_suffix(ty, "matmul")?),
    ))
}
/// The activation pre-pass of the tensor-core kernels (per-row power-of-two scale, f16).
pub fn mma_prep_x() -> Kernel {
    k(Family::Matmul, "mma_prep_x")
}
pub fn embedding(ty: GgmlType) -> Result<Kernel> {
    Ok(k_overlapping(
        Family::Embedding,
        format!("embedding_{}", weight_suffix(ty, "embedding")?),
    ))
}

/// Tile shape of a flash-attention kernel: head-dim capacity `dmax` (64, 128 or 256),
/// `rows_per_thread` (block of 16 * that query rows) and `cols_per_thread` (key tiles of
/// 16 * that keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlashShape {
    pub dmax: u32,
    pub rows_per_thread: u32,
    pub cols_per_thread: u32,
}

/// Threads per flash-attention block (16 x 16).
pub const FLASH_THREADS: u32 = 256;

impl FlashShape {
    pub const DMAXES: [u32; 3] = [64, 128, 256];
    /// (rows_per_thread, cols_per_thread) instantiated for every dmax (attention.hip,
    /// RF_FLASH_CONFIGS).
    pub const TILES: [(u32, u32); 3] = [(4, 4), (4, 2), (1, 2)];

    pub fn block_rows(self) -> u32 {
        16 * self.rows_per_thread
    }
    pub fn block_keys(self) -> u32 {
        16 * self.cols_per_thread
    }
    /// Dynamic shared memory of one block, bytes (attention.hip: Q, K-or-V and P tiles).
    pub fn shared_bytes(self) -> usize {
        let (bq, bk, d) = (
            self.block_rows() as usize,
            self.block_keys() as usize,
            self.dmax as usize,
        );
        4 * (bq * (d + 4) + bk * (d + 4) + bq * (bk + 4))
    }
    /// The smallest instantiated head-dim capacity holding `head_dim`.
    pub fn dmax_for(head_dim: usize) -> Option<u32> {
        Self::DMAXES
            .iter()
            .copied()
            .find(|&d| head_dim <= d as usize)
    }
}

pub fn flash(shape: FlashShape, kv: KvDtype) -> Kernel {
    k_overlapping(
        Family::Attention,
        format!(
            "flash_attn_d{}_q{}_k{}_{}",
            shape.dmax,
            shape.rows_per_thread,
            shape.cols_per_thread,
            kv.name()
        ),
    )
}

/// Head dims (exact) of the decode attention kernel for a cache of `kv` type (attention.hip
/// `attn_decode_*`: a lane's output dims whole 32-bit words, a round's loads in 128 registers).
pub fn attn_decode_head_dims(kv: KvDtype) -> &'static [usize] {
    match kv {
        KvDtype::F16 => &[64, 128],
        KvDtype::F32 => &[32, 64],
    }
}

/// The decode attention kernel (one query token) for `head_dim` and a cache of `kv` type, where
/// there is one (`attn_decode_head_dims`).
pub fn attn_decode(head_dim: usize, kv: KvDtype) -> Option<Kernel> {
    attn_decode_head_dims(kv).contains(&head_dim).then(|| {
        k_overlapping(
            Family::Attention,
            format!("attn_decode_d{head_dim}_{}", kv.name()),
        )
    })
}

/// The decode attention kernel with a block per query head (`attn_decode_head_*`, same head
/// sizes as `attn_decode`).
pub fn attn_decode_head(head_dim: usize, kv: KvDtype) -> Option<Kernel> {
    attn_decode_head_dims(kv).contains(&head_dim).then(|| {
        k_overlapping(
            Family::Attention,
            format!("attn_decode_head_d{head_dim}_{}", kv.name()),
        )
    })
}

/// Every kernel a launcher can name.
pub fn all() -> Vec<Kernel> {
    let mut out = vec![
        rms_norm(),
        rope(),
        rope_kv(KvDtype::F32),
        rope_kv(KvDtype::F16),
        glu("swiglu"),
        glu("geglu"),
        add(),
        add_bias(),
        scale(),
        softcap(),
        argmax(),
        kv_append(KvDtype::F32),
        kv_append(KvDtype::F16),
        qkt_matmul(),
        weighted_matmul(),
        causal_mask(),
        softmax(),
        flash_combine(),
        mma_prep_x(),
    ];
    for (ty, _) in WEIGHT_TYPES {
        out.push(matvec(ty).expect("registered type"));
        for rows in MATVEC_FAST_ROWS {
            out.extend(matvec_fast(ty, rows));
            out.extend(matvec_multi(ty, rows));
        }
        out.extend(matvec_swiglu(ty));
        for q8x in [false, true] {
            for rows in MATVEC_WIDE_ROWS {
                out.extend(matvec_wide(ty, rows, q8x));
                out.extend(matvec_wide_multi(ty, rows, q8x));
            }
            for rows in MATVEC_WIDE_SWIGLU_ROWS {
                out.extend(matvec_wide_swiglu(ty, rows, q8x));
            }
        }
        for rows in MATVEC_STREAM_ROWS {
            for stages in [2, 3] {
                out.extend(matvec_stream_swiglu(ty, rows, stages));
            }
        }
        for rows in MATVEC_QKV_ROPE_ROWS {
            for kv in [KvDtype::F32, KvDtype::F16] {
                out.extend(matvec_qkv_rope(ty, rows, kv));
            }
        }
        out.extend(matvec_wide_o3(ty));
        out.extend(matvec_wide_multi_o3(ty));
        for kv in [KvDtype::F32, KvDtype::F16] {
            out.extend(matvec_qkv_rope_o3(ty, kv));
        }
        out.push(matmul_tiled(ty).expect("registered type"));
        for bm in MMA_ROW_TILES {
            out.push(matmul_mma(ty, bm).expect("registered type"));
        }
        out.push(embedding(ty).expect("registered type"));
    }
    for kv in [KvDtype::F32, KvDtype::F16] {
        for &d in attn_decode_head_dims(kv) {
            out.extend(attn_decode(d, kv));
            out.extend(attn_decode_head(d, kv));
        }
    }
    for dmax in FlashShape::DMAXES {
        for (rows_per_thread, cols_per_thread) in FlashShape::TILES {
            for kv in [KvDtype::F32, KvDtype::F16] {
                out.push(flash(
                    FlashShape {
                        dmax,
                        rows_per_thread,
                        cols_per_thread,
                    },
                    kv,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_kernel_is_defined_in_its_file() {
        // The names are generated by macros in the sources; check that each family's source
        // holds the macro or the literal name (the compile gate checks the real symbols).
        for kern in all() {
            let src = kern.family.source().unwrap();
            let literal = src.contains(&format!("{}(", kern.name));
            let generated = src.contains("RF_FOR_EACH_WEIGHT_TYPE(")
                || src.contains("RF_FLASH_CONFIGS(")
                || src.contains("RF_MATVEC_MULTI(")
                || src.contains("RF_MATVEC_SWIGLU(")
                || src.contains("RF_MATVEC_QKV_ROPE(")
                || src.contains("RF_MATVEC_QKV_ROPE_O3(")
                || src.contains("RF_MATVEC_WIDE_O3(");
            assert!(
                literal || generated,
                "{} not found in {}",
                kern.name,
                kern.family.file()
            );
        }
    }

    #[test]
    fn assembled_sources_have_no_includes_left() {
        for fam in Family::ALL {
            let src = fam.source().unwrap();
            assert!(!src.contains("#include \""), "{}", fam.file());
            assert!(src.contains("RF_KERNEL"), "{}", fam.file());
        }
    }
}
