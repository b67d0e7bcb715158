//! Rust-side checks of the forward pass on tiny random models written in memory: one-token
//! decode with the KV cache equals the batched recompute, on the CPU backend and (ignored by
//! default, run by scripts/check-kernels.sh) on the GPU backend under the CPU emulation of the
//! kernels. The Python tests hold the logits to an independent NumPy forward pass.

use super::*;
use crate::backend::cpu::CpuBackend;
use crate::gguf::{quants, GgmlType, GgufFile};
use crate::ops::sampling::{DrawKey, SampleParams, SampleRow, StepPick};

/// A deterministic generator for test weights.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// A minimal GGUF v3 writer: metadata (u32, f32, str) and tensors of F32 or a quant type.
#[derive(Default)]
struct GgufBuilder {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)>,
}

impl GgufBuilder {
    fn key(&mut self, key: &str, ty: u32) {
        self.kv.extend((key.len() as u64).to_le_bytes());
        self.kv.extend(key.as_bytes());
        self.kv.extend(ty.to_le_bytes());
        self.n_kv += 1;
    }
    fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.key(key, 4);
        self.kv.extend(v.to_le_bytes());
        self
    }
    fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.key(key, 6);
        self.kv.extend(v.to_le_bytes());
        self
    }
    fn str(&mut self, key: &str, v: &str) -> &mut Self {
        self.key(key, 8);
        self.kv.extend((v.len() as u64).to_le_bytes());
        self.kv.extend(v.as_bytes());
        self
    }
    /// A tensor of NumPy shape `shape`, stored as `ty` (2-D tensors only when quantized).
    fn tensor(&mut self, name: &str, shape: &[usize], ty: GgmlType, values: &[f32]) -> &mut Self {
        let bytes = quants::quantize(ty, values).expect("quantizable test tensor");
        self.tensors
            .push((name.to_string(), shape.to_vec(), ty, bytes));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        const ALIGN: usize = 32;
        let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(ALIGN) * ALIGN, 0);
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kv);
        let mut offset = 0usize;
        for (name, shape, ty, bytes) in &self.tensors {
            out.extend((name.len() as u64).to_le_bytes());
            out.extend(name.as_bytes());
            out.extend((shape.len() as u32).to_le_bytes());
            for &d in shape.iter().rev() {
                out.extend((d as u64).to_le_bytes());
            }
            out.extend(ty.id().to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset = (offset + bytes.len()).div_ceil(ALIGN) * ALIGN;
        }
        pad(&mut out);
        for (_, _, _, bytes) in &self.tensors {
            out.extend(bytes);
            pad(&mut out);
        }
        out
    }
}

/// Widths of the tiny test model (multiples of 32 where quantized matrices need them).
const DIM: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = DIM / HEADS;
const FFN: usize = 96;
const VOCAB: usize = 50;
const LAYERS: usize = 2;

/// Gemma 3 test models: both layers are sliding-window layers over this many keys (fewer
/// than `TOKENS`).
const WINDOW: usize = 3;

/// Phi-3 test models: the original context of their LongRoPE factors (the tests' contexts of
/// 32 positions take the long set) and their rope attention factor.
const PHI3_ORIGINAL_CONTEXT: usize = 16;
const PHI3_ATTN_FACTOR: f32 = 1.1;

/// A random qwen2 (biases, neox rope), llama (rope_freqs, untied head), qwen3 (q/k norms),
/// gemma3 (q/k norms, post-norms, GeGLU, sliding window, scaled embeddings) or phi3 (LongRoPE
/// factors and attention factor; layer 0's q/k/v fused, layer 1's apart; gate/up fused)
/// model file.
fn tiny_model(arch: Arch, matrices: GgmlType, seed: u64) -> GgufFile {
    GgufFile::from_bytes(tiny_builder(arch, matrices, seed).bytes()).expect("the test model parses")
}

