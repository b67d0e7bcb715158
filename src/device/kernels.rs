//! The registry of kernels: which file (`Family`) holds which `extern "C"` kernel. Launchers get
//! every name from the functions here, and `all()` enumerates the same functions, so the CI
//! compile gate checks exactly the kernels the launchers can ask for.

use super::matvec_table::{self, Shape};
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
    Matvec,
    Norm,
    Rope,
    Sampling,
}

impl Family {
    pub const ALL: [Family; 11] = [
        Family::Activation,
        Family::Argmax,
        Family::Attention,
        Family::Elementwise,
        Family::Embedding,
        Family::KvCache,
        Family::Matmul,
        Family::Matvec,
        Family::Norm,
        Family::Rope,
        Family::Sampling,
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
            Family::Matvec => "matvec.hip",
            Family::Norm => "norm.hip",
            Family::Rope => "rope.hip",
            Family::Sampling => "sampling.hip",
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
    /// Which AMD code objects hold the kernel (the others leave it out with `#if`, because no
    /// AMD launcher takes it there).
    pub amd: OnAmd,
    /// NVIDIA's code objects hold the kernel (false: AMD's and the emulator's only).
    pub on_nvidia: bool,
}

/// The AMD targets whose code objects hold a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OnAmd {
    All,
    /// Those with matrix cores (`amd_matrix_cores`): kernels on WMMA / MFMA (kernels/mma.h).
    MatrixCores,
    Never,
}

impl Kernel {
    /// Whether the code object of AMD target `arch` (`gfx1100`, `gfx90a:sramecc+:xnack-`)
    /// holds this kernel.
    pub fn on_amd(&self, arch: &str) -> bool {
        match self.amd {
            OnAmd::All => true,
            OnAmd::MatrixCores => amd_matrix_cores(arch),
            OnAmd::Never => false,
        }
    }
}

/// Whether AMD target `arch` has the matrix cores kernels/mma.h drives: WMMA on RDNA3 and
/// RDNA4 (gfx11, gfx12), MFMA on CDNA2 and CDNA3 (gfx90a, gfx940-942, gfx950). The same list
/// as mma.h's `RF_MATRIX_*` selection.
pub fn amd_matrix_cores(arch: &str) -> bool {
    let base = arch.split(':').next().unwrap_or("");
    base.starts_with("gfx11")
        || base.starts_with("gfx12")
        || matches!(base, "gfx90a" | "gfx940" | "gfx941" | "gfx942" | "gfx950")
}

