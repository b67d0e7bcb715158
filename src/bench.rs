//! `rocmforge bench`: prompt-processing and token-generation speed of a model file, measured
//! like llama-bench: a fixed number of tokens (end-of-generation ignored), one warm-up run left
//! out, the device synchronized before each clock reading, the mean and standard deviation of
//! the repeats.
//!
//! Tests are llama-bench's: for each depth `d` of `depths`, `pp{n}` for each `n` of `n_prompt`
//! and `tg{n}` for each `n` of `n_gen` (named `pp{n} @ d{d}` when `d > 0`). Before each run
//! (warm-up included), `d` tokens are evaluated into the cache, untimed; the test then starts
//! at position `d`.
//!
//! - pp: one evaluation of `n` tokens (the last token's logits and their argmax included),
//!   `n / time`.
//! - tg: `n` single-token steps, each feeding back the previous step's greedy pick
//!   (`decode`: argmax on the device, one id copied back; on a GPU the step is the decode
//!   plan's recorded graph, replayed per token), `n / time`. With `sampling`, each step draws
//!   its token instead (`ops::sampling` with those parameters, part of the same step on a
//!   GPU), as `Model.generate` with them does.
//!
//! Also reported: the model's size and parameters (all tensors, as llama-bench counts them),
//! the bytes of weights one decode step reads (every tensor but the token embedding, which is
//! read one row at a time, unless it is also the LM head) and of KV cache per cached position,
//! the device's copy bandwidth (a large device-to-device copy, read + write bytes), and the
//! device memory this library held at most.

use std::collections::HashMap;
use std::time::Instant;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::ops::sampling::{SampleParams, StepPick};

/// Prompt processing or token generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKind {
    Pp,
    Tg,
}

/// One test of a benchmark: `n_tokens` processed or generated after `depth` cached tokens.
#[derive(Clone, Debug)]
pub struct BenchTest {
    pub kind: TestKind,
    pub n_tokens: usize,
    pub depth: usize,
    /// Tokens/s of every repeat (warm-up left out).
    pub runs: Vec<f64>,
}

impl BenchTest {
    /// llama-bench's name of the test: `pp512`, `tg128`, `tg128 @ d4096`.
    pub fn name(&self) -> String {
        let kind = match self.kind {
            TestKind::Pp => "pp",
            TestKind::Tg => "tg",
        };
        match self.depth {
            0 => format!("{kind}{}", self.n_tokens),
            d => format!("{kind}{} @ d{d}", self.n_tokens),
        }
    }
}

/// What `bench_model` measured. Times in seconds, rates in tokens/s, bandwidth in bytes/s.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub device: String,
    /// What the model's decode plan runs (`LanguageModel::plan`).
    pub plan: Vec<String>,
    pub file_bytes: u64,
    /// Bytes and elements of all tensors (llama-bench's model size and parameters).
    pub model_bytes: u64,
    pub n_params: u64,
    /// Weight bytes one decode step reads.
    pub bytes_per_token: u64,
    /// KV cache bytes per cached position (what a decode step reads per token before it).
    pub kv_bytes_per_position: u64,
    pub tests: Vec<BenchTest>,
    /// Device-to-device copy bandwidth (read + write), 0 on the CPU.
    pub copy_bandwidth: f64,
    /// Peak device bytes held by this library while loading and running the model (GPU only).
    pub peak_device_bytes: u64,
    /// Bytes of the KV cache.
    pub kv_cache_bytes: u64,
    /// The tg steps' sampling parameters (None: greedy).
    pub sampling: Option<SampleParams>,
}

impl BenchReport {
    /// The tg roofline of `test` in tokens/s: copy bandwidth over the bytes a step reads, the
    /// weights plus the KV cache of the positions before it (on average over the test's steps).
    /// None on the CPU and for pp.
    pub fn roofline(&self, test: &BenchTest) -> Option<f64> {
        if test.kind != TestKind::Tg || self.copy_bandwidth <= 0.0 {
            return None;
        }
        let mean_cached = test.depth as f64 + (test.n_tokens as f64 - 1.0) / 2.0;
        let bytes = self.bytes_per_token as f64 + self.kv_bytes_per_position as f64 * mean_cached;
        (bytes > 0.0).then(|| self.copy_bandwidth / bytes)
    }
}

/// Mean and sample standard deviation of `v` (0 for fewer than two values), as llama-bench
/// reports its t/s.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Weight bytes a decode step reads: all tensors but the token embedding, which counts only
/// when it is also the LM head (no `output.weight`).
pub fn decode_bytes_per_token(file: &GgufFile) -> u64 {
    let tied = file.tensor_info("output.weight").is_none();
    file.tensors
        .iter()
        .filter(|t| tied || t.name != "token_embd.weight")
        .map(|t| t.nbytes)
        .sum()
}

/// Device-to-device copy bandwidth (read + write bytes per second) of `bytes` per copy.
fn copy_bandwidth(
    dev: &std::sync::Arc<crate::device::gpu::GpuDevice>,
    bytes: usize,
) -> Result<f64> {
    let params = HashMap::from([("bytes".to_string(), bytes as f64)]);
    let times = crate::ops::bench::bench_op(dev, "copy", &params, "", 3, 10)?;
    let ms = median(&times.iter().map(|&t| t as f64).collect::<Vec<_>>());
    Ok(2.0 * bytes as f64 / (ms * 1e-3))
}

