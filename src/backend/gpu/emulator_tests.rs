//! The GPU launchers and kernels, run on the CPU emulation (`crate::device::emulator`) at wave size 32 and
//! 64, against the CPU reference ops. Building the kernels with g++ takes minutes, so these
//! tests are ignored by default; `scripts/check-kernels.sh` runs them
//! (`cargo test --lib emulator -- --ignored`).

use std::sync::{Arc, OnceLock};

use half::f16;

use crate::device::emulator::EmuRuntime;
use crate::device::gpu::{DeviceBuffer, GpuDevice};
use crate::device::{kernels, Device};
use crate::gguf::{quants, GgmlType};
use crate::ops::bench::random_weight_bytes;
use crate::ops::rope::RopeParams;
use crate::ops::{self, attention::AttentionShape, WeightView};

/// splitmix64 (fresh seed each run, printed; ROCMFORGE_TEST_SEED repeats one).
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("ROCMFORGE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("[{test}: seed {seed}]");
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// Emulated devices: wave 32 with the shared memory of an NVIDIA GPU, wave 64 with AMD's 64 KiB.
fn devices() -> [Arc<GpuDevice>; 2] {
    static DEVS: OnceLock<[Arc<GpuDevice>; 2]> = OnceLock::new();
    DEVS.get_or_init(|| {
        [
            Arc::new(GpuDevice::new(0, Box::new(EmuRuntime::new(32, 227 * 1024)))),
            Arc::new(GpuDevice::new(1, Box::new(EmuRuntime::new(64, 64 * 1024)))),
        ]
    })
    .clone()
}

/// Emulated devices like `devices()` for one test alone (ordinals `first`, `first + 1`; build
/// directories told apart by `tag`), so that the test can count its own launches while other
/// tests launch on the shared ones.
fn own_devices(first: usize, tag: &str) -> [Arc<GpuDevice>; 2] {
    [
        Arc::new(GpuDevice::new(
            first,
            Box::new(EmuRuntime::tagged(32, 227 * 1024, tag)),
        )),
        Arc::new(GpuDevice::new(
            first + 1,
            Box::new(EmuRuntime::tagged(64, 64 * 1024, tag)),
        )),
    ]
}

/// The first `n` floats of a device buffer.
fn download(gpu: &super::GpuBackend, g: &DeviceBuffer, n: usize) -> Vec<f32> {
    use crate::backend::Backend;
    let mut v = vec![0f32; n];
    gpu.download(g, &mut v).unwrap();
    v
}

/// A KV cache's bytes.
fn cache_bytes(c: &super::backend::GpuKv) -> Vec<u8> {
    let mut v = vec![0u8; c.buf.bytes()];
    c.buf.read(&mut v, "test").unwrap();
    v
}

/// A KV cache's values as f32 (f16 widened).
fn cache_values(c: &super::backend::GpuKv) -> Vec<f32> {
    let b = cache_bytes(c);
    match c.dtype {
        crate::device::KvDtype::F32 => b
            .chunks_exact(4)
            .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
            .collect(),
        crate::device::KvDtype::F16 => b
            .chunks_exact(2)
            .map(|x| f16::from_bits(u16::from_le_bytes([x[0], x[1]])).to_f32())
            .collect(),
    }
}

/// max |a - b| / max(1, max |b|) (NaN counts as a failure).
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() != y.is_nan() {
                f32::INFINITY
            } else {
                (x - y).abs() / scale
            }
        })
        .fold(0f32, f32::max)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: relative error {e} > {tol}");
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn small_ops_match_the_cpu() {
    let mut rng = Rng::new("small_ops_match_the_cpu");
    for dev in devices() {
        let gpu = Device::Gpu(dev.clone());
        let before = dev.launch_count();
        // rms_norm: scalar loop (37), float4 kept in registers (896, 4096), and a row longer
        // than the registers hold (20000)
        for (rows, dim) in [(3, 37), (1, 896), (2, 4096), (2, 20000)] {
            let (x, w) = (rng.vec(rows * dim), rng.vec(dim));
            let (mut a, mut b) = (vec![0f32; rows * dim], vec![0f32; rows * dim]);
            ops::norm::rms_norm(&gpu, &x, &w, 1e-5, rows, &mut a).unwrap();
            ops::norm::rms_norm(&Device::Cpu, &x, &w, 1e-5, rows, &mut b).unwrap();
            assert_close(&format!("rms_norm {rows}x{dim}"), &a, &b, 1e-5);
        }
        // swiglu, add, add_bias, scale
        let n = 1000;
        let (g, u) = (rng.vec(n), rng.vec(n));
        let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
        ops::activation::swiglu(&gpu, &g, &u, n, &mut a).unwrap();
        ops::activation::swiglu(&Device::Cpu, &g, &u, n, &mut b).unwrap();
        assert_close("swiglu", &a, &b, 1e-6);
        let (mut a, mut b) = (g.clone(), g.clone());
        ops::elementwise::add(&gpu, &mut a, &u, n).unwrap();
        ops::elementwise::add(&Device::Cpu, &mut b, &u, n).unwrap();
        assert_close("add", &a, &b, 0.0);
        let bias = rng.vec(40);
        let (mut a, mut b) = (g[..960].to_vec(), g[..960].to_vec());
        ops::elementwise::add_bias(&gpu, &mut a, &bias, 24).unwrap();
        ops::elementwise::add_bias(&Device::Cpu, &mut b, &bias, 24).unwrap();
        assert_close("add_bias", &a, &b, 0.0);
        let (mut a, mut b) = (g.clone(), g.clone());
        ops::elementwise::scale(&gpu, &mut a, 0.37, n).unwrap();
        ops::elementwise::scale(&Device::Cpu, &mut b, 0.37, n).unwrap();
        assert_close("scale", &a, &b, 0.0);
        // argmax: ties go to the lowest index, NaN never wins
        let mut x = rng.vec(3001);
        x[17] = 5.0;
        x[2000] = 5.0;
        x[5] = f32::NAN;
        assert_eq!(ops::argmax::argmax(&gpu, &x, x.len()).unwrap(), 17);
        assert_eq!(
            ops::argmax::argmax(&gpu, &[f32::NAN, f32::NAN], 2).unwrap(),
            0
        );
        let mut long = rng.vec(40_000); // several blocks in the first pass
        long[39_001] = 7.0;
        long[25_000] = 7.0;
        assert_eq!(
            ops::argmax::argmax(&gpu, &long, long.len()).unwrap(),
            25_000
        );
        // the model's pick (Backend::argmax): the first NaN wins, in either pass
        if let Device::Gpu(dev) = &gpu {
            use crate::backend::Backend;
            let backend = crate::backend::gpu::GpuBackend::new(dev.clone());
            long[30_000] = f32::NAN;
            long[38_000] = f32::NAN;
            let buf = backend.upload(&long).unwrap();
            assert_eq!(backend.argmax(&buf, long.len()).unwrap(), 30_000);
            x[2] = f32::NAN;
            let buf = backend.upload(&x).unwrap();
            assert_eq!(backend.argmax(&buf, x.len()).unwrap(), 2);
        }
        // kv_append, f32 and f16
        let (row_len, n_ctx) = (24, 10);
        let src = rng.vec(3 * row_len);
        let mut c32a = vec![0f32; n_ctx * row_len];
        let mut c32b = c32a.clone();
        ops::kv_cache::kv_append(&gpu, &mut c32a, &src, 4, 3, row_len).unwrap();
        ops::kv_cache::kv_append(&Device::Cpu, &mut c32b, &src, 4, 3, row_len).unwrap();
        assert_eq!(c32a, c32b);
        let mut c16a = vec![f16::ZERO; n_ctx * row_len];
        let mut c16b = c16a.clone();
        ops::kv_cache::kv_append(&gpu, &mut c16a, &src, 7, 3, row_len).unwrap();
        ops::kv_cache::kv_append(&Device::Cpu, &mut c16b, &src, 7, 3, row_len).unwrap();
        assert_eq!(c16a, c16b);
        // rope, both conventions, frequency factors, large positions
        for neox in [false, true] {
            let (batch, seq, heads, head_dim) = (2, 5, 3, 12);
            let params = RopeParams {
                theta: 10000.0,
                neox,
                n_rot: 10,
            };
            let positions: Vec<i64> = vec![0, 1, 7, 4000, 30011];
            let ff: Vec<f32> = (0..5).map(|i| 1.0 + i as f32 * 0.5).collect();
            let x = rng.vec(batch * seq * heads * head_dim);
            let (mut a, mut b) = (x.clone(), x.clone());
            ops::rope::rope(
                &gpu,
                &mut a,
                batch,
                &positions,
                heads,
                head_dim,
                &params,
                Some(&ff),
            )
            .unwrap();
            ops::rope::rope(
                &Device::Cpu,
                &mut b,
                batch,
                &positions,
                heads,
                head_dim,
                &params,
                Some(&ff),
            )
            .unwrap();
            assert_close("rope", &a, &b, 2e-5);
        }
        assert!(dev.launch_count() > before);
    }
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn attention_matches_the_cpu() {
    let mut rng = Rng::new("attention_matches_the_cpu");
    let shapes = [
        // (batch, seq_q, seq_k, heads, kv_heads, head_dim)
        (2, 5, 70, 4, 2, 40),
        (1, 33, 33, 2, 1, 64),
        (1, 1, 300, 4, 1, 24), // decode: split keys + combine
        // decode (attn_decode where it has the head size: f32 and f16 64, f32 32, f16 128)
        (1, 1, 300, 8, 2, 64),
        (2, 1, 45, 6, 3, 32),
        (1, 1, 70, 7, 1, 128),
        (1, 1, 1100, 4, 2, 64), // past 512 keys: attn_decode, split keys + combine
        (1, 9, 4, 2, 2, 130),   // seq_q > seq_k: early queries see no key under the mask
        (1, 70, 70, 1, 1, 7),   // odd head_dim (scalar loads)
    ];
    for dev in devices() {
        let gpu = Device::Gpu(dev.clone());
        for &(batch, seq_q, seq_k, heads, kv_heads, head_dim) in &shapes {
            let s = AttentionShape {
                batch,
                seq_q,
                seq_k,
                heads,
                kv_heads,
                head_dim,
            };
            let (q, k, v) = (rng.vec(s.q_len()), rng.vec(s.kv_len()), rng.vec(s.kv_len()));
            let scale = 1.0 / (head_dim as f32).sqrt();
            // unfused steps
            let (mut a, mut b) = (vec![0f32; s.scores_len()], vec![0f32; s.scores_len()]);
            ops::attention::qkt_matmul(&gpu, &q, &k, &s, scale, &mut a).unwrap();
            ops::attention::qkt_matmul(&Device::Cpu, &q, &k, &s, scale, &mut b).unwrap();
            assert_close("qkt_matmul", &a, &b, 1e-5);
            ops::attention::causal_mask(&gpu, &mut a, batch * heads, seq_q, seq_k).unwrap();
            ops::attention::causal_mask(&Device::Cpu, &mut b, batch * heads, seq_q, seq_k).unwrap();
            assert!(
                a.iter()
                    .zip(&b)
                    .all(|(x, y)| x == y || (x - y).abs() < 1e-5),
                "causal_mask"
            );
            ops::attention::softmax(&gpu, &mut a, batch * heads * seq_q, seq_k).unwrap();
            ops::attention::softmax(&Device::Cpu, &mut b, batch * heads * seq_q, seq_k).unwrap();
            assert_close("softmax", &a, &b, 1e-5);
            let (mut oa, mut ob) = (vec![0f32; s.q_len()], vec![0f32; s.q_len()]);
            ops::attention::weighted_matmul(&gpu, &b, &v, &s, &mut oa).unwrap();
            ops::attention::weighted_matmul(&Device::Cpu, &b, &v, &s, &mut ob).unwrap();
            assert_close("weighted_matmul", &oa, &ob, 1e-5);
            // fused, f32 and f16 keys/values
            for causal in [false, true] {
                let (mut fa, mut fb) = (vec![0f32; s.q_len()], vec![0f32; s.q_len()]);
                ops::attention::flash_attention(&gpu, &q, &k, &v, &s, causal, scale, &mut fa)
                    .unwrap();
                ops::attention::flash_attention(
                    &Device::Cpu,
                    &q,
                    &k,
                    &v,
                    &s,
                    causal,
                    scale,
                    &mut fb,
                )
                .unwrap();
                assert_close(
                    &format!("flash_attention {s:?} causal={causal}"),
                    &fa,
                    &fb,
                    1e-5,
                );
            }
            let k16: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
            let v16: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            let (mut fa, mut fb) = (vec![0f32; s.q_len()], vec![0f32; s.q_len()]);
            ops::attention::flash_attention(&gpu, &q, &k16, &v16, &s, true, scale, &mut fa)
                .unwrap();
            ops::attention::flash_attention(&Device::Cpu, &q, &k16, &v16, &s, true, scale, &mut fb)
                .unwrap();
            assert_close(&format!("flash_attention f16 {s:?}"), &fa, &fb, 1e-5);
        }
    }
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn matmul_and_embedding_match_the_cpu() {
    let mut rng = Rng::new("matmul_and_embedding_match_the_cpu");
    for dev in devices() {
        let gpu = Device::Gpu(dev.clone());
        for (ty, _) in kernels::WEIGHT_TYPES {
            let (n, k) = (
                37,
                if ty.block_size() == 256 {
                    512
                } else if ty.block_size() == 32 {
                    96
                } else {
                    45
                },
            );
            let bytes = random_weight_bytes(ty, n, k, rng.next_u64()).unwrap();
            let w = WeightView::new(ty, n, k, &bytes).unwrap();
            let mut dense = vec![0f32; n * k];
            if quants::dequantize(ty, &bytes, &mut dense).is_err() {
                println!("skipping {}: no CPU dequantizer yet", ty.name());
                continue;
            }
            for m in [1, 3, 8, 9, 70] {
                let x = rng.vec(m * k);
                let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
                ops::matmul::matmul_gguf(&gpu, &x, &w, m, &mut a).unwrap();
                ops::matmul::matmul_f32(&Device::Cpu, &x, &dense, m, n, k, &mut b).unwrap();
                assert_close(&format!("matmul {} m={m}", ty.name()), &a, &b, 1e-5);
            }
            if matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::F32) {
                // x too large for the 64 KiB of shared memory of the wave-64 device: read from
                // global memory there, staged on the other device. m = 1, Q4_0/Q8_0 (wide
                // kernels): k = 4096 one full chunk of 4 groups, 16-byte aligned rows; 2112 three
                // groups, a partial chunk, rows only 4-byte aligned; 5120 two chunks, the second
                // partial.
                for k in [4096, 2112, 5120] {
                    // 70 rows at k = 4096: Q4_0's 16 rows per block (a block per emulated
                    // multiprocessor), the last block partial
                    let n = if k == 4096 { 70 } else { n };
                    let bytes = random_weight_bytes(ty, n, k, rng.next_u64()).unwrap();
                    let w = WeightView::new(ty, n, k, &bytes).unwrap();
                    let mut dense = vec![0f32; n * k];
                    quants::dequantize(ty, &bytes, &mut dense).unwrap();
                    let ms: &[usize] = if k == 4096 { &[1, 5] } else { &[1] };
                    for &m in ms {
                        let x = rng.vec(m * k);
                        let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
                        ops::matmul::matmul_gguf(&gpu, &x, &w, m, &mut a).unwrap();
                        ops::matmul::matmul_f32(&Device::Cpu, &x, &dense, m, n, k, &mut b).unwrap();
                        assert_close(&format!("matmul {} m={m} k={k}", ty.name()), &a, &b, 1e-5);
                    }
                    if ty != GgmlType::F32 {
                        // The model's m = 1 path: x quantized to 8 bits (`*_q8x` kernels); one
                        // piece of x all zeros (scale 0).
                        let model_path = |x: &[f32], a: &mut [f32]| {
                            use ops::matmul::gpu::{matmul_gguf_path, MatmulPath};
                            matmul_gguf_path(&dev, x, &w, 1, a, MatmulPath::Model).unwrap()
                        };
                        let mut x = rng.vec(k);
                        x[32..64].iter_mut().for_each(|v| *v = 0.0);
                        let mut a = vec![0f32; n];
                        model_path(&x, &mut a);
                        assert_close(
                            &format!("model matvec {} k={k}", ty.name()),
                            &a,
                            &q8x_reference(&x, &w),
                            1e-5,
                        );
                        // The fused form (matmul_add: out += x @ w^T, the multi kernel).
                        {
                            use crate::backend::Backend;
                            let gb = super::GpuBackend::new(dev.clone());
                            let gw = gb.weight(ty, n, k, &bytes).unwrap();
                            let resid = rng.vec(n);
                            let (gx, mut tmp) = (gb.upload(&x).unwrap(), gb.zeros(n).unwrap());
                            let mut acc = gb.upload(&resid).unwrap();
                            gb.matmul_add(&gx, &gw, 1, n, &mut tmp, &mut acc).unwrap();
                            let mut got = vec![0f32; n];
                            gb.download(&acc, &mut got).unwrap();
                            let want: Vec<f32> = q8x_reference(&x, &w)
                                .iter()
                                .zip(&resid)
                                .map(|(a, b)| a + b)
                                .collect();
                            assert_close(
                                &format!("model matmul_add {} k={k}", ty.name()),
                                &got,
                                &want,
                                1e-5,
                            );
                        }
                        // A NaN in x reaches every output.
                        x[k - 1] = f32::NAN;
                        model_path(&x, &mut a);
                        assert!(a.iter().all(|v| v.is_nan()), "NaN in x, {}", ty.name());
                    }
                }
            }
            let ids = [3u32, 0, 36, 3];
            let (mut a, mut b) = (vec![0f32; ids.len() * k], vec![0f32; ids.len() * k]);
            ops::embedding::embedding(&gpu, &w, &ids, &mut a).unwrap();
            for (t, &id) in ids.iter().enumerate() {
                b[t * k..(t + 1) * k]
                    .copy_from_slice(&dense[id as usize * k..(id as usize + 1) * k]);
            }
            assert_close(&format!("embedding {}", ty.name()), &a, &b, 0.0);
        }
    }
}

/// `x @ w^T` for m = 1 as the model's `*_q8x` matvec kernels define it, in float64: each piece
/// of x (32 values for Q4_0, 16 for Q8_0) becomes `d * q` with `d = max|x| / 127` (float32)
/// and `q = x * (127 / max|x|)` rounded to the nearest integer, ties to even.
fn q8x_reference(x: &[f32], w: &WeightView) -> Vec<f32> {
    let piece = if w.ty == GgmlType::Q4_0 { 32 } else { 16 };
    let mut xq = vec![0f64; x.len()];
    for (xs, qs) in x.chunks(piece).zip(xq.chunks_mut(piece)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let inv = if amax != 0.0 { 127.0f32 / amax } else { 0.0 };
        let d = (amax / 127.0) as f64;
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = (v as f64 * inv as f64).round_ties_even() * d;
        }
    }
    let mut row = vec![0f32; w.cols];
    (0..w.rows)
        .map(|r| {
            w.dequantize_rows(r, &mut row).unwrap();
            row.iter()
                .zip(&xq)
                .map(|(&a, &b)| a as f64 * b)
                .sum::<f64>() as f32
        })
        .collect()
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn gpu_backend_matches_the_cpu_backend() {
    use super::GpuBackend;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::Backend;
    use crate::device::KvDtype;

    let mut rng = Rng::new("gpu_backend_matches_the_cpu_backend");
    let (dim, heads, kv_heads, head_dim, n_ctx, vocab) = (64, 4, 2, 16, 40, 50);
    let kv_row = kv_heads * head_dim;
    for dev in devices() {
        let (gpu, cpu) = (GpuBackend::new(dev.clone()), CpuBackend);
        let table = random_weight_bytes(GgmlType::Q8_0, vocab, dim, rng.next_u64()).unwrap();
        let wq = random_weight_bytes(GgmlType::Q4_K, dim, 256, rng.next_u64()).unwrap();
        let norm: Vec<u8> = rng.vec(dim).iter().flat_map(|v| v.to_le_bytes()).collect();
        let (gt, ct) = (
            gpu.weight(GgmlType::Q8_0, vocab, dim, &table).unwrap(),
            cpu.weight(GgmlType::Q8_0, vocab, dim, &table).unwrap(),
        );
        let (gw, cw) = (
            gpu.weight(GgmlType::Q4_K, dim, 256, &wq).unwrap(),
            cpu.weight(GgmlType::Q4_K, dim, 256, &wq).unwrap(),
        );
        let (gn, cn) = (
            gpu.weight(GgmlType::F32, 1, dim, &norm).unwrap(),
            cpu.weight(GgmlType::F32, 1, dim, &norm).unwrap(),
        );
        let down = |g: &DeviceBuffer, n: usize| download(&gpu, g, n);
        // embedding -> rms_norm
        let ids = [3u32, 49, 0, 7, 7];
        let t = ids.len();
        let (mut ge, mut ce) = (gpu.zeros(t * dim).unwrap(), cpu.zeros(t * dim).unwrap());
        gpu.embedding(&gt, &ids, &mut ge).unwrap();
        cpu.embedding(&ct, &ids, &mut ce).unwrap();
        assert_close("embedding", &down(&ge, t * dim), &ce, 0.0);
        let (mut gx, mut cx) = (gpu.zeros(t * dim).unwrap(), cpu.zeros(t * dim).unwrap());
        gpu.rms_norm(&ge, &gn, 1e-5, t, &mut gx).unwrap();
        cpu.rms_norm(&ce, &cn, 1e-5, t, &mut cx).unwrap();
        assert_close("rms_norm", &down(&gx, t * dim), &cx, 1e-5);
        // matmul of a [t, 256] activation by the Q4_K weight [dim, 256]
        let act = rng.vec(t * 256);
        let (ga, ca) = (gpu.upload(&act).unwrap(), cpu.upload(&act).unwrap());
        let (mut gm, mut cm) = (gpu.zeros(t * dim).unwrap(), cpu.zeros(t * dim).unwrap());
        gpu.matmul(&ga, &gw, t, &mut gm).unwrap();
        // The CPU reference op (the backend's own matmul rounds activations to 8 bits).
        crate::ops::matmul::matmul_gguf(&crate::device::Device::Cpu, &ca, &cw.view(), t, &mut cm)
            .unwrap();
        assert_close("matmul", &down(&gm, t * dim), &cm, 1e-5);
        // rope at position 11, then the KV cache (f16) and causal attention over 11 + t rows
        let params = RopeParams {
            theta: 10000.0,
            neox: true,
            n_rot: head_dim,
        };
        let q = rng.vec(t * heads * head_dim);
        let (mut gq, mut cq) = (gpu.upload(&q).unwrap(), cpu.upload(&q).unwrap());
        gpu.rope(&mut gq, t, heads, head_dim, 11, &params, None)
            .unwrap();
        cpu.rope(&mut cq, t, heads, head_dim, 11, &params, None)
            .unwrap();
        assert_close("rope", &down(&gq, q.len()), &cq, 2e-5);
        for dtype in [KvDtype::F16, KvDtype::F32] {
            let (mut gk, mut ck) = (
                gpu.kv_cache(n_ctx * kv_row, dtype).unwrap(),
                cpu.kv_cache(n_ctx * kv_row, dtype).unwrap(),
            );
            let (mut gv, mut cv) = (
                gpu.kv_cache(n_ctx * kv_row, dtype).unwrap(),
                cpu.kv_cache(n_ctx * kv_row, dtype).unwrap(),
            );
            let rows = 11 + t;
            let (k, v) = (rng.vec(rows * kv_row), rng.vec(rows * kv_row));
            let (gks, cks) = (gpu.upload(&k).unwrap(), cpu.upload(&k).unwrap());
            let (gvs, cvs) = (gpu.upload(&v).unwrap(), cpu.upload(&v).unwrap());
            gpu.kv_append(&mut gk, &gks, 0, rows, kv_row).unwrap();
            cpu.kv_append(&mut ck, &cks, 0, rows, kv_row).unwrap();
            gpu.kv_append(&mut gv, &gvs, 0, rows, kv_row).unwrap();
            cpu.kv_append(&mut cv, &cvs, 0, rows, kv_row).unwrap();
            let (mut go, mut co) = (gpu.zeros(q.len()).unwrap(), cpu.zeros(q.len()).unwrap());
            let scale = 1.0 / (head_dim as f32).sqrt();
            gpu.attention(
                &gq, &gk, &gv, t, rows, heads, kv_heads, head_dim, scale, &mut go,
            )
            .unwrap();
            cpu.attention(
                &cq, &ck, &cv, t, rows, heads, kv_heads, head_dim, scale, &mut co,
            )
            .unwrap();
            assert_close(
                &format!("attention {dtype:?}"),
                &down(&go, q.len()),
                &co,
                1e-5,
            );
        }
        // copy_rows, add, swiglu, argmax
        let (mut gr, mut cr) = (gpu.zeros(2 * dim).unwrap(), cpu.zeros(2 * dim).unwrap());
        gpu.copy_rows(&gm, 3, 2, dim, &mut gr).unwrap();
        cpu.copy_rows(&cm, 3, 2, dim, &mut cr).unwrap();
        assert_close("copy_rows", &down(&gr, 2 * dim), &cr, 1e-5);
        gpu.add(&mut gm, &gx, t * dim).unwrap();
        cpu.add(&mut cm, &cx, t * dim).unwrap();
        assert_close("add", &down(&gm, t * dim), &cm, 1e-5);
        let (mut gs, mut cs) = (gpu.zeros(t * dim).unwrap(), cpu.zeros(t * dim).unwrap());
        gpu.swiglu(&gm, &gx, t * dim, &mut gs).unwrap();
        cpu.swiglu(&cm, &cx, t * dim, &mut cs).unwrap();
        assert_close("swiglu", &down(&gs, t * dim), &cs, 1e-5);
        let logits = rng.vec(vocab);
        assert_eq!(
            gpu.argmax(&gpu.upload(&logits).unwrap(), vocab).unwrap(),
            cpu.argmax(&logits.clone(), vocab).unwrap()
        );
        gpu.synchronize().unwrap();
    }
}

/// The fused RMS norm's m = 1 projections in float64: `(x * norm)` in 8 bits as the kernels
/// take it (`q8x_reference`) against `n` rows of weight bytes `b` of type `ty`, times
/// `1 / sqrt(mean(x^2) + eps)`.
fn rms_norm_q8x_reference(
    x: &[f32],
    norm: &[f32],
    eps: f32,
    ty: GgmlType,
    n: usize,
    b: &[u8],
) -> Vec<f64> {
    let k = x.len();
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let inv_rms = 1.0 / (ss / k as f64 + eps as f64).sqrt();
    let z: Vec<f32> = x.iter().zip(norm).map(|(a, b)| a * b).collect();
    let view = crate::ops::WeightView {
        ty,
        rows: n,
        cols: k,
        bytes: b,
    };
    q8x_reference(&z, &view)
        .iter()
        .map(|&v| v as f64 * inv_rms)
        .collect()
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn streaming_swiglu_matches_the_cpu_reference() {
    let mut rng = Rng::new("streaming_swiglu_matches_the_cpu_reference");
    // k = 2112: 66 Q4_0 pieces (a block of 128 threads, 62 of them idle) and 132 Q8_0 pieces
    // (192); 77 rows: 20 groups of 4 rows of each matrix, more than the grid (at most 16
    // blocks on the emulator's 4 multiprocessors), so blocks take two groups, and the last
    // group is partial. k = 4160 (3 groups in flight, `stream_stages`; without the norms,
    // which that form handles as the other): 130 Q4_0 pieces (192 threads, 2 blocks a
    // multiprocessor) and 260 Q8_0 pieces (320 threads, 1 block), 61 rows: 16 groups, so the
    // Q8_0 blocks take 4 each and go round the ring of 3.
    streaming_swiglu_case(&mut rng, 2112, 77, true);
    streaming_swiglu_case(&mut rng, 4160, 61, false);
}

fn streaming_swiglu_case(rng: &mut Rng, k: usize, ffn: usize, norms: bool) {
    use super::GpuBackend;
    use crate::backend::Backend;
    use crate::ops::activation::Activation;
    use crate::ops::matmul::gpu::{launch_matvec_glu, NormIn, RmsNorm};
    let want = if k >= 4096 { 3 } else { 2 };
    let defaults = crate::device::tuning::Tuning::default();
    assert_eq!(crate::ops::matmul::gpu::stream_stages(&defaults, k), want);
    let silu_mul = |g: &[f32], u: &[f32]| -> Vec<f32> {
        g.iter()
            .zip(u)
            .map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
            .collect()
    };
    for dev in devices() {
        let gpu = GpuBackend::new(dev.clone());
        let down = |g: &DeviceBuffer, n: usize| download(&gpu, g, n);
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
            let bytes = |seed| random_weight_bytes(ty, ffn, k, seed).unwrap();
            let (wg, wu) = (bytes(rng.next_u64()), bytes(rng.next_u64()));
            let (gg, gu) = (
                gpu.weight(ty, ffn, k, &wg).unwrap(),
                gpu.weight(ty, ffn, k, &wu).unwrap(),
            );
            let (vg, vu) = (
                super::backend::tests_view(&gg),
                super::backend::tests_view(&gu),
            );
            let view = |b| WeightView {
                ty,
                rows: ffn,
                cols: k,
                bytes: b,
            };
            let x = rng.vec(k);
            let gx = gpu.upload(&x).unwrap();
            let mut out = gpu.zeros(ffn).unwrap();
            assert!(launch_matvec_glu(
                &dev,
                dev.tuning(),
                &gx,
                &vg,
                &vu,
                &mut out,
                Activation::Silu,
                None
            )
            .unwrap());
            let want = silu_mul(
                &q8x_reference(&x, &view(&wg)),
                &q8x_reference(&x, &view(&wu)),
            );
            assert_close(
                &format!("streaming swiglu {ty:?}"),
                &down(&out, ffn),
                &want,
                1e-5,
            );

            if !norms {
                continue;
            }
            // RMS norm by weight, and handed over (x * weight and partial sums of x^2)
            let norm = rng.vec(k);
            let eps = 1e-5f32;
            let want: Vec<f32> = {
                let g = rms_norm_q8x_reference(&x, &norm, eps, ty, ffn, &wg);
                let u = rms_norm_q8x_reference(&x, &norm, eps, ty, ffn, &wu);
                g.iter()
                    .zip(&u)
                    .map(|(&g, &u)| (g / (1.0 + (-g).exp()) * u) as f32)
                    .collect()
            };
            let gnorm = gpu.upload(&norm).unwrap();
            let by_weight = NormIn::Weight(RmsNorm {
                weight: &gnorm,
                eps,
            });
            assert!(launch_matvec_glu(
                &dev,
                dev.tuning(),
                &gx,
                &vg,
                &vu,
                &mut out,
                Activation::Silu,
                Some(&by_weight)
            )
            .unwrap());
            assert_close(
                &format!("streaming swiglu {ty:?}, norm by weight"),
                &down(&out, ffn),
                &want,
                1e-5,
            );
            let xw: Vec<f32> = x.iter().zip(&norm).map(|(a, b)| a * b).collect();
            let sums: Vec<f32> = x
                .chunks(100)
                .map(|c| c.iter().map(|v| v * v).sum())
                .collect();
            let (gxw, gsums) = (gpu.upload(&xw).unwrap(), gpu.upload(&sums).unwrap());
            let parts = NormIn::Parts {
                parts: &gsums,
                n: sums.len(),
                eps,
            };
            assert!(launch_matvec_glu(
                &dev,
                dev.tuning(),
                &gxw,
                &vg,
                &vu,
                &mut out,
                Activation::Silu,
                Some(&parts)
            )
            .unwrap());
            assert_close(
                &format!("streaming swiglu {ty:?}, norm handed over"),
                &down(&out, ffn),
                &want,
                1e-5,
            );
        }
    }
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn fused_decode_projections_match_the_unfused_ops() {
    use super::GpuBackend;
    use crate::backend::{unfused, Backend};

    let mut rng = Rng::new("fused_decode_projections_match_the_unfused_ops");
    // k = 192: six 32-element blocks, a partial stripe of the Q4_0 kernel (8 blocks a stripe)
    let (k, nq, nkv, ffn) = (192, 37, 10, 45);
    // (devices of its own: it counts its launches, which other tests' launches on the shared
    // devices would add to)
    for dev in own_devices(6, "-fused-projections") {
        let gpu = GpuBackend::new(dev.clone());
        let down = |g: &DeviceBuffer, n: usize| download(&gpu, g, n);
        // Q4_0 and Q8_0 take the fused kernels; a mixed pair falls back to the separate ops.
        for (ty_q, ty_kv) in [
            (GgmlType::Q4_0, GgmlType::Q4_0),
            (GgmlType::Q8_0, GgmlType::Q8_0),
            (GgmlType::Q4_0, GgmlType::Q8_0),
        ] {
            let bytes = |ty, n, seed| random_weight_bytes(ty, n, k, seed).unwrap();
            let host: Vec<(GgmlType, usize, Vec<u8>)> = vec![
                (ty_q, nq, bytes(ty_q, nq, rng.next_u64())),
                (ty_kv, nkv, bytes(ty_kv, nkv, rng.next_u64())),
                (ty_kv, nkv, bytes(ty_kv, nkv, rng.next_u64())),
            ];
            let w: Vec<_> = host
                .iter()
                .map(|(ty, n, b)| gpu.weight(*ty, *n, k, b).unwrap())
                .collect();
            let bias_host = [rng.vec(nq), rng.vec(nkv), rng.vec(nkv)];
            let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            let biases: Vec<_> = bias_host
                .iter()
                .map(|b| {
                    gpu.weight(GgmlType::F32, 1, b.len(), &f32_bytes(b))
                        .unwrap()
                })
                .collect();
            let x = rng.vec(k);
            let gx = gpu.upload(&x).unwrap();
            // the CPU reference op (float32 activations), or x in 8 bits as the model's m = 1
            // kernels take it, plus the bias
            let q8x = true;
            let reference = |i: usize, bias: bool| {
                let (ty, n, b) = &host[i];
                let view = crate::ops::WeightView {
                    ty: *ty,
                    rows: *n,
                    cols: k,
                    bytes: b,
                };
                let mut out = vec![0f32; *n];
                if q8x {
                    out = q8x_reference(&x, &view);
                } else {
                    crate::ops::matmul::matmul_gguf(&Device::Cpu, &x, &view, 1, &mut out).unwrap();
                }
                if bias {
                    out.iter_mut().zip(&bias_host[i]).for_each(|(o, b)| *o += b);
                }
                out
            };
            for with_bias in [false, true] {
                let bs = with_bias.then(|| [&biases[0], &biases[1], &biases[2]]);
                let mut fused = [
                    gpu.zeros(nq).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                ];
                let mut plain = [
                    gpu.zeros(nq).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                ];
                let [fq, fk, fv] = &mut fused;
                gpu.matmul_qkv(&gx, [&w[0], &w[1], &w[2]], bs, 1, fq, fk, fv)
                    .unwrap();
                let [pq, pk, pv] = &mut plain;
                unfused::matmul_qkv(&gpu, &gx, [&w[0], &w[1], &w[2]], bs, 1, pq, pk, pv).unwrap();
                for i in 0..3 {
                    let n = host[i].1;
                    let got = down(&fused[i], n);
                    assert_eq!(
                        got,
                        down(&plain[i], n),
                        "qkv {i} {ty_q:?}/{ty_kv:?} vs the unfused ops"
                    );
                    assert_close(
                        "qkv vs the CPU reference",
                        &got,
                        &reference(i, with_bias),
                        1e-5,
                    );
                }
            }
            // the fused kernels took the same-type cases (and only those)
            {
                use crate::ops::matmul::gpu::{launch_matvec_multi, Projection};
                let view = |i: usize| super::backend::tests_view(&w[i]);
                let mut outs = [
                    gpu.zeros(nq).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                ];
                let [o0, o1, o2] = &mut outs;
                let mut parts = [
                    Projection {
                        w: view(0),
                        bias: None,
                        out: o0,
                    },
                    Projection {
                        w: view(1),
                        bias: None,
                        out: o1,
                    },
                    Projection {
                        w: view(2),
                        bias: None,
                        out: o2,
                    },
                ];
                let fused =
                    launch_matvec_multi(&dev, dev.tuning(), &gx, &mut parts, false, None).unwrap();
                assert_eq!(fused, ty_q == ty_kv, "{ty_q:?}/{ty_kv:?}");
            }
            // out += x @ w^T, into a residual stream holding random values
            let resid = rng.vec(nq);
            let (mut fo, mut po, mut tmp) = (
                gpu.upload(&resid).unwrap(),
                gpu.upload(&resid).unwrap(),
                gpu.zeros(nq).unwrap(),
            );
            gpu.matmul_add(&gx, &w[0], 1, nq, &mut tmp, &mut fo)
                .unwrap();
            unfused::matmul_add(&gpu, &gx, &w[0], 1, nq, &mut tmp, &mut po).unwrap();
            let got = down(&fo, nq);
            assert_eq!(got, down(&po, nq), "matmul_add {ty_q:?} vs the unfused ops");
            let want: Vec<f32> = reference(0, false)
                .iter()
                .zip(&resid)
                .map(|(a, b)| a + b)
                .collect();
            assert_close("matmul_add vs the CPU reference", &got, &want, 1e-5);
            // silu(x @ w_gate^T) * (x @ w_up^T): w[1] and w[2] share a type in every case
            let wg = bytes(ty_kv, ffn, rng.next_u64());
            let wu = bytes(ty_kv, ffn, rng.next_u64());
            let (gg, gu) = (
                gpu.weight(ty_kv, ffn, k, &wg).unwrap(),
                gpu.weight(ty_kv, ffn, k, &wu).unwrap(),
            );
            let mut s = [
                gpu.zeros(ffn).unwrap(),
                gpu.zeros(ffn).unwrap(),
                gpu.zeros(ffn).unwrap(),
                gpu.zeros(ffn).unwrap(),
            ];
            let [g, u, fo, po] = &mut s;
            gpu.matmul_swiglu(&gx, &gg, &gu, 1, ffn, g, u, fo).unwrap();
            unfused::matmul_swiglu(&gpu, &gx, &gg, &gu, 1, ffn, g, u, po).unwrap();
            let got = down(fo, ffn);
            assert_eq!(
                got,
                down(po, ffn),
                "matmul_swiglu {ty_kv:?} vs the unfused ops"
            );
            let cpu_mm = |b: &[u8]| {
                let view = crate::ops::WeightView {
                    ty: ty_kv,
                    rows: ffn,
                    cols: k,
                    bytes: b,
                };
                if q8x {
                    return q8x_reference(&x, &view);
                }
                let mut out = vec![0f32; ffn];
                crate::ops::matmul::matmul_gguf(&Device::Cpu, &x, &view, 1, &mut out).unwrap();
                out
            };
            let want: Vec<f32> = cpu_mm(&wg)
                .iter()
                .zip(cpu_mm(&wu))
                .map(|(&g, u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
                .collect();
            assert_close("matmul_swiglu vs the CPU reference", &got, &want, 1e-5);

            // The RMS norm fused into the projections (the decode step's form): the kernels
            // take (x * norm)'s products times 1 / sqrt(mean(x^2) + eps).
            if !dev.tuning().fuse_norm {
                continue;
            }
            let norm_host = rng.vec(k);
            let gnorm = gpu
                .weight(GgmlType::F32, 1, k, &f32_bytes(&norm_host))
                .unwrap();
            let eps = 1e-5f32;
            let normed = |ty: GgmlType, n: usize, b: &[u8]| {
                rms_norm_q8x_reference(&x, &norm_host, eps, ty, n, b)
            };
            let mut xb = gpu.zeros(k).unwrap();
            for with_bias in [false, true] {
                let bs = with_bias.then(|| [&biases[0], &biases[1], &biases[2]]);
                let mut outs = [
                    gpu.zeros(nq).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                ];
                let [fq, fk, fv] = &mut outs;
                #[rustfmt::skip]
                gpu.rms_norm_qkv(&gx, &gnorm, eps, [&w[0], &w[1], &w[2]], bs, 1, &mut xb, fq, fk, fv)
                    .unwrap();
                for i in 0..3 {
                    let (ty, n, b) = &host[i];
                    let want: Vec<f32> = normed(*ty, *n, b)
                        .iter()
                        .zip(&bias_host[i])
                        .map(|(&v, &bias)| (v + if with_bias { bias as f64 } else { 0.0 }) as f32)
                        .collect();
                    // A mixed pair runs rms_norm, then the separate projections of its
                    // output: x * norm * r quantized rather than x * norm, which may move a
                    // value by one step at a tie (an 8-bit-sized difference).
                    let tol = if ty_q == ty_kv { 1e-5 } else { 2e-2 };
                    assert_close(
                        &format!("rms_norm_qkv {i} {ty_q:?}/{ty_kv:?} bias {with_bias}"),
                        &down(&outs[i], *n),
                        &want,
                        tol,
                    );
                }
            }
            let [g, u, fo, _] = &mut s;
            #[rustfmt::skip]
            gpu.rms_norm_swiglu(&gx, &gnorm, eps, &gg, &gu, 1, ffn, &mut xb, g, u, fo).unwrap();
            let want: Vec<f32> = normed(ty_kv, ffn, &wg)
                .iter()
                .zip(normed(ty_kv, ffn, &wu))
                .map(|(&g, u)| (g / (1.0 + (-g).exp()) * u) as f32)
                .collect();
            assert_close("rms_norm_swiglu", &down(fo, ffn), &want, 1e-5);

            // The norm handed over by the residual projection before it (`matmul_add_norm`:
            // x * norm and per-block sums of x^2 written by that launch, no norm launch). The
            // reference takes the GPU's new residual, so that x * norm is the same floats.
            gpu.reserve_workspace(1, 64, 2, 1, 32, 100).unwrap();
            let wo_bytes = bytes(ty_kv, k, rng.next_u64());
            let wo = gpu.weight(ty_kv, k, k, &wo_bytes).unwrap();
            let wo_view = crate::ops::WeightView {
                ty: ty_kv,
                rows: k,
                cols: k,
                bytes: &wo_bytes,
            };
            let (x2, resid) = (rng.vec(k), rng.vec(k));
            let gx2 = gpu.upload(&x2).unwrap();
            for consumer in ["qkv", "swiglu"] {
                let mut gres = gpu.upload(&resid).unwrap();
                let launches = dev.launch_count();
                #[rustfmt::skip]
                gpu.matmul_add_norm(&gx2, &wo, 1, k, &gnorm, eps, &mut xb, &mut gres).unwrap();
                let new_resid = down(&gres, k);
                let proj = if q8x {
                    q8x_reference(&x2, &wo_view)
                } else {
                    let mut out = vec![0f32; k];
                    crate::ops::matmul::matmul_gguf(&Device::Cpu, &x2, &wo_view, 1, &mut out)
                        .unwrap();
                    out
                };
                let want: Vec<f32> = resid.iter().zip(&proj).map(|(r, p)| r + p).collect();
                assert_close("matmul_add_norm's residual", &new_resid, &want, 1e-5);
                let normed2 = |ty: GgmlType, n: usize, b: &[u8]| {
                    rms_norm_q8x_reference(&new_resid, &norm_host, eps, ty, n, b)
                };
                if consumer == "qkv" {
                    let mut outs = [
                        gpu.zeros(nq).unwrap(),
                        gpu.zeros(nkv).unwrap(),
                        gpu.zeros(nkv).unwrap(),
                    ];
                    let [fq, fk, fv] = &mut outs;
                    let ws = [&w[0], &w[1], &w[2]];
                    #[rustfmt::skip]
                    gpu.rms_norm_qkv(&gres, &gnorm, eps, ws, None, 1, &mut xb, fq, fk, fv).unwrap();
                    if ty_q != ty_kv {
                        continue; // the mixed pair: separate ops, checked above
                    }
                    assert_eq!(
                        dev.launch_count() - launches,
                        2,
                        "qkv took the handed-over norm"
                    );
                    for i in 0..3 {
                        let (ty, n, b) = &host[i];
                        let want: Vec<f32> =
                            normed2(*ty, *n, b).iter().map(|&v| v as f32).collect();
                        let what = format!("handed-over norm, projection {i} {ty_q:?}");
                        assert_close(&what, &down(&outs[i], *n), &want, 1e-5);
                    }
                } else {
                    let [g, u, fo, _] = &mut s;
                    #[rustfmt::skip]
                    gpu.rms_norm_swiglu(&gres, &gnorm, eps, &gg, &gu, 1, ffn, &mut xb, g, u, fo)
                        .unwrap();
                    assert_eq!(
                        dev.launch_count() - launches,
                        2,
                        "swiglu took the handed-over norm"
                    );
                    let want: Vec<f32> = normed2(ty_kv, ffn, &wg)
                        .iter()
                        .zip(normed2(ty_kv, ffn, &wu))
                        .map(|(&g, u)| (g / (1.0 + (-g).exp()) * u) as f32)
                        .collect();
                    assert_close("handed-over norm, swiglu", &down(fo, ffn), &want, 1e-5);
                }
            }
        }
    }
}

/// The bound of f16 products with f32 accumulation: x and W each rounded to f16 (relative
/// 2^-11 each, after the kernel's per-row power-of-two scale), so each output may be off by
/// 2^-10 (plus f32 rounding) of sum_c |x[r, c]| |W[j, c]|. `want` is the float32 CPU result.
fn assert_f16_bound(
    what: &str,
    got: &[f32],
    want: &[f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
) {
    let mut worst = 0f64;
    for r in 0..m {
        for j in 0..n {
            let mag: f64 = (0..k)
                .map(|c| (x[r * k + c] as f64).abs() * (w[j * k + c] as f64).abs())
                .sum();
            let (g, e) = (got[r * n + j] as f64, want[r * n + j] as f64);
            let bound = mag * (2f64.powi(-10) * 1.02 + 1e-6) + 1e-30;
            let ratio = (g - e).abs() / bound;
            assert!(
                ratio.is_finite() && ratio <= 1.0,
                "{what}: out[{r}, {j}] = {g}, want {e} (bound {bound})"
            );
            worst = worst.max(ratio);
        }
    }
    println!("{what}: worst error {worst:.3} of the f16 bound");
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn tensor_core_matmul_matches_the_cpu() {
    use crate::device::gpu::DeviceBuffer;
    use crate::device::layout::DeviceWeight;
    use crate::ops::matmul::gpu::{launch_matmul_mma_tile, mma_available};

    let mut rng = Rng::new("tensor_core_matmul_matches_the_cpu");
    for dev in devices() {
        assert!(
            mma_available(&dev, dev.tuning()),
            "the emulator runs the portable MMA"
        );
        let wide = dev.runtime().props().max_shared_per_block >= 73_728;
        // The emulated MMA is slow (32 shuffles each): a few types per device. The other
        // types share the kernel and differ only in `chunk`, which the matmul tests cover.
        let types: &[GgmlType] = if wide {
            &[
                GgmlType::F32,
                GgmlType::Q4_0,
                GgmlType::Q8_0,
                GgmlType::Q4_K,
                GgmlType::Q6_K,
            ]
        } else {
            &[GgmlType::F16, GgmlType::Q4_0, GgmlType::Q5_K]
        };
        // Q4_0 / Q8_0 have their own W loaders (16-byte loads where the rows are 16-byte
        // aligned, 2-byte loads otherwise): both widths run.
        let cases = types.iter().flat_map(|&ty| {
            let aligned = matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0);
            std::iter::once((ty, false)).chain(aligned.then_some((ty, true)))
        });
        for (ty, aligned_rows) in cases {
            // n: two column tiles, the second mostly empty; k: an odd number of 32-blocks
            // (a half k-step; rows not 16-byte aligned), 256 for the K types and for the
            // aligned Q4_0 / Q8_0 case, an odd length for the float types.
            let n = 131;
            let k = match ty.block_size() {
                256 => 256,
                32 if aligned_rows => 256,
                32 => 96,
                _ => 45,
            };
            let bytes = random_weight_bytes(ty, n, k, rng.next_u64()).unwrap();
            let mut dense = vec![0f32; n * k];
            if quants::dequantize(ty, &bytes, &mut dense).is_err() {
                println!("skipping {}: no CPU dequantizer yet", ty.name());
                continue;
            }
            let wd = DeviceBuffer::from_slice(
                &dev,
                &crate::device::layout::to_device_layout(ty, k, &bytes),
                "test",
            )
            .unwrap();
            let w = DeviceWeight {
                ty,
                rows: n,
                cols: k,
                bytes: &wd,
            };
            // Tiles: 64 on both devices (m = 70: two row tiles, the second mostly padding),
            // 128 where the shared memory allows (one type: slow to emulate).
            let mut tiles = vec![(64, 70)];
            if wide && ty == GgmlType::Q4_0 && !aligned_rows {
                tiles.push((128, 131));
            }
            for (bm, m) in tiles {
                let mut x = rng.vec(m * k);
                // Rows beyond f16's range, tiny, and zero: the per-row scale must handle them.
                x[k..2 * k].iter_mut().for_each(|v| *v *= 3.0e6);
                x[2 * k..3 * k].iter_mut().for_each(|v| *v *= 1.0e-7);
                x[3 * k..4 * k].iter_mut().for_each(|v| *v = 0.0);
                let xd = DeviceBuffer::from_slice(&dev, &x, "test").unwrap();
                let mut od = DeviceBuffer::alloc(&dev, m * n * 4, "test").unwrap();
                launch_matmul_mma_tile(&dev, dev.tuning(), &xd, &w, m, &mut od, Some(bm)).unwrap();
                let mut got = vec![0f32; m * n];
                od.read(&mut got, "test").unwrap();
                let mut want = vec![0f32; m * n];
                ops::matmul::matmul_f32(&Device::Cpu, &x, &dense, m, n, k, &mut want).unwrap();
                let what = format!("tensor-core matmul {} bm={bm} m={m} n={n} k={k}", ty.name());
                assert_f16_bound(&what, &got, &want, &x, &dense, m, n, k);
                assert!(
                    got[3 * n..4 * n].iter().all(|&v| v == 0.0),
                    "{what}: zero row"
                );
            }
        }
        // The model's matmul takes this kernel from m = MMA_MIN_M on, the exact one below.
        use crate::backend::Backend;
        let backend = super::GpuBackend::new(dev.clone());
        let (n, k) = (40, 64);
        let bytes = random_weight_bytes(GgmlType::Q8_0, n, k, 9).unwrap();
        let mut dense = vec![0f32; n * k];
        quants::dequantize(GgmlType::Q8_0, &bytes, &mut dense).unwrap();
        let gw = backend.weight(GgmlType::Q8_0, n, k, &bytes).unwrap();
        let min_m = dev.tuning().mma_min_rows;
        for m in [min_m - 1, min_m] {
            let x = rng.vec(m * k);
            let xd = backend.upload(&x).unwrap();
            let mut od = backend.zeros(m * n).unwrap();
            backend.matmul(&xd, &gw, m, &mut od).unwrap();
            let mut got = vec![0f32; m * n];
            backend.download(&od, &mut got).unwrap();
            let mut want = vec![0f32; m * n];
            ops::matmul::matmul_f32(&Device::Cpu, &x, &dense, m, n, k, &mut want).unwrap();
            if m < min_m {
                assert_close("model matmul below MMA_MIN_M", &got, &want, 1e-5);
            } else {
                assert_f16_bound(
                    "model matmul at MMA_MIN_M",
                    &got,
                    &want,
                    &x,
                    &dense,
                    m,
                    n,
                    k,
                );
                // f16 rounding shows: not the exact kernel
                assert!(
                    rel_err(&got, &want) > 1e-6,
                    "the model's matmul did not take the MMA path"
                );
            }
        }
    }
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn device_step_ops_match_the_cpu_backend() {
    // head_dim 64: the decode attention kernels for both cache types. 300 cache rows: one
    // block a head (attn_decode_head). 600: a block per kv head and key range (attn_decode),
    // the grid sized for all the rows and split over key ranges (4 emulated multiprocessors),
    // so early positions leave whole splits empty.
    for n_ctx in [300, 600] {
        device_step_ops_match(n_ctx);
    }
}

fn device_step_ops_match(n_ctx: usize) {
    use super::GpuBackend;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::Backend;
    use crate::device::KvDtype;

    let mut rng = Rng::new(&format!("device_step_ops_match_the_cpu_backend {n_ctx}"));
    let (dim, heads, kv_heads, head_dim, vocab) = (64, 4, 2, 64, 9000);
    let kv_row = kv_heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let params = RopeParams {
        theta: 10000.0,
        neox: false,
        n_rot: head_dim,
    };
    for dev in devices() {
        let (gpu, cpu) = (GpuBackend::new(dev.clone()), CpuBackend);
        let plan = crate::ops::attention::gpu::flash_plan(
            &dev,
            &AttentionShape {
                batch: 1,
                seq_q: 1,
                seq_k: n_ctx,
                heads,
                kv_heads,
                head_dim,
            },
            true,
        )
        .unwrap();
        assert!(
            n_ctx <= 512 || plan.splits > 1,
            "the test needs a split-key decode plan"
        );
        let table = random_weight_bytes(GgmlType::Q8_0, vocab, dim, rng.next_u64()).unwrap();
        let gt = gpu.weight(GgmlType::Q8_0, vocab, dim, &table).unwrap();
        let ct = cpu.weight(GgmlType::Q8_0, vocab, dim, &table).unwrap();
        let mut step = gpu
            .new_step(n_ctx, heads, kv_heads, head_dim, vocab)
            .unwrap()
            .expect("the GPU backend has step ops");
        let down = |g: &DeviceBuffer, n: usize| download(&gpu, g, n);
        for dtype in [KvDtype::F16, KvDtype::F32] {
            let mut gk = gpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
            let mut gv = gpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
            let mut ck = cpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
            let mut cv = cpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
            // Fill rows [0, n_ctx - 10) through the host-position op (both backends alike).
            let filled = n_ctx - 10;
            let (k, v) = (rng.vec(filled * kv_row), rng.vec(filled * kv_row));
            gpu.kv_append(&mut gk, &gpu.upload(&k).unwrap(), 0, filled, kv_row)
                .unwrap();
            gpu.kv_append(&mut gv, &gpu.upload(&v).unwrap(), 0, filled, kv_row)
                .unwrap();
            cpu.kv_append(&mut ck, &k, 0, filled, kv_row).unwrap();
            cpu.kv_append(&mut cv, &v, 0, filled, kv_row).unwrap();
            for pos in [0usize, 1, 37, 159, 160, 299, n_ctx - 1] {
                let id = (rng.next_u64() % vocab as u64) as u32;
                let what = |op: &str| format!("{dtype:?} position {pos}: {op}");
                gpu.set_step(&mut step, id, pos).unwrap();
                // embedding of the step's id
                let mut ge = gpu.zeros(dim).unwrap();
                let mut ce = cpu.zeros(dim).unwrap();
                gpu.embedding_step(&gt, &step, &mut ge).unwrap();
                cpu.embedding(&ct, &[id], &mut ce).unwrap();
                assert_close(&what("embedding"), &down(&ge, dim), &ce, 0.0);
                // rope of q and k at the step's position
                let q = rng.vec(heads * head_dim);
                let kn = rng.vec(kv_row);
                let vn = rng.vec(kv_row);
                let (mut gq, mut cq) = (gpu.upload(&q).unwrap(), cpu.upload(&q).unwrap());
                let (mut gkn, mut ckn) = (gpu.upload(&kn).unwrap(), cpu.upload(&kn).unwrap());
                gpu.rope_step(&mut gq, heads, head_dim, &step, &params, None)
                    .unwrap();
                gpu.rope_step(&mut gkn, kv_heads, head_dim, &step, &params, None)
                    .unwrap();
                cpu.rope(&mut cq, 1, heads, head_dim, pos, &params, None)
                    .unwrap();
                cpu.rope(&mut ckn, 1, kv_heads, head_dim, pos, &params, None)
                    .unwrap();
                assert_close(&what("rope q"), &down(&gq, q.len()), &cq, 2e-5);
                assert_close(&what("rope k"), &down(&gkn, kv_row), &ckn, 2e-5);
                // the new row at the step's position, then attention over pos + 1 keys
                let gvn = gpu.upload(&vn).unwrap();
                gpu.kv_append_step(&mut gk, &gkn, &step, kv_row).unwrap();
                gpu.kv_append_step(&mut gv, &gvn, &step, kv_row).unwrap();
                cpu.kv_append(&mut ck, &ckn, pos, 1, kv_row).unwrap();
                cpu.kv_append(&mut cv, &vn, pos, 1, kv_row).unwrap();
                let mut go = gpu.zeros(q.len()).unwrap();
                let mut co = cpu.zeros(q.len()).unwrap();
                #[rustfmt::skip]
                gpu.attention_step(
                    &gq, &gk, &gv, &step, n_ctx, heads, kv_heads, head_dim, scale, &mut go,
                )
                .unwrap();
                #[rustfmt::skip]
                cpu.attention(
                    &cq, &ck, &cv, 1, pos + 1, heads, kv_heads, head_dim, scale, &mut co,
                )
                .unwrap();
                assert_close(&what("attention"), &down(&go, q.len()), &co, 1e-5);
                // argmax and its value (two passes over 9000 logits), a NaN winning once
                let mut logits = rng.vec(vocab);
                if pos == 37 {
                    logits[4321] = f32::NAN;
                }
                gpu.argmax_step(&gpu.upload(&logits).unwrap(), vocab, &step)
                    .unwrap();
                gpu.queue_step_result(&step).unwrap();
                let (gid, gval) = gpu.step_result(&step).unwrap();
                let want = cpu.argmax(&logits, vocab).unwrap();
                assert_eq!(gid, want, "{}", what("argmax"));
                let (a, b) = (gval, logits[want as usize]);
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "{}",
                    what("argmax value")
                );
            }
        }
    }
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn fused_rope_kv_matches_the_unfused_ops() {
    use super::GpuBackend;
    use crate::backend::cpu::{CpuBackend, CpuKv};
    use crate::backend::{unfused, Backend};
    use crate::device::KvDtype;

    let mut rng = Rng::new("fused_rope_kv_matches_the_unfused_ops");
    let n_ctx = 2100;
    // (heads, kv_heads, head_dim, n_rot, neox, frequency factors, theta)
    let cases = [
        (4, 4, 16, 16, false, false, 10000.0),
        (6, 2, 20, 12, true, true, 1e6),
        (3, 1, 128, 128, true, false, 10000.0),
        (2, 2, 10, 6, false, true, 500000.0),
        (14, 2, 64, 64, true, false, 1e6),
    ];
    // (first row, tokens)
    let spans = [(0, 1), (0, 5), (7, 3), (1000, 1), (2047, 17), (2099, 1)];
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    // (it counts the launches of each call)
    for dev in own_devices(2, "-rope-kv") {
        let (gpu, cpu) = (GpuBackend::new(dev.clone()), CpuBackend);
        let mut step = gpu
            .new_step(n_ctx, 4, 2, 16, 16)
            .unwrap()
            .expect("the GPU backend has step ops");
        let down = |g: &DeviceBuffer, n: usize| download(&gpu, g, n);
        let raw = cache_bytes;
        let values = cache_values;
        let cpu_values = |c: &CpuKv| -> Vec<f32> {
            match c {
                CpuKv::F32(v) => v.clone(),
                CpuKv::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            }
        };
        for &(heads, kv_heads, head_dim, n_rot, neox, with_ff, theta) in &cases {
            let params = RopeParams { theta, neox, n_rot };
            let kv_row = kv_heads * head_dim;
            let ff: Option<Vec<f32>> = with_ff.then(|| {
                (0..n_rot / 2)
                    .map(|_| 1.0 + 4.0 * rng.uniform().abs())
                    .collect()
            });
            let gff = ff.as_ref().map(|f| {
                gpu.weight(GgmlType::F32, 1, f.len(), &f32_bytes(f))
                    .unwrap()
            });
            let cff = ff.as_ref().map(|f| {
                cpu.weight(GgmlType::F32, 1, f.len(), &f32_bytes(f))
                    .unwrap()
            });
            for dtype in [KvDtype::F32, KvDtype::F16] {
                for &(pos0, t) in &spans {
                    let what = format!(
                        "{heads}/{kv_heads} heads of {head_dim} (n_rot {n_rot}, neox {neox}, \
                         factors {with_ff}), {dtype:?}, {t} tokens at {pos0}"
                    );
                    let q = rng.vec(t * heads * head_dim);
                    let k = rng.vec(t * kv_row);
                    let v = rng.vec(t * kv_row);
                    // fused, one launch
                    let (mut fq, mut fk, fv) = (
                        gpu.upload(&q).unwrap(),
                        gpu.upload(&k).unwrap(),
                        gpu.upload(&v).unwrap(),
                    );
                    let mut fkc = gpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
                    let mut fvc = gpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
                    let before = dev.launch_count();
                    #[rustfmt::skip]
                    gpu.rope_kv_append(
                        &mut fq, &mut fk, &fv, &mut fkc, &mut fvc, t, heads, kv_heads, head_dim,
                        pos0, &params, gff.as_ref(),
                    )
                    .unwrap();
                    assert_eq!(dev.launch_count() - before, 1, "{what}: launches");
                    // the separate ops
                    let (mut uq, mut uk, uv) = (
                        gpu.upload(&q).unwrap(),
                        gpu.upload(&k).unwrap(),
                        gpu.upload(&v).unwrap(),
                    );
                    let mut ukc = gpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
                    let mut uvc = gpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
                    #[rustfmt::skip]
                    unfused::rope_kv_append(
                        &gpu, &mut uq, &mut uk, &uv, &mut ukc, &mut uvc, t, heads, kv_heads,
                        head_dim, pos0, &params, gff.as_ref(),
                    )
                    .unwrap();
                    let bits = |x: Vec<f32>| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    let got_q = down(&fq, q.len());
                    let got_k = down(&fk, k.len());
                    assert_eq!(bits(got_q.clone()), bits(down(&uq, q.len())), "{what}: q");
                    assert_eq!(bits(got_k.clone()), bits(down(&uk, k.len())), "{what}: k");
                    assert!(raw(&fkc) == raw(&ukc), "{what}: k cache");
                    assert!(raw(&fvc) == raw(&uvc), "{what}: v cache");
                    // the CPU backend
                    let (mut cq, mut ck, cv) = (q.clone(), k.clone(), v.clone());
                    let mut ckc = cpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
                    let mut cvc = cpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
                    #[rustfmt::skip]
                    cpu.rope_kv_append(
                        &mut cq, &mut ck, &cv, &mut ckc, &mut cvc, t, heads, kv_heads, head_dim,
                        pos0, &params, cff.as_ref(),
                    )
                    .unwrap();
                    assert_close(&format!("{what}: q vs the CPU"), &got_q, &cq, 2e-5);
                    assert_close(&format!("{what}: k vs the CPU"), &got_k, &ck, 2e-5);
                    // f16 caches: one f16 rounding apart at most where the rotations differ
                    let tol = if dtype == KvDtype::F16 { 1e-3 } else { 2e-5 };
                    #[rustfmt::skip]
                    assert_close(&format!("{what}: k cache vs the CPU"), &values(&fkc), &cpu_values(&ckc), tol);
                    #[rustfmt::skip]
                    assert_close(&format!("{what}: v cache vs the CPU"), &values(&fvc), &cpu_values(&cvc), 0.0);
                    if t != 1 {
                        continue;
                    }
                    // the device-position step, fused and not: the same bits again
                    gpu.set_step(&mut step, 0, pos0).unwrap();
                    for fused in [true, false] {
                        let (mut sq, mut sk, sv) = (
                            gpu.upload(&q).unwrap(),
                            gpu.upload(&k).unwrap(),
                            gpu.upload(&v).unwrap(),
                        );
                        let mut skc = gpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
                        let mut svc = gpu.kv_cache(n_ctx * kv_row, dtype).unwrap();
                        let before = dev.launch_count();
                        if fused {
                            #[rustfmt::skip]
                            gpu.rope_kv_append_step(
                                &mut sq, &mut sk, &sv, &mut skc, &mut svc, heads, kv_heads,
                                head_dim, &step, &params, gff.as_ref(),
                            )
                            .unwrap();
                            assert_eq!(dev.launch_count() - before, 1, "{what}: step launches");
                        } else {
                            #[rustfmt::skip]
                            unfused::rope_kv_append_step(
                                &gpu, &mut sq, &mut sk, &sv, &mut skc, &mut svc, heads, kv_heads,
                                head_dim, &step, &params, gff.as_ref(),
                            )
                            .unwrap();
                        }
                        let what = format!("{what}: step (fused {fused})");
                        assert_eq!(bits(down(&sq, q.len())), bits(got_q.clone()), "{what}: q");
                        assert_eq!(bits(down(&sk, k.len())), bits(got_k.clone()), "{what}: k");
                        assert!(raw(&skc) == raw(&fkc), "{what}: k cache");
                        assert!(raw(&svc) == raw(&fvc), "{what}: v cache");
                    }
                }
            }
        }
    }
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn fused_qkv_rope_matches_the_unfused_ops() {
    use super::backend::GpuKv;
    use super::GpuBackend;
    use crate::backend::Backend;
    use crate::device::KvDtype;

    let mut rng = Rng::new("fused_qkv_rope_matches_the_unfused_ops");
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let n_ctx = 40;
    // (type, k, heads, kv_heads, head_dim, n_rot, neox, frequency factors, bias, whether the
    // fused kernel applies). On the emulated devices (4 multiprocessors) Q4_0 blocks take 8
    // rows (16 where k >= 2048), Q8_0 4: head_dim 12 is not a multiple of 8, n_rot 8 < 16 is
    // a partial rotation; both keep the separate launches.
    #[rustfmt::skip]
    let cases = [
        (GgmlType::Q4_0, 192, 4, 2, 16, 16, false, false, false, true),
        (GgmlType::Q4_0, 192, 3, 1, 32, 32, true, true, true, true),
        (GgmlType::Q8_0, 64, 2, 2, 12, 12, true, false, true, true),
        (GgmlType::Q8_0, 64, 4, 1, 8, 8, false, true, false, true),
        (GgmlType::Q4_0, 2048, 2, 1, 32, 32, true, false, false, true),
        (GgmlType::Q4_0, 64, 2, 1, 12, 12, false, false, false, false),
        (GgmlType::Q8_0, 64, 2, 1, 16, 8, true, false, false, false),
    ];
    // (it counts the launches of each call)
    for dev in own_devices(4, "-qkv-rope") {
        let gpu = GpuBackend::new(dev.clone());
        let down = |g: &DeviceBuffer, n: usize| download(&gpu, g, n);
        // Row `pos` of a cache (rows of n values).
        let cache_row =
            |c: &GpuKv, pos: usize, n: usize| cache_values(c)[pos * n..(pos + 1) * n].to_vec();
        for &(ty, k, heads, kv_heads, head_dim, n_rot, neox, with_ff, with_bias, applies) in &cases
        {
            let (nq, nkv) = (heads * head_dim, kv_heads * head_dim);
            let params = RopeParams {
                theta: 10000.0,
                neox,
                n_rot,
            };
            let host: Vec<(usize, Vec<u8>)> = [nq, nkv, nkv]
                .iter()
                .map(|&n| {
                    let b = random_weight_bytes(ty, n, k, rng.next_u64()).unwrap();
                    (n, b)
                })
                .collect();
            let w: Vec<_> = host
                .iter()
                .map(|(n, b)| gpu.weight(ty, *n, k, b).unwrap())
                .collect();
            let ws = [&w[0], &w[1], &w[2]];
            let bias_host = [rng.vec(nq), rng.vec(nkv), rng.vec(nkv)];
            let bw: Vec<_> = bias_host
                .iter()
                .map(|b| {
                    gpu.weight(GgmlType::F32, 1, b.len(), &f32_bytes(b))
                        .unwrap()
                })
                .collect();
            let biases = with_bias.then(|| [&bw[0], &bw[1], &bw[2]]);
            let ff: Option<Vec<f32>> = with_ff.then(|| {
                (0..n_rot / 2)
                    .map(|_| 1.0 + 4.0 * rng.uniform().abs())
                    .collect()
            });
            let gff = ff.as_ref().map(|f| {
                gpu.weight(GgmlType::F32, 1, f.len(), &f32_bytes(f))
                    .unwrap()
            });
            let norm_host = rng.vec(k);
            let gnorm = gpu
                .weight(GgmlType::F32, 1, k, &f32_bytes(&norm_host))
                .unwrap();
            let eps = 1e-5f32;
            let wo_bytes = random_weight_bytes(ty, k, k, rng.next_u64()).unwrap();
            let wo = gpu.weight(ty, k, k, &wo_bytes).unwrap();
            // (after the weights: it sizes the norm sums for the longest row uploaded)
            gpu.reserve_workspace(1, n_ctx, heads, kv_heads, head_dim, 100)
                .unwrap();
            let mut step = gpu
                .new_step(n_ctx, heads, kv_heads, head_dim, 100)
                .unwrap()
                .expect("the GPU backend has step ops");
            for (dtype, pos, handed_over) in [
                (KvDtype::F16, 0, false),
                (KvDtype::F32, 5, true),
                (KvDtype::F16, n_ctx - 1, true),
            ] {
                let what = format!(
                    "{ty:?} k {k}, {heads}/{kv_heads} heads of {head_dim} (n_rot {n_rot}, neox \
                     {neox}, factors {with_ff}, bias {with_bias}), {dtype:?} at {pos}, norm \
                     handed over {handed_over}"
                );
                gpu.set_step(&mut step, 0, pos).unwrap();
                let mut xb = gpu.zeros(k).unwrap();
                let x = rng.vec(k);
                // The residual this step's norm reads: x itself, or x + the projection of
                // another vector by `matmul_add_norm`, which hands the norm's input over.
                let mut gx = gpu.upload(&x).unwrap();
                let x2 = gpu.upload(&rng.vec(k)).unwrap();
                let mut bufs = [
                    gpu.zeros(nq).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                ];
                let mut kc = gpu.kv_cache(n_ctx * nkv, dtype).unwrap();
                let mut vc = gpu.kv_cache(n_ctx * nkv, dtype).unwrap();
                let [q, kb, vb] = &mut bufs;
                let launches = dev.launch_count();
                if handed_over {
                    #[rustfmt::skip]
                    gpu.matmul_add_norm(&x2, &wo, 1, k, &gnorm, eps, &mut xb, &mut gx).unwrap();
                }
                let resid = down(&gx, k);
                #[rustfmt::skip]
                gpu.rms_norm_qkv_rope_kv_step(
                    &gx, &gnorm, eps, ws, biases, &mut xb, q, kb, vb, &mut kc, &mut vc, heads,
                    kv_heads, head_dim, &step, &params, gff.as_ref(),
                )
                .unwrap();
                if applies {
                    let want = if handed_over { 2 } else { 1 };
                    assert_eq!(dev.launch_count() - launches, want, "{what}: launches");
                }
                let got_q = down(q, nq);
                // The same through the trait's separate calls.
                let mut xb2 = gpu.zeros(k).unwrap();
                let mut ubufs = [
                    gpu.zeros(nq).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                    gpu.zeros(nkv).unwrap(),
                ];
                let mut ukc = gpu.kv_cache(n_ctx * nkv, dtype).unwrap();
                let mut uvc = gpu.kv_cache(n_ctx * nkv, dtype).unwrap();
                let [uq, ukb, uvb] = &mut ubufs;
                #[rustfmt::skip]
                gpu.rms_norm_qkv(&gx, &gnorm, eps, ws, biases, 1, &mut xb2, uq, ukb, uvb).unwrap();
                #[rustfmt::skip]
                gpu.rope_kv_append_step(
                    uq, ukb, uvb, &mut ukc, &mut uvc, heads, kv_heads, head_dim, &step, &params,
                    gff.as_ref(),
                )
                .unwrap();
                // (the separate calls find no norm handed over, the fused call took it: their
                // sums of squares may differ by a rounding)
                let tol = if dtype == KvDtype::F16 { 1e-3 } else { 1e-5 };
                let sep = |c: &GpuKv| cache_row(c, pos, nkv);
                assert_close(
                    &format!("{what}: q vs the separate calls"),
                    &got_q,
                    &down(uq, nq),
                    1e-5,
                );
                assert_close(
                    &format!("{what}: k vs the separate calls"),
                    &sep(&kc),
                    &sep(&ukc),
                    tol,
                );
                assert_close(
                    &format!("{what}: v vs the separate calls"),
                    &sep(&vc),
                    &sep(&uvc),
                    tol,
                );
                for (c, name) in [(&kc, "k"), (&vc, "v")] {
                    let other: usize = (0..n_ctx)
                        .filter(|&p| p != pos)
                        .map(|p| cache_row(c, p, nkv).iter().filter(|&&v| v != 0.0).count())
                        .sum();
                    assert_eq!(other, 0, "{what}: {name} cache rows besides the step's");
                }
                // The reference: float64 projections of the normalized x in 8 bits (as the
                // model's m = 1 kernels take it), the bias, and the rotation.
                let proj = |i: usize| -> Vec<f64> {
                    let (n, b) = &host[i];
                    let mut out = rms_norm_q8x_reference(&resid, &norm_host, eps, ty, *n, b);
                    if with_bias {
                        out.iter_mut()
                            .zip(&bias_host[i])
                            .for_each(|(o, &b)| *o += b as f64);
                    }
                    out
                };
                let turn = |v: &mut [f64]| {
                    for h in v.chunks_mut(head_dim) {
                        for i in 0..n_rot / 2 {
                            let (i0, i1) = if neox {
                                (i, i + n_rot / 2)
                            } else {
                                (2 * i, 2 * i + 1)
                            };
                            let mut angle = pos as f64
                                * (params.theta as f64).powf(-2.0 * i as f64 / n_rot as f64);
                            if let Some(f) = &ff {
                                angle /= f[i] as f64;
                            }
                            let (s, c) = angle.sin_cos();
                            let (x0, x1) = (h[i0], h[i1]);
                            h[i0] = x0 * c - x1 * s;
                            h[i1] = x0 * s + x1 * c;
                        }
                    }
                };
                let f32s = |v: Vec<f64>| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
                let (mut wq, mut wk, wv) = (proj(0), proj(1), proj(2));
                turn(&mut wq);
                turn(&mut wk);
                let tol = if dtype == KvDtype::F16 { 1e-3 } else { 1e-5 };
                assert_close(&format!("{what}: q"), &got_q, &f32s(wq), 1e-5);
                assert_close(
                    &format!("{what}: k"),
                    &cache_row(&kc, pos, nkv),
                    &f32s(wk),
                    tol,
                );
                assert_close(
                    &format!("{what}: v"),
                    &cache_row(&vc, pos, nkv),
                    &f32s(wv),
                    tol,
                );
            }
        }
    }
}