/// `tiny_model`'s file before it is written (a test may add metadata keys).
fn tiny_builder(arch: Arch, matrices: GgmlType, seed: u64) -> GgufBuilder {
    let mut r = Lcg(seed);
    let mut b = GgufBuilder::default();
    let a = arch.name();
    b.str("general.architecture", a)
        .u32(&format!("{a}.block_count"), LAYERS as u32)
        .u32(&format!("{a}.context_length"), 64)
        .u32(&format!("{a}.embedding_length"), DIM as u32)
        .u32(&format!("{a}.feed_forward_length"), FFN as u32)
        .u32(&format!("{a}.attention.head_count"), HEADS as u32)
        .u32(&format!("{a}.attention.head_count_kv"), KV_HEADS as u32)
        .f32(&format!("{a}.attention.layer_norm_rms_epsilon"), 1e-5)
        .f32(&format!("{a}.rope.freq_base"), 10000.0);
    if arch == Arch::Gemma3 {
        b.u32(&format!("{a}.attention.sliding_window"), WINDOW as u32);
    }
    if arch == Arch::Phi3 {
        // (Phi-4's files say sliding_window 0: phi3 has no window, the key is not read)
        b.u32(&format!("{a}.attention.sliding_window"), 0)
            .u32(
                &format!("{a}.rope.scaling.original_context_length"),
                PHI3_ORIGINAL_CONTEXT as u32,
            )
            .f32(&format!("{a}.rope.scaling.attn_factor"), PHI3_ATTN_FACTOR);
    }
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let s = |n: usize| 1.0 / (n as f32).sqrt() * 1.7; // uniform(-1, 1) has std 1/sqrt(3)
    let norm = |r: &mut Lcg| r.vec(DIM, 0.1).iter().map(|v| 1.0 + v).collect::<Vec<_>>();
    b.tensor(
        "token_embd.weight",
        &[VOCAB, DIM],
        matrices,
        &r.vec(VOCAB * DIM, 1.0),
    );
    b.tensor("output_norm.weight", &[DIM], GgmlType::F32, &norm(&mut r));
    if arch == Arch::Llama {
        b.tensor(
            "output.weight",
            &[VOCAB, DIM],
            matrices,
            &r.vec(VOCAB * DIM, s(DIM)),
        );
        let freqs: Vec<f32> = r.vec(HEAD_DIM / 2, 1.0).iter().map(|v| 2.0 + v).collect();
        b.tensor("rope_freqs.weight", &[HEAD_DIM / 2], GgmlType::F32, &freqs);
    }
    if arch == Arch::Phi3 {
        let long: Vec<f32> = r.vec(HEAD_DIM / 2, 2.0).iter().map(|v| 3.0 + v).collect();
        let short: Vec<f32> = r.vec(HEAD_DIM / 2, 0.2).iter().map(|v| 1.0 + v).collect();
        b.tensor(
            "rope_factors_long.weight",
            &[HEAD_DIM / 2],
            GgmlType::F32,
            &long,
        );
        b.tensor(
            "rope_factors_short.weight",
            &[HEAD_DIM / 2],
            GgmlType::F32,
            &short,
        );
    }
    for l in 0..LAYERS {
        let n = |t: &str| format!("blk.{l}.{t}");
        b.tensor(&n("attn_norm.weight"), &[DIM], GgmlType::F32, &norm(&mut r));
        b.tensor(&n("ffn_norm.weight"), &[DIM], GgmlType::F32, &norm(&mut r));
        let wq = r.vec(q * DIM, s(DIM));
        let wk = r.vec(kv * DIM, s(DIM));
        let wv = r.vec(kv * DIM, s(DIM));
        if arch == Arch::Phi3 && l == 0 {
            let qkv = [wq, wk, wv].concat();
            b.tensor(&n("attn_qkv.weight"), &[q + 2 * kv, DIM], matrices, &qkv);
        } else {
            b.tensor(&n("attn_q.weight"), &[q, DIM], matrices, &wq);
            b.tensor(&n("attn_k.weight"), &[kv, DIM], matrices, &wk);
            b.tensor(&n("attn_v.weight"), &[kv, DIM], matrices, &wv);
        }
        b.tensor(
            &n("attn_output.weight"),
            &[DIM, q],
            matrices,
            &r.vec(DIM * q, s(q)),
        );
        let gate = r.vec(FFN * DIM, s(DIM));
        let up = r.vec(FFN * DIM, s(DIM));
        if arch == Arch::Phi3 {
            let gate_up = [gate, up].concat();
            b.tensor(&n("ffn_up.weight"), &[2 * FFN, DIM], matrices, &gate_up);
        } else {
            b.tensor(&n("ffn_gate.weight"), &[FFN, DIM], matrices, &gate);
            b.tensor(&n("ffn_up.weight"), &[FFN, DIM], matrices, &up);
        }
        b.tensor(
            &n("ffn_down.weight"),
            &[DIM, FFN],
            matrices,
            &r.vec(DIM * FFN, s(FFN)),
        );
        if arch == Arch::Qwen2 {
            b.tensor(&n("attn_q.bias"), &[q], GgmlType::F32, &r.vec(q, 0.5));
            b.tensor(&n("attn_k.bias"), &[kv], GgmlType::F32, &r.vec(kv, 0.5));
            b.tensor(&n("attn_v.bias"), &[kv], GgmlType::F32, &r.vec(kv, 0.5));
        }
        if matches!(arch, Arch::Qwen3 | Arch::Gemma3) {
            let head_norm = |r: &mut Lcg| {
                r.vec(HEAD_DIM, 0.1)
                    .iter()
                    .map(|v| 1.0 + v)
                    .collect::<Vec<_>>()
            };
            b.tensor(
                &n("attn_q_norm.weight"),
                &[HEAD_DIM],
                GgmlType::F32,
                &head_norm(&mut r),
            );
            b.tensor(
                &n("attn_k_norm.weight"),
                &[HEAD_DIM],
                GgmlType::F32,
                &head_norm(&mut r),
            );
        }
        if arch == Arch::Gemma3 {
            b.tensor(
                &n("post_attention_norm.weight"),
                &[DIM],
                GgmlType::F32,
                &norm(&mut r),
            );
            b.tensor(
                &n("post_ffw_norm.weight"),
                &[DIM],
                GgmlType::F32,
                &norm(&mut r),
            );
        }
    }
    b
}

