//! The GPU launchers and kernels, run on the CPU emulation (`crate::device::emulator`) at wave size 32 and
//! 64, against the CPU reference ops. Building the kernels with g++ takes minutes, so these
//! tests are ignored by default; `scripts/check-kernels.sh` runs them
//! (`cargo test --lib emulator -- --ignored`).

use std::sync::{Arc, OnceLock};

use half::f16;

use crate::backend::{Activation, Attention, Map, Pos, Rope, Tokens};
use crate::device::emulator::EmuRuntime;
use crate::device::gpu::{DeviceBuffer, GpuDevice};
use crate::device::{kernels, Device, KvDtype};
use crate::gguf::{quants, GgmlType};
use crate::ops::bench::random_weight_bytes;
use crate::ops::rope::RopeParams;
use crate::ops::{self, attention::AttentionShape, WeightView};
use crate::test_rng::TestRng;

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

/// `host` in a buffer of `gpu`'s device.
fn up(gpu: &super::GpuBackend, host: &[f32]) -> DeviceBuffer {
    DeviceBuffer::from_slice(gpu.device(), host, "test upload").unwrap()
}

/// The first `n` floats of a device buffer.
fn download(gpu: &super::GpuBackend, g: &DeviceBuffer, n: usize) -> Vec<f32> {
    use crate::backend::Backend;
    let mut v = vec![0f32; n];
    gpu.download(g, &mut v).unwrap();
    v
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
    let mut rng = TestRng::for_test("small_ops_match_the_cpu");
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
        // swiglu, geglu, gelu, add, add_bias, scale
        let n = 1000;
        let (g, u) = (rng.vec(n), rng.vec(n));
        let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
        ops::activation::swiglu(&gpu, &g, &u, n, &mut a).unwrap();
        ops::activation::swiglu(&Device::Cpu, &g, &u, n, &mut b).unwrap();
        assert_close("swiglu", &a, &b, 1e-6);
        // geglu and gelu, with gates out to where tanh saturates
        let wide: Vec<f32> = g.iter().map(|v| v * 30.0).collect();
        let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
        ops::activation::geglu(&gpu, &wide, &u, n, &mut a).unwrap();
        ops::activation::geglu(&Device::Cpu, &wide, &u, n, &mut b).unwrap();
        assert_close("geglu", &a, &b, 1e-6);
        let (mut c, mut d) = (vec![0f32; n], vec![0f32; n]);
        ops::activation::gelu(&gpu, &wide, n, &mut c).unwrap();
        ops::activation::gelu(&Device::Cpu, &wide, n, &mut d).unwrap();
        assert_close("gelu", &c, &d, 1e-6);
        let times_up: Vec<f32> = c.iter().zip(&u).map(|(c, u)| c * u).collect();
        assert_close("gelu * up = geglu", &times_up, &a, 0.0);
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
            let buf = up(&backend, &long);
            assert_eq!(backend.argmax(&buf, long.len()).unwrap().0, 30_000);
            x[2] = f32::NAN;
            let buf = up(&backend, &x);
            assert_eq!(backend.argmax(&buf, x.len()).unwrap().0, 2);
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
    use ops::attention::flash_attention;
    let mut rng = TestRng::for_test("attention_matches_the_cpu");
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
                ops::attention::flash_attention(&gpu, &q, &k, &v, &s, causal, scale, None, &mut fa)
                    .unwrap();
                ops::attention::flash_attention(
                    &Device::Cpu,
                    &q,
                    &k,
                    &v,
                    &s,
                    causal,
                    scale,
                    None,
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
            let cpu = Device::Cpu;
            // causal, then over sliding windows of 1 key and of half the keys; the keys before
            // the first query's window are NaN on the GPU (a kernel that reads them fails)
            let half = (seq_k / 2).max(1);
            for window in [None, Some(1), Some(half)] {
                let first = window.map_or(0, |w| (seq_k + 1).saturating_sub(seq_q + w));
                let (gk, gv) = (nan_before(&k16, &s, first), nan_before(&v16, &s, first));
                let (mut fa, mut fb) = (vec![0f32; s.q_len()], vec![0f32; s.q_len()]);
                flash_attention(&gpu, &q, &gk, &gv, &s, true, scale, window, &mut fa).unwrap();
                flash_attention(&cpu, &q, &k16, &v16, &s, true, scale, window, &mut fb).unwrap();
                let what = format!("flash_attention f16 {s:?} window {window:?}");
                assert_close(&what, &fa, &fb, 1e-5);
                // a decode step's every form, without a window and over half the keys (the
                // window of 1 is the first form's, through the ops)
                if batch == 1 && seq_q == 1 && window != Some(1) {
                    device_key_count_attention(&dev, &s, &q, &k16, &v16, scale, window, &fb);
                }
            }
            // f32 keys over a window of 5
            let (mut fa, mut fb) = (vec![0f32; s.q_len()], vec![0f32; s.q_len()]);
            flash_attention(&gpu, &q, &k, &v, &s, true, scale, Some(5), &mut fa).unwrap();
            flash_attention(&cpu, &q, &k, &v, &s, true, scale, Some(5), &mut fb).unwrap();
            assert_close(&format!("flash_attention {s:?} window 5"), &fa, &fb, 1e-5);
        }
    }
}

/// `x [batch, seq_k, kv_heads, head_dim]` with the key rows before `first` NaN.
fn nan_before(x: &[f16], s: &AttentionShape, first: usize) -> Vec<f16> {
    let mut x = x.to_vec();
    let row = s.kv_heads * s.head_dim;
    for b in x.chunks_exact_mut(s.seq_k * row) {
        b[..first * row].fill(f16::NAN);
    }
    x
}

