//! The tuning record: every choice between kernels or launch shapes that changes speed but
//! not what a model computes (beyond float rounding), in one place. A GPU reads its default
//! record once when it opens (`Tuning::from_env`: the defaults, then `ROCMFORGE_TUNING`), shows
//! it in `rocmforge.devices()`, and a `Model` may override fields for itself
//! (`Model(..., tuning={...})`), so that a test or an A/B benchmark runs non-defaults in one
//! process. docs/TUNING.md describes each field and the measurements behind its default.

use crate::error::{Error, Result};

/// Which kernel one-query-token attention takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeAttention {
    /// A block per query head for short caches, a block per kv head and key split (and a
    /// combine) beyond.
    Auto,
    /// The block-per-query-head kernel wherever it can take the cache.
    Head,
    /// The block-per-kv-head kernel (key splits and a combine) at every length.
    Kv,
    /// The general flash-attention kernels.
    Flash,
}

impl DecodeAttention {
    pub fn name(self) -> &'static str {
        match self {
            DecodeAttention::Auto => "auto",
            DecodeAttention::Head => "head",
            DecodeAttention::Kv => "kv",
            DecodeAttention::Flash => "flash",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        [Self::Auto, Self::Head, Self::Kv, Self::Flash]
            .into_iter()
            .find(|m| m.name() == v)
    }
}

/// See the module doc. `Default` is the record a device starts from.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    /// Record a model's decode step as a graph and replay it (false: its kernels are
    /// launched one by one, the same kernels).
    pub graphs: bool,
    /// Greedy decoding queues the next step before reading a step's pick.
    pub decode_ahead: bool,
    /// The decode step's kernels may start while the one before finishes (programmatic
    /// dependent launch, NVIDIA sm_90 and newer). A launch attribute of the device: set it
    /// with `ROCMFORGE_TUNING`; a model's record cannot change it.
    pub overlap: bool,
    /// The decode plan folds each RMS norm into the projections that read it.
    pub fuse_norm: bool,
    /// The decode plan's q/k/v launch also applies the rope and appends k and v to the cache.
    pub fuse_rope: bool,
    /// Weight rows a block of the decode matvec takes: 4, 8 or 16, the rows per block
    /// src/device/matvec_table.rs has (Q8_0 at most 8: 16 takes 8 there; None: chosen per
    /// shape).
    pub matvec_rows: Option<usize>,
    /// Rows of each of gate and up a block of the decode gate/up matvec takes: 4 or 8 (None:
    /// per type).
    pub glu_rows: Option<usize>,
    /// Decode matvecs that read their rows in one pass take the register-capped build
    /// (more blocks a multiprocessor).
    pub matvec_capped: bool,
    /// Long-row gate/up projections take the streaming kernel.
    pub matvec_stream: bool,
    /// Row groups the streaming kernel keeps in flight (None: chosen from the row length).
    pub stream_stages: Option<usize>,
    /// Prefill matmuls on tensor cores where the GPU has them (NVIDIA sm_80+, AMD WMMA /
    /// MFMA), and the model's prefill attention on AMD's.
    pub mma: bool,
    /// Rows of x from which a model's matmul takes the tensor cores (below: the matvecs). The
    /// tile computes 64 or 128 rows whatever the rows are, but even mostly empty it is bound
    /// by reading the weights once, like the float32 kernel it replaces.
    pub mma_min_rows: usize,
    /// Row tile of the tensor-core matmul (None: chosen per shape).
    pub mma_tile_rows: Option<usize>,
    pub decode_attention: DecodeAttention,
    /// Threads a block of the sampling kernel takes (each block a slice of 4 tokens a thread;
    /// None: the smallest block holding the vocabulary, at most 1024).
    pub sample_block: Option<usize>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            graphs: true,
            decode_ahead: true,
            overlap: true,
            fuse_norm: true,
            fuse_rope: true,
            matvec_rows: None,
            glu_rows: None,
            matvec_capped: true,
            matvec_stream: true,
            stream_stages: None,
            mma: true,
            mma_min_rows: 9,
            mma_tile_rows: None,
            decode_attention: DecodeAttention::Auto,
            sample_block: None,
        }
    }
}

