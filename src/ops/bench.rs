//! Micro-benchmarks of the GPU ops on device-resident buffers: random inputs of the given
//! sizes are uploaded once, the op is launched `warmup` times, then each of `iters` launches
//! is timed with device events. `bench/ops_bench.py` turns the times into GB/s and TFLOP/s.

use std::collections::HashMap;
use std::sync::Arc;

use half::f16;

use crate::device::gpu::{DeviceBuffer, GpuDevice};
use crate::device::layout::{to_device_layout, DeviceWeight};
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::ops::attention::{gpu as attention, AttentionShape};
use crate::ops::rope::RopeParams;
use crate::ops::{activation, argmax, elementwise, embedding, kv_cache, matmul, norm, rope};
use crate::test_rng::TestRng;

fn random_f32(dev: &Arc<GpuDevice>, rng: &mut TestRng, n: usize) -> Result<DeviceBuffer> {
    let v: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
    DeviceBuffer::from_slice(dev, &v, "bench")
}

/// Random blocks of `ty` with small finite fp16 scales.
pub fn random_weight_bytes(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Result<Vec<u8>> {
    let mut rng = TestRng::seeded(seed);
    let (bs, ts) = (ty.block_size(), ty.type_size());
    if !cols.is_multiple_of(bs) {
        return Err(Error::invalid(format!(
            "{} rows of {cols} are not whole blocks of {bs}",
            ty.name()
        )));
    }
    let n_bytes = rows * cols / bs * ts;
    let mut bytes: Vec<u8> = (0..n_bytes).map(|_| rng.next_u64() as u8).collect();
    match ty {
        GgmlType::F32 => bytes
            .chunks_mut(4)
            .for_each(|c| c.copy_from_slice(&rng.uniform().to_le_bytes())),
        GgmlType::F16 => bytes
            .chunks_mut(2)
            .for_each(|c| c.copy_from_slice(&f16::from_f32(rng.uniform()).to_le_bytes())),
        GgmlType::BF16 => bytes
            .chunks_mut(2)
            .for_each(|c| c.copy_from_slice(&half::bf16::from_f32(rng.uniform()).to_le_bytes())),
        _ => {
            let offsets: &[usize] = match ty {
                GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
                GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[0],
                GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
                GgmlType::Q6_K => &[208],
                GgmlType::Q2_K => &[80, 82],
                GgmlType::Q3_K => &[108],
                _ => &[],
            };
            for block in bytes.chunks_mut(ts) {
                for &o in offsets {
                    let d = f16::from_f32(rng.uniform() * 0.05);
                    block[o..o + 2].copy_from_slice(&d.to_le_bytes());
                }
                if ty == GgmlType::Q8_K {
                    block[..4].copy_from_slice(&(rng.uniform() * 0.05).to_le_bytes());
                }
            }
        }
    }
    Ok(bytes)
}

fn get(params: &HashMap<String, f64>, key: &str) -> Result<usize> {
    params
        .get(key)
        .map(|&v| v as usize)
        .ok_or_else(|| Error::invalid(format!("benchmark parameter {key:?} is missing")))
}

fn get_or(params: &HashMap<String, f64>, key: &str, default: usize) -> usize {
    params.get(key).map(|&v| v as usize).unwrap_or(default)
}

/// Device times (ms) of `iters` runs of `op` after `warmup` runs. `params` holds the sizes
/// (see `bench/ops_bench.py`); `ty` names a weight type for matmul and embedding.
pub fn bench_op(
    dev: &Arc<GpuDevice>,
    op: &str,
    params: &HashMap<String, f64>,
    ty: &str,
    warmup: usize,
    iters: usize,
) -> Result<Vec<f32>> {
    let mut rng = TestRng::seeded(0x5eed_0000 + op.len() as u64);
    let d = dev.as_ref();
    let mut run: Box<dyn FnMut() -> Result<()>> = match op {
        "copy" => {
            // Device memory first: a size the GPU cannot hold fails here, not on the host.
            let bytes = get(params, "bytes")? / 4 * 4;
            let mut dst = DeviceBuffer::alloc(dev, bytes, "copy")?;
            let mut src = DeviceBuffer::alloc(dev, bytes, "copy")?;
            let chunk: Vec<f32> = (0..(bytes / 4).min(1 << 24))
                .map(|_| rng.uniform())
                .collect();
            let mut at = 0;
            while at < bytes {
                let n = (bytes - at).min(chunk.len() * 4);
                let tmp = DeviceBuffer::from_slice(dev, &chunk[..n / 4], "copy")?;
                src.copy_from(at, &tmp, 0, n, "copy")?;
                at += n;
            }
            Box::new(move || dst.copy_from(0, &src, 0, bytes, "copy"))
        }
        "rms_norm" => {
            let (rows, dim) = (get(params, "rows")?, get(params, "dim")?);
            let (x, w) = (
                random_f32(dev, &mut rng, rows * dim)?,
                random_f32(dev, &mut rng, dim)?,
            );
            let mut out = DeviceBuffer::alloc(dev, rows * dim * 4, "bench")?;
            Box::new(move || norm::gpu::launch_rms_norm(d, &x, &w, 1e-6, rows, dim, &mut out))
        }
        "rope" => {
            let (tokens, heads, head_dim) = (
                get(params, "tokens")?,
                get(params, "heads")?,
                get(params, "head_dim")?,
            );
            let params = RopeParams {
                theta: 10000.0,
                neox: get_or(params, "neox", 0) != 0,
                n_rot: head_dim,
            };
            let mut x = random_f32(dev, &mut rng, tokens * heads * head_dim)?;
            Box::new(move || {
                rope::gpu::launch_rope(
                    d,
                    &mut x,
                    tokens,
                    tokens,
                    heads,
                    head_dim,
                    rope::gpu::Positions::From(0),
                    &params,
                    None,
                )
            })
        }
        "swiglu" | "add" | "scale" => {
            let n = get(params, "n")?;
            let (a, b) = (random_f32(dev, &mut rng, n)?, random_f32(dev, &mut rng, n)?);
            let mut out = random_f32(dev, &mut rng, n)?;
            match op {
                "swiglu" => Box::new(move || {
                    activation::gpu::launch_glu(
                        d,
                        &a,
                        &b,
                        n,
                        activation::Activation::Silu,
                        &mut out,
                    )
                }),
                "add" => Box::new(move || elementwise::gpu::launch_add(d, &mut out, &a, n)),
                _ => Box::new(move || elementwise::gpu::launch_scale(d, &mut out, 1.0001, n)),
            }
        }
        "argmax" => {
            let n = get(params, "n")?;
            let x = random_f32(dev, &mut rng, n)?;
            let mut out = DeviceBuffer::alloc(dev, 4, "bench")?;
            Box::new(move || argmax::gpu::launch_argmax(d, &x, 1, n, false, &mut out))
        }
        "kv_append" => {
            let (n, row_len, n_ctx) = (
                get(params, "n")?,
                get(params, "row_len")?,
                get(params, "n_ctx")?,
            );
            let dtype = if get_or(params, "f16", 1) != 0 {
                KvDtype::F16
            } else {
                KvDtype::F32
            };
            let src = random_f32(dev, &mut rng, n * row_len)?;
            let elem = if dtype == KvDtype::F16 { 2 } else { 4 };
            let mut cache = DeviceBuffer::zeros(dev, n_ctx * row_len * elem, "bench")?;
            Box::new(move || {
                kv_cache::gpu::launch_kv_append(d, &mut cache, dtype, &src, n_ctx - n, n, row_len)
            })
        }
        "embedding" | "matmul" | "matmul_mma" | "matvec" => {
            let ty = GgmlType::from_name(ty)?;
            let (rows, cols) = (get(params, "n")?, get(params, "k")?);
            let bytes = random_weight_bytes(ty, rows, cols, 7)?;
            let bytes = to_device_layout(ty, cols, &bytes);
            let wbuf = DeviceBuffer::from_slice(dev, &bytes, "bench")?;
            if op == "embedding" {
                let n_ids = get(params, "n_ids")?;
                let ids: Vec<i32> = (0..n_ids)
                    .map(|_| (rng.next_u64() % rows as u64) as i32)
                    .collect();
                let idb = DeviceBuffer::from_slice(dev, &ids, "bench")?;
                let mut out = DeviceBuffer::alloc(dev, n_ids * cols * 4, "bench")?;
                Box::new(move || {
                    let w = DeviceWeight {
                        ty,
                        rows,
                        cols,
                        bytes: &wbuf,
                    };
                    embedding::gpu::launch_embedding(d, &w, &idb, n_ids, &mut out)
                })
            } else {
                let m = get(params, "m")?;
                let x = random_f32(dev, &mut rng, m * cols)?;
                let mut out = DeviceBuffer::alloc(dev, m * rows * 4, "bench")?;
                // matmul_mma: the tensor-core kernel (row tile "bm" 64 or 128, 0 or absent:
                // the launcher's choice), pre-pass included. matvec: the model's matmul
                // (`launch_matmul_model`: at m = 1 the decode family, 8-bit x).
                let mma = op == "matmul_mma";
                let model = op == "matvec";
                let bm = Some(get_or(params, "bm", 0)).filter(|&b| b != 0);
                Box::new(move || {
                    let w = DeviceWeight {
                        ty,
                        rows,
                        cols,
                        bytes: &wbuf,
                    };
                    if mma {
                        matmul::gpu::launch_matmul_mma_tile(d, d.tuning(), &x, &w, m, &mut out, bm)
                    } else if model {
                        matmul::gpu::launch_matmul_model(d, d.tuning(), &x, &w, m, &mut out)
                    } else {
                        matmul::gpu::launch_matmul(d, &x, &w, m, &mut out)
                    }
                })
            }
        }
        "flash_attention" | "qkt_matmul" | "softmax" | "weighted_matmul" => {
            let s = AttentionShape {
                batch: get(params, "batch")?,
                seq_q: get(params, "seq_q")?,
                seq_k: get(params, "seq_k")?,
                heads: get(params, "heads")?,
                kv_heads: get(params, "kv_heads")?,
                head_dim: get(params, "head_dim")?,
            };
            s.check(op)?;
            let scale = 1.0 / (s.head_dim as f32).sqrt();
            match op {
                "flash_attention" => {
                    let causal = get_or(params, "causal", 1) != 0;
                    let kv = if get_or(params, "f16", 0) != 0 {
                        KvDtype::F16
                    } else {
                        KvDtype::F32
                    };
                    let q = random_f32(dev, &mut rng, s.q_len())?;
                    let (k, v) = if kv == KvDtype::F16 {
                        let h = |rng: &mut TestRng| -> Vec<u16> {
                            (0..s.kv_len())
                                .map(|_| f16::from_f32(rng.uniform()).to_bits())
                                .collect()
                        };
                        (
                            DeviceBuffer::from_slice(dev, &h(&mut rng), "bench")?,
                            DeviceBuffer::from_slice(dev, &h(&mut rng), "bench")?,
                        )
                    } else {
                        (
                            random_f32(dev, &mut rng, s.kv_len())?,
                            random_f32(dev, &mut rng, s.kv_len())?,
                        )
                    };
                    let mut out = DeviceBuffer::alloc(dev, s.q_len() * 4, "bench")?;
                    Box::new(move || {
                        attention::launch_flash_attention(
                            d, &q, &k, &v, kv, s.seq_k, &s, causal, scale, None, &mut out,
                        )
                    })
                }
                "qkt_matmul" => {
                    let (q, k) = (
                        random_f32(dev, &mut rng, s.q_len())?,
                        random_f32(dev, &mut rng, s.kv_len())?,
                    );
                    let mut out = DeviceBuffer::alloc(dev, s.scores_len() * 4, "bench")?;
                    Box::new(move || attention::launch_qkt_matmul(d, &q, &k, &s, scale, &mut out))
                }
                "softmax" => {
                    let mut x = random_f32(dev, &mut rng, s.scores_len())?;
                    let rows = s.batch * s.heads * s.seq_q;
                    Box::new(move || attention::launch_softmax(d, &mut x, rows, s.seq_k))
                }
                _ => {
                    let (w, v) = (
                        random_f32(dev, &mut rng, s.scores_len())?,
                        random_f32(dev, &mut rng, s.kv_len())?,
                    );
                    let mut out = DeviceBuffer::alloc(dev, s.q_len() * 4, "bench")?;
                    Box::new(move || attention::launch_weighted_matmul(d, &w, &v, &s, &mut out))
                }
            }
        }
        other => return Err(Error::invalid(format!("no benchmark for op {other:?}"))),
    };
    for _ in 0..warmup {
        run()?;
    }
    dev.synchronize("bench")?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        times.push(dev.time_ms(&mut *run)?);
    }
    Ok(times)
}