/// A decode step's attention: one query, the key count read from the device (the step's
/// position + 1), over an f16 cache whose rows past the keys hold garbage and, with a window,
/// whose rows before it are NaN, with each form the tuning chooses (the decode plan's launch),
/// against `want` (the CPU's, host key count).
#[allow(clippy::too_many_arguments)]
fn device_key_count_attention(
    dev: &Arc<GpuDevice>,
    s: &AttentionShape,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    scale: f32,
    window: Option<usize>,
    want: &[f32],
) {
    use crate::device::gpu::Temp;
    use crate::device::tuning::DecodeAttention;
    use crate::ops::attention::gpu::{launch_flash_attention_with, KeyCount};
    let rows = s.seq_k + 37;
    let row = s.kv_heads * s.head_dim;
    let first = window.map_or(0, |w| s.seq_k.saturating_sub(w));
    let cache = |x: &[f16]| {
        let mut c: Vec<u16> = nan_before(x, s, first)
            .iter()
            .map(|h| h.to_bits())
            .collect();
        c.resize(rows * row, f16::from_f32(1e4).to_bits());
        DeviceBuffer::from_slice(dev, &c, "test cache").unwrap()
    };
    let (kc, vc) = (cache(k), cache(v));
    let qd = DeviceBuffer::from_slice(dev, q, "test q").unwrap();
    let n_past = DeviceBuffer::from_slice(dev, &[0i32, s.seq_k as i32 - 1], "test pos").unwrap();
    let most = AttentionShape { seq_k: rows, ..*s };
    for mode in [
        DecodeAttention::Auto,
        DecodeAttention::Head,
        DecodeAttention::Kv,
        DecodeAttention::Flash,
    ] {
        let mut out = DeviceBuffer::alloc(dev, want.len() * 4, "test out").unwrap();
        #[rustfmt::skip]
        launch_flash_attention_with(
            dev, &qd, &kc, &vc, KvDtype::F16, rows, &most, true, scale, window, &mut out,
            KeyCount::Device(&n_past, 4), Temp::Shared, mode, true,
        )
        .unwrap();
        let mut got = vec![0f32; want.len()];
        out.read(&mut got, "test").unwrap();
        assert_close(
            &format!("device key count {mode:?} window {window:?} {s:?}"),
            &got,
            want,
            1e-5,
        );
    }
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn matmul_and_embedding_match_the_cpu() {
    let mut rng = TestRng::for_test("matmul_and_embedding_match_the_cpu");
    for dev in devices() {
        let gpu = Device::Gpu(dev.clone());
        for (ty, _) in kernels::WEIGHT_TYPES {
            let (n, k) = (
                37,
                if ty.block_size() == 256 {
                    768 // (3 super-blocks: Q6_K rows 2-byte aligned)
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
                // global memory there, staged on the other device (the model's m = 1 matvecs are
                // decode_matvec_family_matches_the_reference's).
                for k in [2112, 5120] {
                    let bytes = random_weight_bytes(ty, n, k, rng.next_u64()).unwrap();
                    let w = WeightView::new(ty, n, k, &bytes).unwrap();
                    let mut dense = vec![0f32; n * k];
                    quants::dequantize(ty, &bytes, &mut dense).unwrap();
                    let ms: &[usize] = if k == 5120 { &[1, 5] } else { &[1] };
                    for &m in ms {
                        let x = rng.vec(m * k);
                        let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
                        ops::matmul::matmul_gguf(&gpu, &x, &w, m, &mut a).unwrap();
                        ops::matmul::matmul_f32(&Device::Cpu, &x, &dense, m, n, k, &mut b).unwrap();
                        assert_close(&format!("matmul {} m={m} k={k}", ty.name()), &a, &b, 1e-5);
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

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn gpu_backend_matches_the_cpu_backend() {
    use super::GpuBackend;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::Backend;

    let mut rng = TestRng::for_test("gpu_backend_matches_the_cpu_backend");
    let (dim, heads, kv_heads, head_dim, n_ctx, vocab) = (64, 4, 2, 16, 40, 50);
    let kv_row = kv_heads * head_dim;
    for dev in devices() {
        let (gpu, cpu) = (GpuBackend::new(dev.clone()), CpuBackend);
        let table = random_weight_bytes(GgmlType::Q8_0, vocab, dim, rng.next_u64()).unwrap();
        let wq = random_weight_bytes(GgmlType::Q4_K, dim, 256, rng.next_u64()).unwrap();
        let norm: Vec<u8> = rng.vec(dim).iter().flat_map(|v| v.to_le_bytes()).collect();
        let (gt, ct) = (
            gpu.weight(WeightView::new(GgmlType::Q8_0, vocab, dim, &table).unwrap())
                .unwrap(),
            cpu.weight(WeightView::new(GgmlType::Q8_0, vocab, dim, &table).unwrap())
                .unwrap(),
        );
        let (gw, cw) = (
            gpu.weight(WeightView::new(GgmlType::Q4_K, dim, 256, &wq).unwrap())
                .unwrap(),
            cpu.weight(WeightView::new(GgmlType::Q4_K, dim, 256, &wq).unwrap())
                .unwrap(),
        );
        let (gn, cn) = (
            gpu.weight(WeightView::new(GgmlType::F32, 1, dim, &norm).unwrap())
                .unwrap(),
            cpu.weight(WeightView::new(GgmlType::F32, 1, dim, &norm).unwrap())
                .unwrap(),
        );
        let down = |g: &DeviceBuffer, n: usize| download(&gpu, g, n);
        // embedding -> rms_norm
        let ids = [3u32, 49, 0, 7, 7];
        let t = ids.len();
        let (mut ge, mut ce) = (gpu.zeros(t * dim).unwrap(), cpu.zeros(t * dim).unwrap());
        gpu.embedding(&gt, Tokens::Host(&ids), &mut ge).unwrap();
        cpu.embedding(&ct, Tokens::Host(&ids), &mut ce).unwrap();
        assert_close("embedding", &down(&ge, t * dim), &ce, 0.0);
        let (mut gx, mut cx) = (gpu.zeros(t * dim).unwrap(), cpu.zeros(t * dim).unwrap());
        gpu.rms_norm(&ge, &gn, 1e-5, t, &mut gx).unwrap();
        cpu.rms_norm(&ce, &cn, 1e-5, t, &mut cx).unwrap();
        assert_close("rms_norm", &down(&gx, t * dim), &cx, 1e-5);
        // matmul of a [t, 256] activation by the Q4_K weight [dim, 256]
        let act = rng.vec(t * 256);
        let (ga, ca) = (up(&gpu, &act), act.to_vec());
        let (mut gm, mut cm) = (gpu.zeros(t * dim).unwrap(), cpu.zeros(t * dim).unwrap());
        gpu.matmul(&ga, &gw, t, &mut gm).unwrap();
        // The CPU reference op (the backend's own matmul rounds activations to 8 bits).
        crate::ops::matmul::matmul_gguf(&crate::device::Device::Cpu, &ca, &cw.view(), t, &mut cm)
            .unwrap();
        assert_close("matmul", &down(&gm, t * dim), &cm, 1e-5);
        // rope at position 11, then the KV cache (f16) and causal attention over 11 + t rows,
        // also over a sliding window of 3
        let params = RopeParams {
            theta: 10000.0,
            neox: true,
            n_rot: head_dim,
        };
        let q = rng.vec(t * heads * head_dim);
        let (mut gq, mut cq) = (up(&gpu, &q), q.to_vec());
        let (grope, crope) = (
            Rope {
                params,
                freq_factors: None,
            },
            Rope {
                params,
                freq_factors: None,
            },
        );
        gpu.rope(&mut gq, [t, heads, head_dim], Pos::At(11), &grope)
            .unwrap();
        cpu.rope(&mut cq, [t, heads, head_dim], Pos::At(11), &crope)
            .unwrap();
        assert_close("rope", &down(&gq, q.len()), &cq, 2e-5);
        for dtype in [KvDtype::F16, KvDtype::F32] {
            let (mut gk, mut ck) = (
                gpu.kv_cache(n_ctx, kv_row, dtype).unwrap(),
                cpu.kv_cache(n_ctx, kv_row, dtype).unwrap(),
            );
            let (mut gv, mut cv) = (
                gpu.kv_cache(n_ctx, kv_row, dtype).unwrap(),
                cpu.kv_cache(n_ctx, kv_row, dtype).unwrap(),
            );
            let rows = 11 + t;
            let (k, v) = (rng.vec(rows * kv_row), rng.vec(rows * kv_row));
            let (gks, cks) = (up(&gpu, &k), k.to_vec());
            let (gvs, cvs) = (up(&gpu, &v), v.to_vec());
            gpu.kv_append(&mut gk, &gks, Pos::At(0), rows).unwrap();
            cpu.kv_append(&mut ck, &cks, Pos::At(0), rows).unwrap();
            gpu.kv_append(&mut gv, &gvs, Pos::At(0), rows).unwrap();
            cpu.kv_append(&mut cv, &cvs, Pos::At(0), rows).unwrap();
            let scale = 1.0 / (head_dim as f32).sqrt();
            for window in [None, Some(3)] {
                let (mut go, mut co) = (gpu.zeros(q.len()).unwrap(), cpu.zeros(q.len()).unwrap());
                let a = Attention {
                    seq_q: t,
                    pos: Pos::At(rows - t),
                    heads,
                    kv_heads,
                    head_dim,
                    scale,
                    window,
                };
                gpu.attention(&gq, &gk, &gv, &a, &mut go).unwrap();
                cpu.attention(&cq, &ck, &cv, &a, &mut co).unwrap();
                assert_close(
                    &format!("attention {dtype:?} window {window:?}"),
                    &down(&go, q.len()),
                    &co,
                    1e-5,
                );
            }
        }
        // copy_rows, add, the gated activations, the maps, argmax: each on the same inputs on
        // both sides (the CPU's from the GPU's values), so that the differences the matmul and
        // the norm left (within their own bounds) are not charged to these ops.
        cm = down(&gm, t * dim);
        cx = down(&gx, t * dim);
        let (mut gr, mut cr) = (gpu.zeros(3 * dim).unwrap(), cpu.zeros(3 * dim).unwrap());
        gpu.copy_rows(&gm, 3, 2, dim, &mut gr, 1).unwrap();
        cpu.copy_rows(&cm, 3, 2, dim, &mut cr, 1).unwrap();
        assert_close("copy_rows", &down(&gr, 3 * dim), &cr, 1e-5);
        gpu.add(&mut gm, &gx, t * dim).unwrap();
        cpu.add(&mut cm, &cx, t * dim).unwrap();
        assert_close("add", &down(&gm, t * dim), &cm, 1e-5);
        for act in [Activation::Silu, Activation::GeluTanh] {
            let (mut gs, mut cs) = (gpu.zeros(t * dim).unwrap(), cpu.zeros(t * dim).unwrap());
            gpu.glu(&gm, &gx, t * dim, act, &mut gs).unwrap();
            cpu.glu(&cm, &cx, t * dim, act, &mut cs).unwrap();
            assert_close(act.glu_name(), &down(&gs, t * dim), &cs, 1e-5);
        }
        for f in [Map::Scale(0.37), Map::SoftCap(1.5)] {
            cm = down(&gm, t * dim);
            gpu.map(&mut gm, t * dim, f).unwrap();
            cpu.map(&mut cm, t * dim, f).unwrap();
            assert_close(&format!("{f:?}"), &down(&gm, t * dim), &cm, 1e-5);
        }
        let logits = rng.vec(vocab);
        let (gp, cp) = (
            gpu.argmax(&up(&gpu, &logits), vocab).unwrap(),
            cpu.argmax(&logits.clone(), vocab).unwrap(),
        );
        assert_eq!((gp.0, gp.1.to_bits()), (cp.0, cp.1.to_bits()));
    }
}

/// The types of the decode matvec family (kernels/matvec.hip).
const DECODE_TYPES: [GgmlType; 10] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
];

/// x in 8 bits as the decode kernels take it, in float64: each piece of `piece` values (32,
/// Q8_0 16) becomes d * q, d = max|x| / 127 (float32), q = x * (127 / max|x|) rounded to the
/// nearest integer, ties to even.
fn q8x(x: &[f32], piece: usize) -> Vec<f64> {
    let mut xq = vec![0f64; x.len()];
    for (xs, qs) in x.chunks(piece).zip(xq.chunks_mut(piece)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let inv = if amax != 0.0 { 127.0f32 / amax } else { 0.0 };
        let d = (amax / 127.0) as f64;
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = (v as f64 * inv as f64).round_ties_even() * d;
        }
    }
    xq
}

/// The decode family's x piece (values) for `ty`.
fn decode_piece(ty: GgmlType) -> usize {
    if ty == GgmlType::Q8_0 {
        16
    } else {
        32
    }
}

/// The rows of `w` (dequantized by src/gguf/quants, as the `gguf` package does) dotted with
/// xq, in float64.
fn rows_dot(w: &WeightView, xq: &[f64]) -> Vec<f64> {
    let mut row = vec![0f32; w.cols];
    (0..w.rows)
        .map(|r| {
            w.dequantize_rows(r, &mut row).unwrap();
            row.iter().zip(xq).map(|(&a, &b)| a as f64 * b).sum()
        })
        .collect()
}

/// `x @ w^T` for m = 1 as the model's decode kernels define it (x in 8 bits), in float64.
fn q8x_reference(x: &[f32], w: &WeightView) -> Vec<f32> {
    let xq = q8x(x, decode_piece(w.ty));
    rows_dot(w, &xq).iter().map(|&v| v as f32).collect()
}

/// The decode family's cases for `types` on devices of their own (each launch is checked to be
/// one kernel, the one expected). Two tests of half the types each, so that they run side by
/// side.
fn decode_matvec_family(test: &str, first_device: usize, types: &[GgmlType]) {
    let mut rng = TestRng::for_test(test);
    for dev in own_devices(first_device, &format!("-{test}")) {
        for &ty in types {
            decode_family_cases(&dev, ty, &mut rng);
        }
    }
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn decode_matvec_family_32_value_blocks_match_the_reference() {
    decode_matvec_family("decode-family-32", 8, &DECODE_TYPES[..6]);
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn decode_matvec_family_256_value_blocks_match_the_reference() {
    decode_matvec_family("decode-family-k", 10, &DECODE_TYPES[6..]);
}

/// Every shape of the table (src/device/matvec_table.rs) for `ty`, chosen through the tuning
/// record as a model would, each with one of the epilogues it serves, a norm mode and odd row
/// counts, against a float64 reference of the same 8-bit x on the weights dequantized by
/// src/gguf/quants (not by the kernels); then rows of several chunks and a NaN.
fn decode_family_cases(dev: &Arc<GpuDevice>, ty: GgmlType, rng: &mut TestRng) {
    use crate::device::matvec_table::{Core, Epilogue};
    use crate::device::tuning::Tuning;
    use crate::ops::activation::Activation;
    use crate::ops::matmul::decode::{matvec_decode_gguf, DecodeCase, DecodeEpilogue, DecodeNorm};
    let suffix = kernels::WEIGHT_TYPES
        .iter()
        .find(|(t, _)| *t == ty)
        .unwrap()
        .1;
    // Rows of 4-byte but not 16-byte multiples where the type has them (the 4-byte loads);
    // the streaming kernel takes 16-byte aligned rows only.
    // (and at most 32 pieces: the capped form takes rows a block reads in one pass)
    let k_small = match ty {
        GgmlType::Q8_0 => 448,
        _ if ty.block_size() == 256 => 512,
        _ => 576,
    };
    let k_stream = 2048;
    let eps = 1e-5f32;
    let weights = |rng: &mut TestRng, rows: &[usize], k: usize| -> Vec<Vec<u8>> {
        rows.iter()
            .map(|&n| random_weight_bytes(ty, n, k, rng.next_u64()).unwrap())
            .collect()
    };
    fn views<'a>(
        ty: GgmlType,
        bytes: &'a [Vec<u8>],
        rows: &[usize],
        k: usize,
    ) -> Vec<WeightView<'a>> {
        bytes
            .iter()
            .zip(rows)
            .map(|(b, &n)| WeightView::new(ty, n, k, b).unwrap())
            .collect()
    }
    // x with a piece of zeros (scale 0) and a piece 8 times larger
    let input = |rng: &mut TestRng, k: usize| {
        let mut x = rng.vec(k);
        x[..32].iter_mut().for_each(|v| *v *= 8.0);
        x[32..64].iter_mut().for_each(|v| *v = 0.0);
        x
    };
    // norm 0: none, 1: by weight, 2: handed over (x already x * w, sum(x^2) in parts)
    struct Norm {
        w: Vec<f32>,
        parts: Vec<f32>,
    }
    let make_norm = |rng: &mut TestRng, x: &[f32]| Norm {
        w: rng.vec(x.len()),
        parts: x
            .chunks(100)
            .map(|c| c.iter().map(|v| v * v).sum())
            .collect(),
    };
    // (the x the reference quantizes, the scale of the sums)
    let normed = |mode: usize, x: &[f32], n: &Norm| -> (Vec<f32>, f64) {
        let k = x.len() as f64;
        match mode {
            1 => {
                let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
                let z = x.iter().zip(&n.w).map(|(a, b)| a * b).collect();
                (z, 1.0 / (ss / k + eps as f64).sqrt())
            }
            2 => {
                let ss: f64 = n.parts.iter().map(|&v| v as f64).sum();
                (x.to_vec(), 1.0 / (ss / k + eps as f64).sqrt())
            }
            _ => (x.to_vec(), 1.0),
        }
    };
    fn norm_of(mode: usize, n: &Norm, eps: f32) -> DecodeNorm<'_> {
        match mode {
            1 => DecodeNorm::Weight(&n.w, eps),
            2 => DecodeNorm::Parts(&n.parts, eps),
            _ => DecodeNorm::None,
        }
    }
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let act_f64 = |act: Activation, g: f64| match act {
        Activation::Silu => g / (1.0 + (-g).exp()),
        Activation::GeluTanh => {
            0.5 * g
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g)).tanh())
        }
    };
    for (i, shape) in crate::device::matvec_table::SHAPES.iter().enumerate() {
        let mut t = Tuning::default();
        let (rows, capped) = (shape.rows, shape.capped());
        match shape.core {
            Core::RowBlock if shape.epilogue == Epilogue::Glu => {
                t.glu_rows = Some(rows);
                t.matvec_stream = false;
            }
            Core::RowBlock => {
                t.matvec_rows = Some(rows);
                t.matvec_capped = capped;
            }
            Core::Stream { stages } => t.stream_stages = Some(stages),
        }
        let mode = i % 3;
        let what = format!("{} {ty:?} norm {mode}", shape.name(suffix));
        // (a type has its streaming kernels at one group size: a streaming shape of another
        // takes the type's own of the same stages; a row-block shape of more rows than the
        // type takes, the type's largest, uncapped)
        let table_type = crate::device::matvec_table::TYPES
            .iter()
            .find(|t| t.suffix == suffix)
            .unwrap();
        let want_kernel = match shape.core {
            Core::Stream { .. } if !table_type.has(shape) => crate::device::matvec_table::Shape {
                rows: table_type.stream_rows,
                ..*shape
            }
            .name(suffix),
            Core::RowBlock if !table_type.has(shape) => crate::device::matvec_table::SHAPES
                .iter()
                .find(|s| {
                    s.epilogue == shape.epilogue
                        && s.core == Core::RowBlock
                        && s.rows == table_type.row_block_max
                        && !s.capped()
                })
                .unwrap()
                .name(suffix),
            _ => shape.name(suffix),
        };
        let expect_kernel = |kernel: &str| assert_eq!(kernel, want_kernel, "{what}: kernel");
        match shape.epilogue {
            Epilogue::Proj => {
                // Store: three matrices (rows not a multiple of the block's), biases
                let k = k_small;
                let ns = [13, 5, 7];
                let wb = weights(rng, &ns, k);
                let w = views(ty, &wb, &ns, k);
                let x = input(rng, k);
                let norm = make_norm(rng, &x);
                let bias: Vec<Vec<f32>> = ns.iter().map(|&n| rng.vec(n)).collect();
                let case = DecodeCase {
                    x: &x,
                    weights: w.clone(),
                    biases: bias.iter().map(|b| Some(&b[..])).collect(),
                    out_init: None,
                    norm: norm_of(mode, &norm, eps),
                    epilogue: DecodeEpilogue::Store,
                };
                let got = matvec_decode_gguf(dev, &t, &case).unwrap();
                expect_kernel(&got.kernel);
                let (z, scale) = normed(mode, &x, &norm);
                let xq = q8x(&z, decode_piece(ty));
                for (m, wm) in w.iter().enumerate() {
                    let want: Vec<f64> = rows_dot(wm, &xq)
                        .iter()
                        .zip(&bias[m])
                        .map(|(&y, &b)| y * scale + b as f64)
                        .collect();
                    assert_close(
                        &format!("{what}: store {m}"),
                        &got.outs[m],
                        &to32(&want),
                        1e-5,
                    );
                }
                // Add into a residual: loaded early with the next norm's input, or not
                let early = i % 2 == 0;
                let ns = [21];
                let wb = weights(rng, &ns, k);
                let w = views(ty, &wb, &ns, k);
                let (resid, next) = (rng.vec(21), rng.vec(21));
                let mode2 = (mode + 1) % 3;
                let case = DecodeCase {
                    x: &x,
                    weights: w.clone(),
                    biases: vec![],
                    out_init: Some(&resid),
                    norm: norm_of(mode2, &norm, eps),
                    epilogue: DecodeEpilogue::Add {
                        early,
                        next_norm: early.then_some(&next[..]),
                    },
                };
                let got = matvec_decode_gguf(dev, &t, &case).unwrap();
                expect_kernel(&got.kernel);
                let (z, scale) = normed(mode2, &x, &norm);
                let want: Vec<f64> = rows_dot(&w[0], &q8x(&z, decode_piece(ty)))
                    .iter()
                    .zip(&resid)
                    .map(|(&y, &r)| r as f64 + y * scale)
                    .collect();
                let out = &got.outs[0];
                assert_close(
                    &format!("{what}: add (early {early})"),
                    out,
                    &to32(&want),
                    1e-5,
                );
                if early {
                    let xw: Vec<f32> = out.iter().zip(&next).map(|(o, w)| o * w).collect();
                    assert_eq!(got.xw, xw, "{what}: the next norm's x * w");
                    let block_rows = rows.min(table_type.row_block_max);
                    assert_eq!(
                        got.parts.len(),
                        21usize.div_ceil(block_rows),
                        "{what}: blocks"
                    );
                    let ss: f64 = out.iter().map(|&o| o as f64 * o as f64).sum();
                    let sum: f64 = got.parts.iter().map(|&v| v as f64).sum();
                    assert!(
                        (sum - ss).abs() <= 1e-5 * ss,
                        "{what}: sums of out^2 {sum} vs {ss}"
                    );
                }
            }
            Epilogue::Glu => {
                let (k, n) = match shape.core {
                    Core::Stream { stages: 3 } => (k_stream, 400), // blocks go round the ring
                    Core::Stream { .. } => (k_stream, 77),
                    Core::RowBlock => (k_small, 11),
                };
                let act = if i % 2 == 0 {
                    Activation::Silu
                } else {
                    Activation::GeluTanh
                };
                let ns = [n, n];
                let wb = weights(rng, &ns, k);
                let w = views(ty, &wb, &ns, k);
                let x = input(rng, k);
                // the activation's input a few units large (neither linear nor flat)
                let x: Vec<f32> = x.iter().map(|v| v * 0.25).collect();
                let norm = make_norm(rng, &x);
                let case = DecodeCase {
                    x: &x,
                    weights: w.clone(),
                    biases: vec![],
                    out_init: None,
                    norm: norm_of(mode, &norm, eps),
                    epilogue: DecodeEpilogue::Glu(act),
                };
                let got = matvec_decode_gguf(dev, &t, &case).unwrap();
                expect_kernel(&got.kernel);
                let (z, scale) = normed(mode, &x, &norm);
                let xq = q8x(&z, decode_piece(ty));
                let (g, u) = (rows_dot(&w[0], &xq), rows_dot(&w[1], &xq));
                let want: Vec<f64> = g
                    .iter()
                    .zip(&u)
                    .map(|(&g, &u)| act_f64(act, g * scale) * u * scale)
                    .collect();
                assert_close(
                    &format!("{what}: {act:?}"),
                    &got.outs[0],
                    &to32(&want),
                    1e-5,
                );
            }
            Epilogue::QkvRope { f16 } => {
                let (heads, kv_heads, head_dim, n_ctx, pos) = (3, 1, 16, 8, 5);
                let (nq, nkv) = (heads * head_dim, kv_heads * head_dim);
                let neox = i % 2 == 0;
                let params = RopeParams {
                    theta: 10000.0,
                    neox,
                    n_rot: head_dim,
                };
                let k = k_small;
                let ns = [nq, nkv, nkv];
                let wb = weights(rng, &ns, k);
                let w = views(ty, &wb, &ns, k);
                let x = input(rng, k);
                let norm = make_norm(rng, &x);
                let bias: Vec<Vec<f32>> = ns.iter().map(|&n| rng.vec(n)).collect();
                let with_bias = i % 4 < 2;
                let ff: Vec<f32> = (0..head_dim / 2)
                    .map(|_| 1.0 + 4.0 * rng.uniform().abs())
                    .collect();
                let with_ff = i % 4 == 1 || i % 4 == 2;
                let dtype = if f16 {
                    crate::device::KvDtype::F16
                } else {
                    crate::device::KvDtype::F32
                };
                let case = DecodeCase {
                    x: &x,
                    weights: w.clone(),
                    biases: if with_bias {
                        bias.iter().map(|b| Some(&b[..])).collect()
                    } else {
                        vec![]
                    },
                    out_init: None,
                    norm: norm_of(mode, &norm, eps),
                    epilogue: DecodeEpilogue::QkvRope {
                        heads,
                        kv_heads,
                        head_dim,
                        params,
                        freq_factors: with_ff.then_some(&ff[..]),
                        dtype,
                        n_ctx,
                        pos,
                    },
                };
                let got = matvec_decode_gguf(dev, &t, &case).unwrap();
                expect_kernel(&got.kernel);
                let (z, scale) = normed(mode, &x, &norm);
                let xq = q8x(&z, decode_piece(ty));
                let proj = |m: usize| -> Vec<f64> {
                    rows_dot(&w[m], &xq)
                        .iter()
                        .enumerate()
                        .map(|(r, &y)| y * scale + if with_bias { bias[m][r] as f64 } else { 0.0 })
                        .collect()
                };
                let turn = |v: &mut [f64]| {
                    for h in v.chunks_mut(head_dim) {
                        for p in 0..head_dim / 2 {
                            let (i0, i1) = if neox {
                                (p, p + head_dim / 2)
                            } else {
                                (2 * p, 2 * p + 1)
                            };
                            let mut angle =
                                pos as f64 * 10000f64.powf(-2.0 * p as f64 / head_dim as f64);
                            if with_ff {
                                angle /= ff[p] as f64;
                            }
                            let (sn, cs) = angle.sin_cos();
                            let (x0, x1) = (h[i0], h[i1]);
                            h[i0] = x0 * cs - x1 * sn;
                            h[i1] = x0 * sn + x1 * cs;
                        }
                    }
                };
                let (mut q, mut kk, v) = (proj(0), proj(1), proj(2));
                turn(&mut q);
                turn(&mut kk);
                let tol = if f16 { 1e-3 } else { 1e-5 };
                let row = |c: &[f32]| c[pos * nkv..(pos + 1) * nkv].to_vec();
                assert_close(&format!("{what}: q"), &got.outs[0], &to32(&q), 1e-5);
                assert_close(&format!("{what}: k"), &row(&got.k_cache), &to32(&kk), tol);
                assert_close(&format!("{what}: v"), &row(&got.v_cache), &to32(&v), tol);
                let others = |c: &[f32]| {
                    c.iter()
                        .enumerate()
                        .filter(|(j, v)| j / nkv != pos && **v != 0.0)
                        .count()
                };
                assert_eq!(
                    others(&got.k_cache) + others(&got.v_cache),
                    0,
                    "{what}: other rows"
                );
            }
        }
    }
    // Rows of several chunks a block (k = 4608: 144 pieces of 32, more than 128 threads) at
    // the default shapes; then a NaN in x reaches every output.
    let k = 4608;
    let ns = [19];
    let wb = weights(rng, &ns, k);
    let w = views(ty, &wb, &ns, k);
    let x = input(rng, k);
    let mut nan = x.clone();
    nan[k - 1] = f32::NAN;
    let mut case = DecodeCase {
        x: &x,
        weights: w.clone(),
        biases: vec![],
        out_init: None,
        norm: DecodeNorm::None,
        epilogue: DecodeEpilogue::Store,
    };
    let got = matvec_decode_gguf(dev, dev.tuning(), &case).unwrap();
    let want = q8x_reference(&x, &w[0]);
    assert_close(
        &format!("{ty:?} k {k}: {}", got.kernel),
        &got.outs[0],
        &want,
        1e-5,
    );
    case.x = &nan;
    let got = matvec_decode_gguf(dev, dev.tuning(), &case).unwrap();
    assert!(got.outs[0].iter().all(|v| v.is_nan()), "NaN in x, {ty:?}");
    // Long gate/up rows that are not 16-byte aligned take the row-block kernel (k = 2112: 66
    // blocks of 32).
    if ty.block_size() == 32 {
        let (k, n) = (2112, 9);
        let wb = weights(rng, &[n, n], k);
        let w = views(ty, &wb, &[n, n], k);
        let x: Vec<f32> = input(rng, k).iter().map(|v| v * 0.25).collect();
        let case = DecodeCase {
            x: &x,
            weights: w.clone(),
            biases: vec![],
            out_init: None,
            norm: DecodeNorm::None,
            epilogue: DecodeEpilogue::Glu(Activation::Silu),
        };
        let got = matvec_decode_gguf(dev, dev.tuning(), &case).unwrap();
        let aligned = (k / 32 * ty.type_size()) % 16 == 0;
        assert_eq!(
            got.kernel.contains("stream"),
            aligned,
            "{ty:?} k {k}: {}",
            got.kernel
        );
        let xq = q8x(&x, decode_piece(ty));
        let want: Vec<f32> = rows_dot(&w[0], &xq)
            .iter()
            .zip(rows_dot(&w[1], &xq))
            .map(|(&g, u)| (act_f64(Activation::Silu, g) * u) as f32)
            .collect();
        assert_close(
            &format!("{ty:?} k {k}: {}", got.kernel),
            &got.outs[0],
            &want,
            1e-5,
        );
    }
}

/// A random `ty` weight [n, k] in `dev`'s memory (its device layout) and its dequantized
/// values; None where the CPU has no dequantizer for `ty`.
fn random_device_weight(
    dev: &Arc<GpuDevice>,
    ty: GgmlType,
    n: usize,
    k: usize,
    seed: u64,
) -> Option<(DeviceBuffer, Vec<f32>)> {
    let bytes = random_weight_bytes(ty, n, k, seed).unwrap();
    let mut dense = vec![0f32; n * k];
    quants::dequantize(ty, &bytes, &mut dense).ok()?;
    let layout = crate::device::layout::to_device_layout(ty, k, &bytes);
    Some((
        DeviceBuffer::from_slice(dev, &layout, "test").unwrap(),
        dense,
    ))
}

/// Random activations [m, k] (m >= 4) with rows 1-3 beyond f16's range, tiny, and zero: the
/// tensor-core kernels' per-row scale must handle them.
fn awkward_activations(rng: &mut TestRng, m: usize, k: usize) -> Vec<f32> {
    let mut x = rng.vec(m * k);
    x[k..2 * k].iter_mut().for_each(|v| *v *= 3.0e6);
    x[2 * k..3 * k].iter_mut().for_each(|v| *v *= 1.0e-7);
    x[3 * k..4 * k].iter_mut().for_each(|v| *v = 0.0);
    x
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

    let mut rng = TestRng::for_test("tensor_core_matmul_matches_the_cpu");
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
            &[
                GgmlType::F16,
                GgmlType::Q4_0,
                GgmlType::Q5_K,
                GgmlType::IQ4_XS,
            ]
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
            let Some((wd, dense)) = random_device_weight(&dev, ty, n, k, rng.next_u64()) else {
                println!("skipping {}: no CPU dequantizer yet", ty.name());
                continue;
            };
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
                let x = awkward_activations(&mut rng, m, k);
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
        let gw = backend
            .weight(WeightView::new(GgmlType::Q8_0, n, k, &bytes).unwrap())
            .unwrap();
        let min_m = dev.tuning().mma_min_rows;
        for m in [min_m - 1, min_m] {
            let x = rng.vec(m * k);
            let xd = up(&backend, &x);
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

/// Emulated AMD targets with matrix cores (`EmuRuntime::amd_matrix`): gfx1100 (RDNA3 WMMA,
/// wave 32), gfx1201 (RDNA4 WMMA, wave 32), gfx942 (CDNA3 MFMA, wave 64).
fn matrix_devices() -> [Arc<GpuDevice>; 3] {
    static DEVS: OnceLock<[Arc<GpuDevice>; 3]> = OnceLock::new();
    DEVS.get_or_init(|| {
        ["gfx1100", "gfx1201", "gfx942"]
            .map(|t| Arc::new(GpuDevice::new(30, Box::new(EmuRuntime::amd_matrix(t)))))
    })
    .clone()
}

/// The exact result of the tensor-core kernels' arithmetic, in f64: each row of x scaled by
/// the kernel's power of two (`mma_prep_x`: its largest magnitude into [2^14, 2^15)), x and W
/// rounded to the operand type (f16, or bf16 for bf16 weights on AMD matrix cores), their
/// products summed, the scale undone. What is left between this and a kernel is the f32
/// rounding of its sums.
fn operand_rounded_matmul(
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    bf16: bool,
) -> Vec<f64> {
    let round = |v: f32| -> f64 {
        if bf16 {
            half::bf16::from_f32(v).to_f64()
        } else {
            f16::from_f32(v).to_f64()
        }
    };
    let mut out = vec![0f64; m * n];
    for r in 0..m {
        let row = &x[r * k..(r + 1) * k];
        let mx = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        let e = ((mx.to_bits() >> 23) & 255) as i32;
        let mut p = if e == 0 || e == 255 { 0 } else { 141 - e };
        if e == 0 && mx > 0.0 {
            p = 127;
        }
        let p = p.clamp(-126, 127);
        let s = 2f32.powi(p);
        let xr: Vec<f64> = row.iter().map(|&v| round(v * s)).collect();
        for j in 0..n {
            let dot: f64 = (0..k).map(|c| xr[c] * round(w[j * k + c])).sum();
            out[r * n + j] = dot / s as f64;
        }
    }
    out
}

/// The tensor-core prefill matmul on emulated AMD matrix cores (kernels/mma.h's WMMA and MFMA
/// forms, whose builtins the emulator implements with the instructions' lane layouts): gfx1100
/// (RDNA3 WMMA, wave 32), gfx1201 (RDNA4 WMMA, wave 32), gfx942 (CDNA3 MFMA, wave 64). Against
/// an independent f64 product of the operands as the kernel rounds them (f16, bf16 for bf16
/// weights), and within the f16 bound of the float32 product; ragged shapes: m over one row
/// tile, n over one column tile, k a half step, or an odd length in unaligned rows.
#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn amd_matrix_core_matmul_matches_the_rounded_product() {
    use crate::device::layout::DeviceWeight;
    use crate::ops::matmul::gpu::{launch_matmul_mma, mma_available};

    let mut rng = TestRng::for_test("amd_matrix_core_matmul_matches_the_rounded_product");
    for dev in matrix_devices() {
        let target = dev.runtime().props().arch.clone();
        assert!(mma_available(&dev, dev.tuning()), "{target}: matrix cores");
        // F16: 16-byte rows (k = 96) and a ragged, unaligned one (k = 45); BF16: bf16
        // operands; the quantized types: the dequantizing tiles.
        let cases = [
            (GgmlType::F16, 96),
            (GgmlType::F16, 45),
            (GgmlType::BF16, 96),
            (GgmlType::BF16, 45),
            (GgmlType::Q4_0, 96),
            (GgmlType::Q8_0, 256),
            (GgmlType::Q4_K, 256),
            (GgmlType::Q6_K, 256),
            (GgmlType::IQ4_XS, 256),
        ];
        for (ty, k) in cases {
            let (m, n) = (70, 131);
            let (wd, dense) = random_device_weight(&dev, ty, n, k, rng.next_u64()).unwrap();
            let w = DeviceWeight {
                ty,
                rows: n,
                cols: k,
                bytes: &wd,
            };
            let x = awkward_activations(&mut rng, m, k);
            let xd = DeviceBuffer::from_slice(&dev, &x, "test").unwrap();
            let mut od = DeviceBuffer::alloc(&dev, m * n * 4, "test").unwrap();
            launch_matmul_mma(&dev, dev.tuning(), &xd, &w, m, &mut od).unwrap();
            let mut got = vec![0f32; m * n];
            od.read(&mut got, "test").unwrap();
            let what = format!(
                "{target} matrix-core matmul {} m={m} n={n} k={k}",
                ty.name()
            );
            let exact = operand_rounded_matmul(&x, &dense, m, n, k, ty == GgmlType::BF16);
            let mut worst = 0f64;
            for r in 0..m {
                for j in 0..n {
                    let mag: f64 = (0..k)
                        .map(|c| (x[r * k + c] as f64 * dense[j * k + c] as f64).abs())
                        .sum();
                    let (g, e) = (got[r * n + j] as f64, exact[r * n + j]);
                    // f32 sums of k products: well inside k * 2^-24 of the magnitudes.
                    let bound = mag * (k as f64) * 2f64.powi(-24) * 1.01 + 1e-30;
                    assert!(
                        (g - e).abs() <= bound,
                        "{what}: out[{r}, {j}] = {g}, exact {e} (bound {bound})"
                    );
                    worst = worst.max((g - e).abs() / bound);
                }
            }
            println!("{what}: worst error {worst:.3} of the f32 summation bound");
            let mut want = vec![0f32; m * n];
            ops::matmul::matmul_f32(&Device::Cpu, &x, &dense, m, n, k, &mut want).unwrap();
            if ty != GgmlType::BF16 {
                assert_f16_bound(&what, &got, &want, &x, &dense, m, n, k);
            }
            assert!(
                got[3 * n..4 * n].iter().all(|&v| v == 0.0),
                "{what}: zero row"
            );
        }
    }
}

/// Prefill attention on emulated AMD matrix cores (attention.hip, flash_attn_mx_*: S = Q K^T and
/// O = P V on WMMA / MFMA, f16 operands) against the CPU's float32 flash attention: 64-row
/// blocks over ragged rows (GQA groups), key tiles over ragged keys, head sizes up to 256 (odd
/// ones zero-padded), causal or not, sliding windows, f32 and f16 caches, and split keys with
/// their combine.
#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn amd_matrix_core_flash_attention_matches_the_cpu() {
    use ops::attention::flash_attention;
    use ops::attention::gpu::flash_plan;
    let mut rng = TestRng::for_test("amd_matrix_core_flash_attention_matches_the_cpu");
    let shapes = [
        // (batch, seq_q, seq_k, heads, kv_heads, head_dim)
        (1, 37, 37, 4, 2, 64),
        (2, 20, 90, 2, 1, 128),
        (1, 33, 33, 2, 2, 256),
        (1, 40, 40, 2, 1, 80),
        (1, 70, 70, 1, 1, 7),
        (1, 17, 600, 1, 1, 64), // few blocks, many keys: split keys + combine
    ];
    let cpu = Device::Cpu;
    for dev in matrix_devices() {
        let target = dev.runtime().props().arch.clone();
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
            let plan = flash_plan(&dev, &s, false, None, true).unwrap();
            assert!(plan.matrix, "{target} {s:?}: not on the matrix cores");
            // The op stays float32 (as on NVIDIA); the model's attention takes the matrix cores.
            assert!(!flash_plan(&dev, &s, false, None, false).unwrap().matrix);
            if seq_k == 600 {
                assert!(plan.splits > 1, "{target} {s:?}: {plan:?}");
            }
            let (q, k, v) = (rng.vec(s.q_len()), rng.vec(s.kv_len()), rng.vec(s.kv_len()));
            let scale = 1.0 / (head_dim as f32).sqrt();
            let k16: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
            let v16: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            let bits = |x: &[f16]| x.iter().map(|h| h.to_bits()).collect::<Vec<u16>>();
            let (k16_bits, v16_bits) = (bits(&k16), bits(&v16));
            let half = (seq_k / 2).max(1);
            // f16 caches (the GPU's): only q and p are rounded on the way
            for (causal, window) in [
                (false, None),
                (true, None),
                (true, Some(5)),
                (true, Some(half)),
            ] {
                let (mut fa, mut fb) = (vec![0f32; s.q_len()], vec![0f32; s.q_len()]);
                let (k, v) = (&k16[..], &v16[..]);
                model_attention(
                    &dev,
                    &q,
                    &k16_bits,
                    &v16_bits,
                    KvDtype::F16,
                    &s,
                    causal,
                    scale,
                    window,
                    &mut fa,
                );
                flash_attention(&cpu, &q, k, v, &s, causal, scale, window, &mut fb).unwrap();
                let what =
                    format!("{target} flash_attention f16 {s:?} causal={causal} window {window:?}");
                assert_close(&what, &fa, &fb, 3e-3);
                assert!(rel_err(&fa, &fb) > 1e-7, "{what}: not the f16 kernel");
            }
            // f32 caches, rounded to f16 by the kernel
            let (mut fa, mut fb) = (vec![0f32; s.q_len()], vec![0f32; s.q_len()]);
            model_attention(
                &dev,
                &q,
                &k,
                &v,
                KvDtype::F32,
                &s,
                true,
                scale,
                None,
                &mut fa,
            );
            flash_attention(&cpu, &q, &k, &v, &s, true, scale, None, &mut fb).unwrap();
            assert_close(
                &format!("{target} flash_attention f32 {s:?}"),
                &fa,
                &fb,
                5e-3,
            );
            // The op: the float32 kernels, float32 accuracy.
            flash_attention(&gpu, &q, &k, &v, &s, true, scale, None, &mut fa).unwrap();
            assert_close(&format!("{target} the op {s:?}"), &fa, &fb, 1e-5);
        }
    }
}

/// The model's prefill attention (`launch_flash_attention_with`, the matrix cores taken where
/// the device has them) on host arrays; k and v of `kv` type.
#[allow(clippy::too_many_arguments)]
fn model_attention<T: crate::device::gpu::Plain>(
    dev: &Arc<GpuDevice>,
    q: &[f32],
    k: &[T],
    v: &[T],
    kv: KvDtype,
    s: &AttentionShape,
    causal: bool,
    scale: f32,
    window: Option<usize>,
    out: &mut [f32],
) {
    use crate::device::gpu::Temp;
    use crate::ops::attention::gpu::{launch_flash_attention_with, KeyCount};
    let qd = DeviceBuffer::from_slice(dev, q, "test").unwrap();
    let kd = DeviceBuffer::from_slice(dev, k, "test").unwrap();
    let vd = DeviceBuffer::from_slice(dev, v, "test").unwrap();
    let mut od = DeviceBuffer::alloc(dev, out.len() * 4, "test").unwrap();
    launch_flash_attention_with(
        dev,
        &qd,
        &kd,
        &vd,
        kv,
        s.seq_k,
        s,
        causal,
        scale,
        window,
        &mut od,
        KeyCount::Host,
        Temp::Shared,
        dev.tuning().decode_attention,
        true,
    )
    .unwrap();
    od.read(out, "test").unwrap();
}