fn no_interrupt() -> impl FnMut() -> crate::Result<()> + Send {
    || Ok(())
}

/// Logits `[vocab]` after each step of: prefill `tokens[..n_prompt]`, then one token at a time.
fn decode_logits<B: Backend>(
    backend: B,
    file: &GgufFile,
    kv: KvDtype,
    tokens: &[u32],
    n_prompt: usize,
) -> Vec<Vec<f32>> {
    let mut t = Transformer::load(backend, file, 32, kv).unwrap();
    let mut out = Vec::new();
    let mut logits = vec![0.0; VOCAB];
    t.eval(&tokens[..n_prompt], 0, &mut no_interrupt()).unwrap();
    t.last_logits(&mut logits).unwrap();
    out.push(logits.clone());
    for pos in n_prompt..tokens.len() {
        t.eval(&tokens[pos..pos + 1], pos, &mut no_interrupt())
            .unwrap();
        t.last_logits(&mut logits).unwrap();
        let (id, value) = t.last_argmax().unwrap();
        assert_eq!(value, logits[id as usize]);
        assert_eq!(
            id,
            crate::sampling::argmax(&logits),
            "device argmax at position {pos}"
        );
        out.push(logits.clone());
    }
    out
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    num / b.iter().map(|y| y.abs()).fold(1e-30, f32::max)
}

const TOKENS: [u32; 9] = [3, 17, 42, 0, 49, 8, 8, 25, 11];
const N_PROMPT: usize = 5;

#[test]
fn cpu_decode_with_kv_cache_equals_batched_recompute() {
    for (arch, ty) in [
        (Arch::Qwen2, GgmlType::F32),
        (Arch::Llama, GgmlType::F32),
        (Arch::Llama, GgmlType::Q8_0),
        (Arch::Qwen3, GgmlType::Q8_0),
        (Arch::Gemma3, GgmlType::F32),
        (Arch::Gemma3, GgmlType::Q8_0),
        (Arch::Phi3, GgmlType::Q8_0),
    ] {
        let file = tiny_model(arch, ty, 11);
        let mut t = Transformer::load(CpuBackend, &file, 32, KvDtype::F32).unwrap();
        let mut all = vec![0.0; TOKENS.len() * VOCAB];
        t.eval_all(&TOKENS, 0, &mut all, &mut no_interrupt())
            .unwrap();
        let steps = decode_logits(CpuBackend, &file, KvDtype::F32, &TOKENS, N_PROMPT);
        for (i, step) in steps.iter().enumerate() {
            let row = N_PROMPT - 1 + i;
            let want = &all[row * VOCAB..(row + 1) * VOCAB];
            // The quantized path rounds activations per row, the same at any batch size.
            assert!(
                rel_err(step, want) < 1e-5,
                "{arch:?} {ty}: position {row}: {}",
                rel_err(step, want)
            );
        }
    }
}

/// Gemma 3 scales its attention scores by 1/sqrt(head_dim), except the 27B size (62 layers),
/// whose queries are scaled by 1/sqrt(dim / heads) as llama.cpp does.
#[test]
fn gemma3_27b_attention_scale_is_by_dim_over_heads() {
    let file = tiny_model(Arch::Gemma3, GgmlType::F32, 3);
    let mut cfg = ModelConfig::from_gguf(&file).unwrap();
    let scales = |cfg: &ModelConfig| -> Vec<f32> {
        spec::ModelSpec::new(cfg)
            .blocks
            .iter()
            .map(|b| b.attn_scale)
            .collect()
    };
    assert!(scales(&cfg)
        .iter()
        .all(|&s| s == 1.0 / (HEAD_DIM as f32).sqrt()));
    cfg.n_layers = 62;
    cfg.dim = 3 * HEADS * HEAD_DIM; // dim / heads differs from head_dim
    let want = 1.0 / ((cfg.dim / HEADS) as f32).sqrt();
    let got = scales(&cfg);
    assert_eq!(got.len(), 62);
    assert!(got.iter().all(|&s| s == want), "{got:?} {want}");
}

