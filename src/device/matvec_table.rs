//! The decode matvec kernels (`kernels/matvec.hip`) as one table: every weight type of the
//! family times every shape below it takes is one kernel. build.rs writes the kernels' definitions
//! from it (`matvec_instances.h`, inlined into matvec.hip by the source assembly), and the
//! registry (`kernels::matvec_decode`, `kernels::all`) names them from it, so the launchers,
//! the compile gate and the compiled source list the same kernels.
//!
//! Pure std: build.rs includes this file with `#[path]`.

/// What a kernel does with the block's sums (matvec.hip's `Epi*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// `EpiProj`: 1 to 3 matrices, out = y + bias, out += y (early or not), and the next
    /// norm's input (EmitNorm), chosen by the arguments.
    Proj,
    /// `EpiGlu`: gate and up rows, out = act(g) * u (SiLU or GELU, chosen by the arguments).
    Glu,
    /// `EpiQkvRope`: q/k/v, rope of q and k, k and v to the cache row (`f16`: an fp16 cache).
    QkvRope { f16: bool },
}

/// How a block walks the rows (matvec.hip's cores).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Core {
    /// `matvec_row_block`: a block owns its rows and walks k.
    RowBlock,
    /// `matvec_stream_glu`: persistent blocks whose threads span k once, `stages` row groups'
    /// loads in flight.
    Stream { stages: usize },
}

/// One kernel shape, instantiated for every type of `TYPES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub epilogue: Epilogue,
    pub core: Core,
    /// Weight rows a block sums at once (`Glu` on the row-block core: of each of gate and up; on
    /// the streaming core: of both, a group).
    pub rows: usize,
    /// Launch bounds: the largest block, and blocks that must fit a multiprocessor (0: no
    /// such bound; NVIDIA caps the registers for it).
    pub threads: u32,
    pub min_blocks: u32,
    /// Weights read past L1 (`rf_ld128_a4_na`): forms that read their rows in several passes.
    pub no_l1: bool,
}

use Core::{RowBlock, Stream};
use Epilogue::{Glu, Proj, QkvRope};

const fn shape(
    epilogue: Epilogue,
    core: Core,
    rows: usize,
    threads: u32,
    min_blocks: u32,
    no_l1: bool,
) -> Shape {
    Shape {
        epilogue,
        core,
        rows,
        threads,
        min_blocks,
        no_l1,
    }
}

/// A weight type of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Type {
    /// Kernel name suffix (as `kernels::WEIGHT_TYPES` spells the type).
    pub suffix: &'static str,
    /// Its struct in kernels/quants.h.
    pub q: &'static str,
    /// Rows a group of its streaming kernels takes (half gate, half up): the most (8 or 4)
    /// whose S groups of loads in flight fit the 2- and 3-stage forms' registers without
    /// spills (NVRTC sm_90, scripts/kernel-stats.py): 8 where a piece's scales are one
    /// register, 4 where they are two or more.
    pub stream_rows: usize,
    /// The most rows a block of its row-block kernels takes (of each matrix for Glu): 8 for
    /// Q8_0, whose pieces are 16 values, so that a thread has two pieces of each row in
    /// flight; at 16 rows those loads fill the 256 vector registers a lane has on AMD, and the
    /// wave-64 targets spill (docs/AMD.md). 16 for the others.
    pub row_block_max: usize,
}

const fn ty(
    suffix: &'static str,
    q: &'static str,
    stream_rows: usize,
    row_block_max: usize,
) -> Type {
    Type {
        suffix,
        q,
        stream_rows,
        row_block_max,
    }
}

/// The weight types of the family.
pub const TYPES: [Type; 10] = [
    ty("q4_0", "WQ4_0", 8, 16),
    ty("q4_1", "WQ4_1", 4, 16),
    ty("q5_0", "WQ5_0", 4, 16),
    ty("q5_1", "WQ5_1", 4, 16),
    ty("q8_0", "WQ8_0", 8, 8),
    ty("q4_K", "WQ4_K", 4, 16),
    ty("q5_K", "WQ5_K", 4, 16),
    ty("q6_K", "WQ6_K", 4, 16),
    ty("iq4_nl", "WIQ4_NL", 8, 16),
    ty("iq4_xs", "WIQ4_XS", 8, 16),
];

impl Type {
    /// Whether the table has `shape` for this type.
    pub fn has(&self, shape: &Shape) -> bool {
        SHAPES.contains(shape)
            && match shape.core {
                Core::RowBlock => shape.rows <= self.row_block_max,
                Core::Stream { .. } => shape.rows == self.stream_rows,
            }
    }
}