/// Token ids for the benchmark prompt: a fixed pseudo-random sequence inside the vocabulary.
fn prompt_ids(n: usize, vocab: usize) -> Vec<u32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// Measure `path` on `device` ("cpu", "gpu", "auto") with `tuning` (`key=value` pairs of the
/// tuning record, see `model::load`): for each depth, a pp test per prompt size and a tg test
/// per generation size (sizes of 0 left out), `repeats` timed runs each after one warm-up run,
/// the tg steps greedy or drawn with `sampling`. The model is loaded once, with a context of
/// the largest depth plus the largest test.
#[allow(clippy::too_many_arguments)]
pub fn bench_model(
    path: &str,
    device: &str,
    n_prompt: &[usize],
    n_gen: &[usize],
    depths: &[usize],
    repeats: usize,
    tuning: &[(String, String)],
    sampling: Option<&SampleParams>,
) -> Result<BenchReport> {
    if let Some(p) = sampling {
        p.check()?;
    }
    let n_prompt: Vec<usize> = n_prompt.iter().copied().filter(|&n| n > 0).collect();
    let n_gen: Vec<usize> = n_gen.iter().copied().filter(|&n| n > 0).collect();
    let depths: &[usize] = if depths.is_empty() { &[0] } else { depths };
    if repeats == 0 || (n_prompt.is_empty() && n_gen.is_empty()) {
        return Err(Error::invalid(
            "bench needs repeats >= 1 and a prompt or generation size > 0",
        ));
    }
    let file = GgufFile::open(path)?;
    let dev = crate::device::resolve_device(device)?;
    let copy_bw = match &dev {
        Device::Gpu(g) => copy_bandwidth(g, 1 << 30)?,
        Device::Cpu => 0.0,
    };
    if let Device::Gpu(g) = &dev {
        g.reset_peak_allocated();
    }
    let longest = n_prompt.iter().chain(&n_gen).copied().max().unwrap_or(1);
    let n_ctx = depths.iter().copied().max().unwrap_or(0) + longest;
    let (mut model, _) = crate::model::load(&file, device, Some(n_ctx), None, tuning)?;
    let cfg = model.config().clone();
    let kv_elem = match model.kv_dtype() {
        crate::device::KvDtype::F16 => 2,
        crate::device::KvDtype::F32 => 4,
    };
    let kv_bytes_per_position = (2 * cfg.n_layers * cfg.kv_dim() * kv_elem) as u64;
    let kv_cache_bytes = kv_bytes_per_position * model.n_ctx() as u64;
    let mut go_on = || Ok(());
    let pick = match sampling {
        Some(p) => StepPick::new(p, 0, 0),
        None => StepPick::Greedy,
    };
    let mut history = Vec::new();

    // One run of a test: the untimed fill of `depth` positions, then the timed tokens.
    let mut run = |model: &mut Box<dyn crate::model::LanguageModel>,
                   kind: TestKind,
                   n: usize,
                   depth: usize|
     -> Result<f64> {
        let ids = prompt_ids(depth + n.max(1), cfg.vocab_size);
        if depth > 0 {
            model.eval(&ids[..depth], 0, &mut go_on)?;
            model.last_argmax()?;
        }
        let start = Instant::now();
        match kind {
            TestKind::Pp => {
                model.eval(&ids[depth..depth + n], depth, &mut go_on)?;
                model.last_argmax()?; // copies one id back: the device is done
            }
            TestKind::Tg => {
                history.clear();
                history.extend_from_slice(&ids[..depth]);
                let mut token = ids[depth];
                for i in 0..n {
                    history.push(token);
                    let pos = depth + i;
                    token = model.decode(token, pos, &pick, &history, i + 1 < n)?.0;
                }
            }
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    };
    let mut tests = Vec::new();
    for &depth in depths {
        let sizes = n_prompt
            .iter()
            .map(|&n| (TestKind::Pp, n))
            .chain(n_gen.iter().map(|&n| (TestKind::Tg, n)));
        for (kind, n) in sizes {
            run(&mut model, kind, n, depth)?;
            let runs = (0..repeats)
                .map(|_| run(&mut model, kind, n, depth))
                .collect::<Result<Vec<_>>>()?;
            tests.push(BenchTest {
                kind,
                n_tokens: n,
                depth,
                runs,
            });
        }
    }
    let peak_device_bytes = match &dev {
        Device::Gpu(g) => g.peak_allocated_bytes(),
        Device::Cpu => 0,
    };
    Ok(BenchReport {
        device: model.device_name(),
        plan: model.plan(),
        file_bytes: file.file_size(),
        model_bytes: file.tensors.iter().map(|t| t.nbytes).sum(),
        n_params: file.tensors.iter().map(|t| t.n_elements).sum(),
        bytes_per_token: decode_bytes_per_token(&file),
        kv_bytes_per_position,
        tests,
        copy_bandwidth: copy_bw,
        peak_device_bytes,
        kv_cache_bytes,
        sampling: sampling.cloned(),
    })
}