/// Phi-3's fused matrices load as their parts (byte ranges of the fused tensor; q/k/v fused in
/// layer 0, apart in layer 1), the LongRoPE set follows the context, and the attention factor
/// scales the attention scores by its square.
#[test]
fn phi3_fused_matrices_rope_factor_sets_and_attention_factor() {
    use crate::model::weights::Weights;

    for ty in [GgmlType::F32, GgmlType::Q8_0] {
        let file = tiny_model(Arch::Phi3, ty, 7);
        let cfg = ModelConfig::from_gguf(&file).unwrap();
        assert_eq!(cfg.rope_original_context, PHI3_ORIGINAL_CONTEXT);
        assert_eq!(cfg.sliding_window, None);
        let spec = spec::ModelSpec::new(&cfg);
        let scale = PHI3_ATTN_FACTOR * PHI3_ATTN_FACTOR / (HEAD_DIM as f32).sqrt();
        assert!(spec
            .blocks
            .iter()
            .all(|b| b.attn_scale == scale && b.window.is_none()));
        let bytes = |name: &str| file.tensor(name).unwrap().1.to_vec();
        for (n_ctx, set) in [(32, "long"), (PHI3_ORIGINAL_CONTEXT, "short")] {
            let w = Weights::load(&CpuBackend, &file, &cfg, n_ctx).unwrap();
            let freqs = w.rope_freqs.as_ref().unwrap();
            assert_eq!(
                freqs.bytes,
                bytes(&format!("rope_factors_{set}.weight")),
                "{n_ctx}"
            );
            let l0 = &w.layers[0];
            let rows = [&l0.wq, &l0.wk, &l0.wv].map(|m| m.rows);
            assert_eq!(
                rows,
                [HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM]
            );
            let qkv = [&l0.wq.bytes[..], &l0.wk.bytes, &l0.wv.bytes].concat();
            assert_eq!(qkv, bytes("blk.0.attn_qkv.weight"));
            let l1 = &w.layers[1];
            assert_eq!(l1.wk.bytes, bytes("blk.1.attn_k.weight"));
            for (l, lw) in w.layers.iter().enumerate() {
                assert_eq!((lw.w_gate.rows, lw.w_up.rows), (FFN, FFN));
                let gate_up = [&lw.w_gate.bytes[..], &lw.w_up.bytes].concat();
                assert_eq!(gate_up, bytes(&format!("blk.{l}.ffn_up.weight")));
                assert_eq!((lw.w_gate.ty, lw.w_up.cols), (ty, DIM));
            }
        }
    }
}

/// llama.cpp's rope attention factor scales only the rotated dims: refused with partial
/// rotation, where it is not a factor of the scores.
#[test]
fn rope_attention_factor_with_partial_rotation_is_refused() {
    let mut b = tiny_builder(Arch::Phi3, GgmlType::F32, 1);
    b.u32("phi3.rope.dimension_count", HEAD_DIM as u32 / 2);
    let file = GgufFile::from_bytes(b.bytes()).unwrap();
    let e = ModelConfig::from_gguf(&file).unwrap_err();
    assert!(
        matches!(e, crate::Error::Unsupported(ref m) if m.contains("attn_factor")),
        "{e}"
    );
}