fn k(family: Family, name: impl Into<String>) -> Kernel {
    Kernel {
        family,
        name: name.into(),
        overlaps: false,
        amd: OnAmd::All,
        on_nvidia: true,
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
/// The tanh form of GELU, element-wise (the same function as `glu("geglu")` applies to gate).
pub fn gelu() -> Kernel {
    k(Family::Activation, "gelu_f32")
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
/// Sampling of every row of a logits block (penalties, filters, draw, log-probabilities), for
/// blocks of `block` threads: blocks of up to 512 take the build bounded to 512 threads (more
/// registers a thread).
pub fn sample(block: usize) -> Kernel {
    if block <= 512 {
        k_overlapping(Family::Sampling, "sample_f32_block512")
    } else {
        k_overlapping(Family::Sampling, "sample_f32")
    }
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
pub const WEIGHT_TYPES: [(GgmlType, &str); 16] = [
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
    (GgmlType::IQ4_NL, "iq4_nl"),
    (GgmlType::IQ4_XS, "iq4_xs"),
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
/// The decode matvec kernel (kernels/matvec.hip, 8-bit x) of `ty` in `shape`, where the
/// family takes `ty` and the table (src/device/matvec_table.rs) has that shape.
pub fn matvec_decode(ty: GgmlType, shape: &Shape) -> Option<Kernel> {
    let t = matvec_type(ty)?;
    t.has(shape)
        .then(|| k_overlapping(Family::Matvec, shape.name(t.suffix)))
}

/// `ty`'s entry in the decode matvec table, if the family takes it.
fn matvec_type(ty: GgmlType) -> Option<matvec_table::Type> {
    let (_, suffix) = WEIGHT_TYPES.iter().find(|(t, _)| *t == ty)?;
    matvec_table::TYPES
        .iter()
        .find(|t| t.suffix == *suffix)
        .copied()
}

/// The most rows a block of `ty`'s row-block decode kernels takes (`Type::row_block_max`), if
/// the family takes `ty`.
pub fn matvec_row_block_max(ty: GgmlType) -> Option<usize> {
    matvec_type(ty).map(|t| t.row_block_max)
}

/// Whether the decode matvec family (kernels/matvec.hip) has kernels for `ty`.
pub fn matvec_decode_type(ty: GgmlType) -> bool {
    matvec_type(ty).is_some()
}

pub fn matmul_tiled(ty: GgmlType) -> Result<Kernel> {
    Ok(k(
        Family::Matmul,
        format!("matmul_tiled_{}", weight_suffix(ty, "matmul")?),
    ))
}
/// Row tiles (BM) the tensor-core prefill kernels come in (matmul.hip, matmul_mma).
pub const MMA_ROW_TILES: [usize; 2] = [64, 128];
/// The row tiles on AMD: the 128-row tile needs more shared memory than an AMD workgroup has.
pub const MMA_ROW_TILES_AMD: [usize; 1] = [64];

/// The tensor-core prefill kernel of `ty` with row tile `bm` (one of `MMA_ROW_TILES`): NVIDIA's
/// mma.sync, AMD's WMMA / MFMA (the 64-row tile, on the targets that have them), and the
/// emulator's forms of both.
pub fn matmul_mma(ty: GgmlType, bm: usize) -> Result<Kernel> {
    Ok(Kernel {
        amd: if MMA_ROW_TILES_AMD.contains(&bm) {
            OnAmd::MatrixCores
        } else {
            OnAmd::Never
        },
        ..k(
            Family::Matmul,
            format!("matmul_mma_{}_m{bm}", weight_suffix(ty, "matmul")?),
        )
    })
}
/// The activation pre-pass of the tensor-core kernels (per-row power-of-two scale, f16).
pub fn mma_prep_x() -> Kernel {
    k(Family::Matmul, "mma_prep_x")
}
/// `mma_prep_x` to bf16: for bf16 weights on AMD matrix cores, which multiply them as bf16.
pub fn mma_prep_x_bf16() -> Kernel {
    k(Family::Matmul, "mma_prep_x_bf16")
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

/// The key-tile factor (`cols_per_thread`: 16 CN keys) of the matrix-core flash kernel for
/// head-dim capacity `dmax`: 64 keys up to 128 dims, 32 at 256 (attention.hip).
pub fn flash_matrix_cols(dmax: u32) -> u32 {
    if dmax <= 128 {
        4
    } else {
        2
    }
}

/// The flash-attention kernel on AMD matrix cores for `dmax` (attention.hip,
/// flash_attn_mx_*): the tile of `FlashShape { dmax, 4, flash_matrix_cols(dmax) }`.
pub fn flash_matrix(dmax: u32, kv: KvDtype) -> Kernel {
    Kernel {
        amd: OnAmd::MatrixCores,
        on_nvidia: false,
        ..k_overlapping(
            Family::Attention,
            format!(
                "flash_attn_mx_d{dmax}_k{}_{}",
                flash_matrix_cols(dmax),
                kv.name()
            ),
        )
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
        gelu(),
        add(),
        add_bias(),
        scale(),
        softcap(),
        argmax(),
        sample(1024),
        sample(512),
        kv_append(KvDtype::F32),
        kv_append(KvDtype::F16),
        qkt_matmul(),
        weighted_matmul(),
        causal_mask(),
        softmax(),
        flash_combine(),
        mma_prep_x(),
        mma_prep_x_bf16(),
    ];
    for (ty, _) in WEIGHT_TYPES {
        out.push(matvec(ty).expect("registered type"));
        out.push(matmul_tiled(ty).expect("registered type"));
        for bm in MMA_ROW_TILES {
            out.push(matmul_mma(ty, bm).expect("registered type"));
        }
        out.push(embedding(ty).expect("registered type"));
    }
    for (t, shape) in matvec_table::instances() {
        out.push(k_overlapping(Family::Matvec, shape.name(t.suffix)));
    }
    for kv in [KvDtype::F32, KvDtype::F16] {
        for &d in attn_decode_head_dims(kv) {
            out.extend(attn_decode(d, kv));
            out.extend(attn_decode_head(d, kv));
        }
    }
    for dmax in FlashShape::DMAXES {
        for kv in [KvDtype::F32, KvDtype::F16] {
            out.push(flash_matrix(dmax, kv));
        }
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
    fn assembled_sources_have_no_includes_left() {
        for fam in Family::ALL {
            let src = fam.source().unwrap();
            assert!(!src.contains("#include \""), "{}", fam.file());
            assert!(src.contains("RF_KERNEL"), "{}", fam.file());
        }
    }

    /// AMD code objects leave out the 128-row tensor-core matmuls, and only them; the 64-row
    /// ones and the matrix-core flash kernels are on the matrix-core targets only (matmul.hip
    /// and attention.hip guard their definitions so), and NVIDIA's leave out the latter.
    #[test]
    fn the_tensor_core_matmuls_are_on_the_amd_matrix_core_targets() {
        let all = all();
        let never: Vec<&Kernel> = all.iter().filter(|k| k.amd == OnAmd::Never).collect();
        assert_eq!(never.len(), WEIGHT_TYPES.len());
        assert!(never
            .iter()
            .all(|k| k.name.starts_with("matmul_mma_") && k.name.ends_with("_m128")));
        let matrix: Vec<&Kernel> = all.iter().filter(|k| k.amd == OnAmd::MatrixCores).collect();
        assert_eq!(
            matrix.len(),
            WEIGHT_TYPES.len() + 2 * FlashShape::DMAXES.len()
        );
        for k in &matrix {
            assert!(k.on_amd("gfx1100") && k.on_amd("gfx1201") && k.on_amd("gfx942"));
            assert!(k.on_amd("gfx90a:sramecc+:xnack-"));
            assert!(!k.on_amd("gfx1030") && !k.on_amd("gfx908") && !k.on_amd("gfx906"));
        }
        let off_nvidia: Vec<&Kernel> = all.iter().filter(|k| !k.on_nvidia).collect();
        assert_eq!(off_nvidia.len(), 2 * FlashShape::DMAXES.len());
        assert!(off_nvidia
            .iter()
            .all(|k| k.name.starts_with("flash_attn_mx_")));
        let src = Family::Matmul.source().unwrap();
        assert!(src.contains(
            "#if !defined(__AMDGCN__) || defined(RF_AMD_MATRIX)\nRF_FOR_EACH_WEIGHT_TYPE(RF_MATMUL_MMA_M64)\n#endif"
        ));
        assert!(src.contains(
            "#if !defined(__AMDGCN__)\nRF_FOR_EACH_WEIGHT_TYPE(RF_MATMUL_MMA_M128)\n#endif"
        ));
    }
}
