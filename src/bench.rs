//! `rocmforge bench`: prompt-processing and token-generation speed of a model file, measured
//! like llama-bench: a fixed number of tokens (end-of-generation ignored), one warm-up run left
//! out, the device synchronized before each clock reading, the median of the repeats.
//!
//! - pp: one evaluation of `n_prompt` tokens into an empty cache (the last token's logits and
//!   their argmax included), `n_prompt / time`.
//! - tg: `n_gen` single-token steps from an empty cache, each feeding back the previous step's
//!   greedy pick (`decode_greedy`: argmax on the device, one id copied back; on a GPU the
//!   step is the decode plan's recorded graph, replayed per token), `n_gen / time`. With
//!   `sampling`, each step draws its token instead (`ops::sampling` with those parameters,
//!   part of the same step on a GPU), as `Model.generate` with them does.
//!
//! Also reported: the bytes of weights one decode step reads (every tensor but the token
//! embedding, which is read one row at a time, unless it is also the LM head), the device's
//! copy bandwidth (a large device-to-device copy, read + write bytes), the tg roofline
//! `bandwidth / bytes per token`, and the device memory this library held at most.

use std::collections::HashMap;
use std::time::Instant;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::ops::sampling::{SampleParams, StepPick};

/// What `bench_model` measured. Times in seconds, rates in tokens/s, bandwidth in bytes/s.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub device: String,
    /// What the model's decode plan runs (`LanguageModel::plan`).
    pub plan: Vec<String>,
    pub file_bytes: u64,
    /// Weight bytes one decode step reads.
    pub bytes_per_token: u64,
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Tokens/s of every repeat (warm-up left out).
    pub pp_runs: Vec<f64>,
    pub tg_runs: Vec<f64>,
    /// Device-to-device copy bandwidth (read + write), 0 on the CPU.
    pub copy_bandwidth: f64,
    /// Peak device bytes held by this library while loading and running the model (GPU only).
    pub peak_device_bytes: u64,
    /// Bytes of the KV cache.
    pub kv_cache_bytes: u64,
    /// The tg steps' sampling parameters (None: greedy).
    pub sampling: Option<SampleParams>,
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
/// tuning record, see `model::load`): `repeats` timed runs of each test after one warm-up run,
/// the tg steps greedy or drawn with `sampling`.
pub fn bench_model(
    path: &str,
    device: &str,
    n_prompt: usize,
    n_gen: usize,
    repeats: usize,
    tuning: &[(String, String)],
    sampling: Option<&SampleParams>,
) -> Result<BenchReport> {
    if let Some(p) = sampling {
        p.check()?;
    }
    if repeats == 0 || (n_prompt == 0 && n_gen == 0) {
        return Err(Error::invalid(
            "bench needs repeats >= 1 and n_prompt or n_gen > 0",
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
    let n_ctx = n_prompt.max(n_gen).max(1);
    let (mut model, _) = crate::model::load(&file, device, Some(n_ctx), None, tuning)?;
    let cfg = model.config().clone();
    let kv_elem = match model.kv_dtype() {
        crate::device::KvDtype::F16 => 2,
        crate::device::KvDtype::F32 => 4,
    };
    let kv_cache_bytes = (2 * cfg.n_layers * model.n_ctx() * cfg.kv_dim() * kv_elem) as u64;
    let mut go_on = || Ok(());
    let prompt = prompt_ids(n_prompt, cfg.vocab_size);

    let mut run_pp = |model: &mut Box<dyn crate::model::LanguageModel>| -> Result<f64> {
        let start = Instant::now();
        model.eval(&prompt, 0, &mut go_on)?;
        model.last_argmax()?; // copies one id back: the device is done
        Ok(n_prompt as f64 / start.elapsed().as_secs_f64())
    };
    let mut pp_runs = Vec::new();
    if n_prompt > 0 {
        run_pp(&mut model)?;
        for _ in 0..repeats {
            pp_runs.push(run_pp(&mut model)?);
        }
    }

    let first = prompt_ids(1, cfg.vocab_size)[0];
    let pick = match sampling {
        Some(p) => StepPick::new(p, 0, 0),
        None => StepPick::Greedy,
    };
    let mut history = Vec::with_capacity(n_gen);
    let mut run_tg = |model: &mut Box<dyn crate::model::LanguageModel>| -> Result<f64> {
        history.clear();
        let start = Instant::now();
        let mut token = first;
        for pos in 0..n_gen {
            history.push(token);
            token = model
                .decode(token, pos, &pick, &history, pos + 1 < n_gen)?
                .0;
        }
        Ok(n_gen as f64 / start.elapsed().as_secs_f64())
    };
    let mut tg_runs = Vec::new();
    if n_gen > 0 {
        run_tg(&mut model)?;
        for _ in 0..repeats {
            tg_runs.push(run_tg(&mut model)?);
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
        bytes_per_token: decode_bytes_per_token(&file),
        n_prompt,
        n_gen,
        pp_runs,
        tg_runs,
        copy_bandwidth: copy_bw,
        peak_device_bytes,
        kv_cache_bytes,
        sampling: sampling.cloned(),
    })
}