#[test]
fn model_errors_name_the_problem() {
    let file = tiny_model(Arch::Qwen2, GgmlType::F32, 5);
    let mut t = Transformer::load(CpuBackend, &file, 8, KvDtype::F32).unwrap();
    let e = t.eval(&[VOCAB as u32], 0, &mut no_interrupt()).unwrap_err();
    assert!(
        matches!(e, crate::Error::InvalidArgument(ref m) if m.contains("vocabulary")),
        "{e}"
    );
    let e = t.eval(&[1; 9], 0, &mut no_interrupt()).unwrap_err();
    assert!(
        matches!(e, crate::Error::InvalidArgument(ref m) if m.contains("context of 8")),
        "{e}"
    );
    assert!(Transformer::load(CpuBackend, &file, 0, KvDtype::F32).is_err());
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn gpu_backend_forward_on_the_emulator_matches_the_cpu() {
    use crate::backend::gpu::GpuBackend;
    use crate::device::emulator::EmuRuntime;
    use crate::device::gpu::GpuDevice;
    use std::sync::Arc;

    // Wave 32 (NVIDIA-like) and wave 64 (AMD CDNA-like) with their shared memory sizes.
    let devices = [(32, 227 * 1024), (64, 64 * 1024)];
    for (i, (wave, shared)) in devices.into_iter().enumerate() {
        let emu = EmuRuntime::tagged(wave, shared, "-forward");
        let dev = Arc::new(GpuDevice::new(i, Box::new(emu)));
        for (arch, ty, kv, tol) in [
            (Arch::Qwen2, GgmlType::F32, KvDtype::F32, 1e-4),
            (Arch::Llama, GgmlType::Q8_0, KvDtype::F16, 3e-2),
        ] {
            let file = tiny_model(arch, ty, 23);
            let gpu = decode_logits(GpuBackend::new(dev.clone()), &file, kv, &TOKENS, N_PROMPT);
            let cpu = decode_logits(CpuBackend, &file, kv, &TOKENS, N_PROMPT);
            for (step, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
                let e = rel_err(g, c);
                assert!(
                    e < tol,
                    "wave {wave} {arch:?} {ty} {kv:?}: step {step}: {e}"
                );
            }
        }
    }
}

/// `decode_logits` with the one-token steps taken by `decode_greedy` (device decode steps;
/// with `ahead`, each step queues the next, which `last_logits` then drops and runs again).
fn greedy_step_logits<B: Backend>(
    backend: B,
    file: &GgufFile,
    kv: KvDtype,
    tokens: &[u32],
    n_prompt: usize,
    ahead: bool,
) -> Vec<Vec<f32>> {
    let mut t = Transformer::load(backend, file, 32, kv).unwrap();
    t.set_plan(true).unwrap();
    let mut out = Vec::new();
    let mut logits = vec![0.0; VOCAB];
    t.eval(&tokens[..n_prompt], 0, &mut no_interrupt()).unwrap();
    t.last_logits(&mut logits).unwrap();
    out.push(logits.clone());
    for pos in n_prompt..tokens.len() {
        let (id, value) = t.decode_greedy(tokens[pos], pos, ahead).unwrap();
        t.last_logits(&mut logits).unwrap();
        assert_eq!(value, logits[id as usize], "picked logit at position {pos}");
        assert_eq!(
            id,
            crate::sampling::argmax(&logits),
            "device argmax at position {pos}"
        );
        out.push(logits.clone());
    }
    out
}

/// Greedy steps from `n_prompt` (`n_gen` of them, up to the context's end, so the last one
/// can queue nothing ahead): the (pick, logit) of each, the token at position 3 taken from
/// `tokens` (not what the step queued ahead ran: dropped) and the others the pick before
/// (taken); the logits of the step at `n_prompt + 1` (overwritten by the step queued ahead:
/// run again); and the pick of an `eval` of another token at the last position (over the
/// row the last step wrote).
fn greedy_picks<B: Backend>(
    backend: B,
    file: &GgufFile,
    kv: KvDtype,
    tokens: &[u32],
    n_prompt: usize,
    n_gen: usize,
    ahead: bool,
) -> (Vec<(u32, f32)>, Vec<f32>) {
    let n_ctx = n_prompt + n_gen;
    let mut t = Transformer::load(backend, file, n_ctx, kv).unwrap();
    t.set_plan(true).unwrap();
    t.eval(&tokens[..n_prompt], 0, &mut no_interrupt()).unwrap();
    let mut picks = vec![t.last_argmax().unwrap()];
    let mut logits = vec![0.0; VOCAB];
    for pos in n_prompt..n_ctx {
        let id = match pos {
            3 => tokens[3],
            _ => picks.last().unwrap().0,
        };
        picks.push(t.decode_greedy(id, pos, ahead).unwrap());
        if pos == n_prompt + 1 {
            t.last_logits(&mut logits).unwrap();
        }
    }
    t.eval(&[tokens[0]], n_ctx - 1, &mut no_interrupt())
        .unwrap();
    picks.push(t.last_argmax().unwrap());
    (picks, logits)
}

/// Sampled decode steps after a prompt of `n_prompt` tokens, each feeding back its pick:
/// per step (pick, its log-probability, and the pick `ops::sampling` makes on the CPU from the
/// step's own logits with the same key and history, and its log-probability).
fn sampled_picks<B: Backend>(
    backend: B,
    file: &GgufFile,
    kv: KvDtype,
    pick: &StepPick,
    n_prompt: usize,
    n_gen: usize,
    ahead: bool,
) -> Vec<(u32, f32, u32, f32)> {
    let n_ctx = n_prompt + n_gen;
    let mut t = Transformer::load(backend, file, n_ctx, kv).unwrap();
    t.set_plan(true).unwrap();
    let mut history = TOKENS[..n_prompt].to_vec();
    t.eval(&history[..n_prompt - 1], 0, &mut no_interrupt())
        .unwrap();
    let StepPick::Sample { params, seed, .. } = pick else {
        panic!("a sampled pick")
    };
    let mut out = vec![];
    let mut logits = vec![0.0; VOCAB];
    for pos in n_prompt - 1..n_ctx - 1 {
        let (id, lp) = t.decode(history[pos], pos, pick, &history, ahead).unwrap();
        t.last_logits(&mut logits).unwrap();
        let row = SampleRow {
            params: params.clone(),
            key: DrawKey {
                seed: *seed,
                sequence: 0,
                position: pos as u32 + 1,
            },
            history: &history,
        };
        let cpu = crate::ops::sampling::cpu::sample(&logits, 1, VOCAB, &[row], 0).unwrap();
        out.push((id, lp, cpu.ids[0], cpu.logprobs[0]));
        history.push(id);
    }
    // One token evaluated after sampled steps: its pick is the argmax, not a draw.
    t.eval(&[history[1]], n_ctx - 1, &mut no_interrupt())
        .unwrap();
    t.last_logits(&mut logits).unwrap();
    let argmax = crate::sampling::argmax(&logits);
    assert_eq!(
        t.last_argmax().unwrap().0,
        argmax,
        "argmax after sampled steps"
    );
    out
}

/// Sampled picks with and without penalties: the decode step's pick is `ops::sampling`'s on
/// its logits, and a step queued ahead changes no pick.
fn check_sampled_steps<B: Backend>(make: impl Fn() -> B, file: &GgufFile, kv: KvDtype, what: &str) {
    // (the tiny models' distributions are peaked: a high temperature makes the draws vary)
    let plain = SampleParams {
        temperature: 4.0,
        top_k: 40,
        top_p: 0.9999,
        min_p: 0.0001,
        ..SampleParams::default()
    };
    let penalized = SampleParams {
        repeat_penalty: 1.3,
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        penalty_last_n: 4,
        temperature: 2.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
    };
    for (params, seed) in [(plain, 7), (penalized, 11)] {
        let pick = StepPick::new(&params, seed, 0);
        let steps = sampled_picks(make(), file, kv, &pick, 2, 6, false);
        for (n, &(id, lp, cpu_id, cpu_lp)) in steps.iter().enumerate() {
            assert_eq!(id, cpu_id, "{what} {params:?}: pick {n}");
            assert!(
                (lp - cpu_lp).abs() < 1e-4,
                "{what}: log-probability {n}: {lp} {cpu_lp}"
            );
        }
        let distinct: std::collections::HashSet<_> = steps.iter().map(|s| s.0).collect();
        assert!(distinct.len() >= 2, "{what}: the draws vary ({steps:?})");
        if !pick.penalizes() {
            let ahead = sampled_picks(make(), file, kv, &pick, 2, 6, true);
            let ids = |v: &[(u32, f32, u32, f32)]| {
                v.iter().map(|s| (s.0, s.1.to_bits())).collect::<Vec<_>>()
            };
            assert_eq!(ids(&steps), ids(&ahead), "{what}: ahead");
        }
    }
}

#[test]
fn cpu_sampled_decode_steps_are_the_sampling_op() {
    let file = tiny_model(Arch::Qwen2, GgmlType::Q8_0, 5);
    check_sampled_steps(|| CpuBackend, &file, KvDtype::F32, "cpu");
}

/// Three sequences side by side in slots of their own: each prompt evaluated in its slot, then
/// batched steps (`decode_batch`, the rows in another order than the slots), each row's logits
/// against those of its sequence run alone on the CPU (`decode_logits`).
fn check_batched_steps<B: Backend>(backend: B, file: &GgufFile, kv: KvDtype, tol: f32, what: &str) {
    let rotated = |k: usize| -> Vec<u32> {
        TOKENS
            .iter()
            .cycle()
            .skip(k)
            .take(TOKENS.len())
            .copied()
            .collect()
    };
    let seqs = [(rotated(0), 1), (rotated(4), 3), (rotated(7), 2)];
    let order = [2, 0, 1];
    let mut t = Transformer::load(backend, file, 32, kv).unwrap();
    t.set_slots(seqs.len()).unwrap();
    let mut got = vec![Vec::new(); seqs.len()];
    for (slot, (tokens, n_prompt)) in seqs.iter().enumerate() {
        t.select_slot(slot).unwrap();
        t.eval(&tokens[..*n_prompt], 0, &mut no_interrupt())
            .unwrap();
        let mut logits = vec![0.0; VOCAB];
        t.last_logits(&mut logits).unwrap();
        got[slot].push(logits);
    }
    let steps = seqs.iter().map(|(t, n)| t.len() - n).min().unwrap();
    for i in 0..steps {
        let rows: Vec<(usize, u32, usize)> = order
            .iter()
            .map(|&s| (s, seqs[s].0[seqs[s].1 + i], seqs[s].1 + i))
            .collect();
        let mut logits = vec![0.0; rows.len() * VOCAB];
        t.decode_batch(&rows, &mut logits).unwrap();
        for (r, &s) in order.iter().enumerate() {
            got[s].push(logits[r * VOCAB..(r + 1) * VOCAB].to_vec());
        }
    }
    for (slot, (tokens, n_prompt)) in seqs.iter().enumerate() {
        let alone = decode_logits(CpuBackend, file, kv, tokens, *n_prompt);
        for (step, (g, a)) in got[slot].iter().zip(&alone).enumerate() {
            let e = rel_err(g, a);
            assert!(e < tol, "{what}: slot {slot} step {step}: {e}");
        }
    }
    // Bad batches fail and change nothing.
    let mut out = vec![0.0; 2 * VOCAB];
    assert!(
        t.decode_batch(&[(0, 1, 9), (0, 2, 9)], &mut out).is_err(),
        "a slot twice"
    );
    assert!(
        t.decode_batch(&[(0, 1, 9), (3, 2, 9)], &mut out).is_err(),
        "no slot 3"
    );
    assert!(
        t.decode_batch(&[(0, 1, 9), (1, 50, 9)], &mut out).is_err(),
        "id past the vocab"
    );
    assert!(
        t.decode_batch(&[(0, 1, 9), (1, 2, 32)], &mut out).is_err(),
        "past the context"
    );
    assert!(
        t.decode_batch(&[(0, 1, 9)], &mut out).is_err(),
        "out of the wrong size"
    );
    assert!(t.select_slot(3).is_err());
    t.set_slots(1).unwrap();
    assert!(t.select_slot(1).is_err());
}

#[test]
fn cpu_batched_steps_equal_each_sequence_alone() {
    for arch in [Arch::Llama, Arch::Gemma3, Arch::Phi3] {
        for ty in [GgmlType::F32, GgmlType::Q8_0] {
            let file = tiny_model(arch, ty, 13);
            check_batched_steps(
                CpuBackend,
                &file,
                KvDtype::F32,
                1e-5,
                &format!("cpu {arch:?} {ty}"),
            );
        }
    }
}

#[test]
fn cpu_decode_greedy_equals_eval_then_argmax() {
    let file = tiny_model(Arch::Qwen2, GgmlType::Q8_0, 3);
    for ahead in [false, true] {
        let steps = greedy_step_logits(CpuBackend, &file, KvDtype::F32, &TOKENS, N_PROMPT, ahead);
        let eval = decode_logits(CpuBackend, &file, KvDtype::F32, &TOKENS, N_PROMPT);
        assert_eq!(steps, eval);
    }
    let picks = |ahead| greedy_picks(CpuBackend, &file, KvDtype::F32, &TOKENS, 2, 4, ahead);
    assert_eq!(picks(false), picks(true));
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn gpu_device_decode_steps_on_the_emulator_match_the_cpu() {
    use crate::backend::gpu::GpuBackend;
    use crate::device::emulator::EmuRuntime;
    use crate::device::gpu::GpuDevice;
    use std::sync::Arc;

    let devices = [(32, 227 * 1024), (64, 64 * 1024)];
    for (i, (wave, shared)) in devices.into_iter().enumerate() {
        let emu = EmuRuntime::tagged(wave, shared, "-steps");
        let dev = Arc::new(GpuDevice::new(i, Box::new(emu)));
        for (arch, ty, kv, tol) in [
            (Arch::Qwen2, GgmlType::F32, KvDtype::F32, 1e-4),
            (Arch::Llama, GgmlType::Q8_0, KvDtype::F16, 3e-2),
            // q/k norms, post-norms, GeGLU and sliding windows on the decode plan
            (Arch::Gemma3, GgmlType::Q8_0, KvDtype::F16, 3e-2),
            // fused matrices split at load, LongRoPE factors
            (Arch::Phi3, GgmlType::Q8_0, KvDtype::F16, 3e-2),
        ] {
            let file = tiny_model(arch, ty, 29);
            let gpu = GpuBackend::new(dev.clone());
            let gpu = greedy_step_logits(gpu, &file, kv, &TOKENS, 1, false);
            let cpu = decode_logits(CpuBackend, &file, kv, &TOKENS, 1);
            for (step, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
                let e = rel_err(g, c);
                assert!(
                    e < tol,
                    "wave {wave} {arch:?} {ty} {kv:?}: step {step}: {e}"
                );
            }
            if i == 0 && arch == Arch::Llama {
                // Steps queued ahead, taken or dropped, change no pick and no bit of a logit
                // (host-side logic: one device and model suffice).
                let picks = |ahead| {
                    let gpu = GpuBackend::new(dev.clone());
                    greedy_picks(gpu, &file, kv, &TOKENS, 2, 4, ahead)
                };
                let ((plain, plain_logits), (ahead, ahead_logits)) = (picks(false), picks(true));
                assert_eq!(plain.len(), 6);
                for (n, (p, a)) in plain.iter().zip(&ahead).enumerate() {
                    assert_eq!(p.0, a.0, "{arch:?} {ty} {kv:?}: pick {n}");
                    assert_eq!(p.1.to_bits(), a.1.to_bits(), "{arch:?}: logit {n}");
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&plain_logits), bits(&ahead_logits));
            }
            if arch == Arch::Llama {
                // The sampling launch of the plan, at both waves.
                let make = || GpuBackend::new(dev.clone());
                check_sampled_steps(make, &file, kv, &format!("wave {wave}"));
            }
            if matches!(arch, Arch::Llama | Arch::Gemma3) {
                // Several sequences in one step, each in its own cache (sliding windows too).
                let gpu = GpuBackend::new(dev.clone());
                check_batched_steps(gpu, &file, kv, tol, &format!("wave {wave} {arch:?}"));
            }
        }
    }
}

/// The load-time memory check counts the workspace the backend reserves (`workspace` without
/// reserving says what it allocates when reserving), the tensor-core matmul's f16 copy of a
/// full prefill chunk included. Allocates only: no kernel runs.
#[test]
fn workspace_bytes_is_what_reserve_workspace_allocates() {
    use crate::backend::gpu::GpuBackend;
    use crate::device::emulator::EmuRuntime;
    use crate::device::gpu::GpuDevice;
    use crate::model::forward::MAX_BATCH;
    use std::sync::Arc;

    let dev = Arc::new(GpuDevice::new(0, Box::new(EmuRuntime::new(32, 227 * 1024))));
    let backend = GpuBackend::new(dev.clone());
    let (n, k) = (64, 4096);
    let bytes = crate::ops::bench::random_weight_bytes(GgmlType::Q8_0, n, k, 3).unwrap();
    let view = crate::ops::WeightView::new(GgmlType::Q8_0, n, k, &bytes).unwrap();
    let _w = backend.weight(view).unwrap();
    let workload = crate::backend::Workload {
        max_seq_q: MAX_BATCH,
        max_seq_k: 600,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
        vocab: 1000,
        max_weight_cols: k,
    };
    let want = backend.workspace(&workload, false).unwrap();
    assert!(want as usize >= crate::ops::matmul::gpu::mma_scratch_bytes(MAX_BATCH, k));
    let before = dev.allocated_bytes();
    backend.workspace(&workload, true).unwrap();
    assert_eq!(dev.allocated_bytes() - before, want);
}

/// The cases of the plan tests below: a tuning, lines the plan must have (their starts), and
/// text no line may have.
const PLAN_CASES: [(&str, &[&str], &[&str]); 4] = [
    (
        "",
        &[
            "fused q/k/v matvecs + rope + KV append + bias",
            "fused matvec + residual add + next norm's input",
            "fused gate/up matvecs + silu, RMS norm handed over",
            "op matvec",
            "op add",
            "fused matvec, RMS norm folded in",
            "argmax (or sampling) of the logits into the step state",
        ],
        &["op rope", "op rms_norm"],
    ),
    (
        "fuse_rope=false",
        &[
            "fused 3 matvecs + bias",
            "fused rope of q and k + KV append",
        ],
        &["q/k/v matvecs + rope"],
    ),
    (
        "fuse_norm=false",
        &["op rms_norm"],
        &["handed over", "folded"],
    ),
    (
        "decode_attention=kv, graphs=false, decode_ahead=false",
        &["fused q/k/v matvecs + rope + KV append + bias"],
        &[],
    ),
];

/// The tiny qwen2 model of the plan tests: q/k/v biases; its down projection's rows (96 Q8_0
/// values: 102 bytes) are not whole 4-byte words, so that one runs unfused in every plan, and
/// the norms after it (the next layer's, the LM head's) are folded in rather than handed over.
fn plan_model() -> GgufFile {
    tiny_model(Arch::Qwen2, GgmlType::Q8_0, 31)
}

/// A GPU backend on an emulated device with `spec` applied to the default tuning.
fn tuned_backend(
    dev: &std::sync::Arc<crate::device::gpu::GpuDevice>,
    spec: &str,
) -> crate::backend::gpu::GpuBackend {
    let mut tuning = crate::device::tuning::Tuning::default();
    tuning.apply_str(spec).unwrap();
    crate::backend::gpu::GpuBackend::with_tuning(dev.clone(), tuning).unwrap()
}

/// The decode plan says what it fused, for each tuning that changes that (the plan is made at
/// load without running a kernel: this runs in plain `cargo test`).
#[test]
fn gpu_plan_lists_its_fusions() {
    use crate::device::emulator::EmuRuntime;
    use crate::device::gpu::GpuDevice;
    use std::sync::Arc;

    let dev = Arc::new(GpuDevice::new(
        8,
        Box::new(EmuRuntime::tagged(32, 227 * 1024, "-plan-lines")),
    ));
    let file = plan_model();
    for (spec, must, must_not) in PLAN_CASES {
        let t = Transformer::load(tuned_backend(&dev, spec), &file, 32, KvDtype::F16).unwrap();
        let plan = t.plan_description();
        for line in must {
            assert!(
                plan.iter().any(|l| l.starts_with(line)),
                "[{spec}] no {line:?} in the plan {plan:#?}"
            );
        }
        for text in must_not {
            assert!(
                !plan.iter().any(|l| l.contains(text)),
                "[{spec}] {text:?} in the plan {plan:#?}"
            );
        }
    }
}

/// The decode plan on the emulator with each tuning that changes what it fuses: its one-token
/// steps (taken, and queued ahead) give the CPU's logits (a wave-64 device; the steps test
/// above runs the defaults at wave 32 and 64).
#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn gpu_plan_fusions_on_the_emulator_match_the_cpu() {
    use crate::device::emulator::EmuRuntime;
    use crate::device::gpu::GpuDevice;
    use std::sync::Arc;

    let dev = Arc::new(GpuDevice::new(
        7,
        Box::new(EmuRuntime::tagged(64, 64 * 1024, "-plan")),
    ));
    let file = plan_model();
    let cpu = greedy_step_logits(CpuBackend, &file, KvDtype::F16, &TOKENS, 2, false);
    for (spec, _, _) in PLAN_CASES {
        let got = greedy_step_logits(
            tuned_backend(&dev, spec),
            &file,
            KvDtype::F16,
            &TOKENS,
            2,
            true,
        );
        for (step, (g, c)) in got.iter().zip(&cpu).enumerate() {
            let e = rel_err(g, c);
            assert!(e < 3e-2, "[{spec}] step {step}: {e}");
        }
    }
    // The plan's sampling launch with the block the tuning sets (each of the kernel's two
    // builds): its picks are the sampling op's on the step's logits.
    for spec in ["sample_block=128", "sample_block=1024"] {
        check_sampled_steps(|| tuned_backend(&dev, spec), &file, KvDtype::F16, spec);
    }
}