/// The shapes: what a default or a tuning field (src/device/tuning.rs) can select.
#[rustfmt::skip]
pub const SHAPES: [Shape; 18] = [
    //    epilogue                       core                    rows threads min  no L1
    shape(Proj,                          RowBlock,               4,   128,    0,   false),
    shape(Proj,                          RowBlock,               8,   128,    0,   false),
    shape(Proj,                          RowBlock,               16,  128,    0,   true),
    shape(Proj,                          RowBlock,               16,  128,    3,   false),
    shape(QkvRope { f16: false },        RowBlock,               4,   128,    0,   false),
    shape(QkvRope { f16: false },        RowBlock,               8,   128,    0,   false),
    shape(QkvRope { f16: false },        RowBlock,               16,  128,    0,   false),
    shape(QkvRope { f16: false },        RowBlock,               16,  128,    3,   false),
    shape(QkvRope { f16: true },         RowBlock,               4,   128,    0,   false),
    shape(QkvRope { f16: true },         RowBlock,               8,   128,    0,   false),
    shape(QkvRope { f16: true },         RowBlock,               16,  128,    0,   false),
    shape(QkvRope { f16: true },         RowBlock,               16,  128,    3,   false),
    shape(Glu,                           RowBlock,               4,   128,    0,   false),
    shape(Glu,                           RowBlock,               8,   128,    0,   false),
    shape(Glu,                           Stream { stages: 2 },   4,   512,    0,   true),
    shape(Glu,                           Stream { stages: 3 },   4,   384,    0,   true),
    shape(Glu,                           Stream { stages: 2 },   8,   512,    0,   true),
    shape(Glu,                           Stream { stages: 3 },   8,   384,    0,   true),
];

impl Shape {
    /// Whether the registers are capped for `min_blocks` blocks a multiprocessor.
    pub fn capped(&self) -> bool {
        self.min_blocks > 0
    }

    /// The kernel's name for weight type suffix `ty`.
    pub fn name(&self, ty: &str) -> String {
        let epilogue = match (self.epilogue, self.core) {
            (Proj, _) => "proj",
            (Glu, RowBlock) => "glu",
            (Glu, Stream { .. }) => "glu_stream",
            (QkvRope { f16: false }, _) => "qkv_rope_f32",
            (QkvRope { f16: true }, _) => "qkv_rope_f16",
        };
        let mut name = format!("matvec_{epilogue}_{ty}_r{}", self.rows);
        if self.capped() {
            name.push_str("_capped");
        }
        if let Stream { stages } = self.core {
            name.push_str(&format!("_s{stages}"));
        }
        name
    }

    /// The kernel's definition for weight type (suffix, quants.h struct): one line of C++.
    pub fn definition(&self, ty: &str, q: &str) -> String {
        let bounds = if self.capped() {
            format!(
                "RF_LAUNCH_BOUNDS_MIN({}, {})",
                self.threads, self.min_blocks
            )
        } else {
            format!("RF_LAUNCH_BOUNDS({})", self.threads)
        };
        let body = match (self.epilogue, self.core) {
            (_, Stream { stages }) => format!("matvec_stream_glu<{q}, {}, {stages}>(a)", self.rows),
            (epilogue, RowBlock) => {
                let epi = match epilogue {
                    Proj => "EpiProj",
                    Glu => "EpiGlu",
                    QkvRope { f16: false } => "EpiQkvRope<float>",
                    QkvRope { f16: true } => "EpiQkvRope<u16>",
                };
                format!(
                    "matvec_row_block<{q}, {}, {epi}, {}>(a)",
                    self.rows, self.no_l1
                )
            }
        };
        format!(
            "RF_KERNEL void {bounds} {}(const MatvecArgs a) {{ {body}; }}",
            self.name(ty)
        )
    }
}

/// Every instance: (type, shape).
pub fn instances() -> impl Iterator<Item = (Type, Shape)> {
    TYPES.iter().flat_map(|&t| {
        SHAPES
            .iter()
            .filter(move |s| t.has(s))
            .map(move |&s| (t, s))
    })
}

/// The text of `matvec_instances.h`.
pub fn instances_header() -> String {
    let mut out = String::from(
        "// matvec_instances.h: generated by build.rs from src/device/matvec_table.rs; do not edit.\n",
    );
    for (t, s) in instances() {
        out.push_str(&s.definition(t.suffix, t.q));
        out.push('\n');
    }
    out
}