/// Values a field accepts, for error messages.
fn expected(key: &str) -> &'static str {
    match key {
        "matvec_rows" => "auto, 4, 8 or 16",
        "glu_rows" => "auto, 4 or 8",
        "stream_stages" => "auto, 2 or 3",
        "mma_min_rows" => "an integer >= 1",
        "mma_tile_rows" => "auto, 64 or 128",
        "decode_attention" => "auto, head, kv or flash",
        "sample_block" => "auto, 128, 256, 512 or 1024",
        _ => "true/false (or 1/0)",
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" | "True" | "on" | "yes" => Some(true),
        "0" | "false" | "False" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// `auto` -> None, else a number in `allowed`.
fn parse_choice(v: &str, allowed: &[usize]) -> Option<Option<usize>> {
    if v == "auto" {
        return Some(None);
    }
    v.parse().ok().filter(|n| allowed.contains(n)).map(Some)
}

fn show(v: Option<usize>) -> String {
    v.map_or_else(|| "auto".to_string(), |n| n.to_string())
}

impl Tuning {
    /// The names of the fields, in the order `entries` gives them.
    pub const KEYS: [&'static str; 15] = [
        "graphs",
        "decode_ahead",
        "overlap",
        "fuse_norm",
        "fuse_rope",
        "matvec_rows",
        "glu_rows",
        "matvec_capped",
        "matvec_stream",
        "stream_stages",
        "mma",
        "mma_min_rows",
        "mma_tile_rows",
        "decode_attention",
        "sample_block",
    ];

    /// The defaults, then the overrides of `ROCMFORGE_TUNING` (`key=value` pairs separated by
    /// commas), e.g. `ROCMFORGE_TUNING="graphs=0,decode_attention=kv"`.
    pub fn from_env() -> Result<Tuning> {
        let mut t = Tuning::default();
        if let Ok(spec) = std::env::var("ROCMFORGE_TUNING") {
            t.apply_str(&spec)
                .map_err(|e| Error::invalid(format!("ROCMFORGE_TUNING: {e}")))?;
        }
        Ok(t)
    }

    /// Apply `key=value` pairs separated by commas (blank: nothing).
    pub fn apply_str(&mut self, spec: &str) -> Result<()> {
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| Error::invalid(format!("expected key=value, got {pair:?}")))?;
            self.set(key.trim(), value.trim())?;
        }
        Ok(())
    }

    /// Set one field from its text form; an unknown key or a value out of range is an
    /// `InvalidArgument` naming both.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = || {
            Error::invalid(format!(
                "tuning {key}: expected {}, got {value:?}",
                expected(key)
            ))
        };
        let flag = || parse_bool(value).ok_or_else(bad);
        match key {
            "graphs" => self.graphs = flag()?,
            "decode_ahead" => self.decode_ahead = flag()?,
            "overlap" => self.overlap = flag()?,
            "fuse_norm" => self.fuse_norm = flag()?,
            "fuse_rope" => self.fuse_rope = flag()?,
            "matvec_rows" => self.matvec_rows = parse_choice(value, &[4, 8, 16]).ok_or_else(bad)?,
            "glu_rows" => self.glu_rows = parse_choice(value, &[4, 8]).ok_or_else(bad)?,
            "matvec_capped" => self.matvec_capped = flag()?,
            "matvec_stream" => self.matvec_stream = flag()?,
            "stream_stages" => self.stream_stages = parse_choice(value, &[2, 3]).ok_or_else(bad)?,
            "mma" => self.mma = flag()?,
            "mma_min_rows" => {
                self.mma_min_rows = value.parse().ok().filter(|&n| n >= 1).ok_or_else(bad)?
            }
            "mma_tile_rows" => {
                self.mma_tile_rows = parse_choice(value, &[64, 128]).ok_or_else(bad)?
            }
            "decode_attention" => {
                self.decode_attention = DecodeAttention::parse(value).ok_or_else(bad)?
            }
            "sample_block" => {
                self.sample_block = parse_choice(value, &[128, 256, 512, 1024]).ok_or_else(bad)?
            }
            _ => {
                return Err(Error::invalid(format!(
                    "unknown tuning field {key:?} (fields: {})",
                    Tuning::KEYS.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// Every field and its value in text form (what `set` takes back).
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let b = |v: bool| v.to_string();
        let values = [
            b(self.graphs),
            b(self.decode_ahead),
            b(self.overlap),
            b(self.fuse_norm),
            b(self.fuse_rope),
            show(self.matvec_rows),
            show(self.glu_rows),
            b(self.matvec_capped),
            b(self.matvec_stream),
            show(self.stream_stages),
            b(self.mma),
            self.mma_min_rows.to_string(),
            show(self.mma_tile_rows),
            self.decode_attention.name().to_string(),
            show(self.sample_block),
        ];
        Tuning::KEYS.into_iter().zip(values).collect()
    }

    /// The fields that differ from `base`, as `key=value, ...` (empty: none).
    pub fn diff(&self, base: &Tuning) -> String {
        self.entries()
            .into_iter()
            .zip(base.entries())
            .filter(|(a, b)| a.1 != b.1)
            .map(|((k, v), _)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_round_trips_through_its_text() {
        let mut t = Tuning::default();
        t.apply_str(
            "graphs=0, matvec_rows=8, stream_stages=3, decode_attention=kv, mma_min_rows=33, sample_block=256",
        )
        .unwrap();
        assert!(!t.graphs);
        assert_eq!(t.matvec_rows, Some(8));
        assert_eq!(t.decode_attention, DecodeAttention::Kv);
        assert_eq!(t.sample_block, Some(256));
        let mut back = Tuning::default();
        for (k, v) in t.entries() {
            back.set(k, &v).unwrap();
        }
        assert_eq!(back, t);
        assert_eq!(t.diff(&t), "");
        assert!(t.diff(&Tuning::default()).contains("graphs=false"));
    }

    #[test]
    fn bad_keys_and_values_name_the_field() {
        let mut t = Tuning::default();
        let e = t.set("matvec_rows", "3").unwrap_err().to_string();
        assert!(e.contains("matvec_rows") && e.contains("16"), "{e}");
        let e = t.set("no_such", "1").unwrap_err().to_string();
        assert!(e.contains("no_such") && e.contains("graphs"), "{e}");
        assert!(t.apply_str("graphs").is_err());
        assert_eq!(t, Tuning::default());
    }
}
