//! `kernels/sampling.hip` on the CPU emulation (`crate::device::emulator`) at wave 32 and 64,
//! against the CPU op: the same picks for the same draws wherever float sums allow (they are
//! summed in other orders, so a draw within rounding of a boundary may fall either side), the
//! same log-probabilities and top-n, the same errors. Small rows split into several slices
//! (blocks of 64 threads, the kernel's build bounded to 512: 256 tokens a slice) reach every
//! path of the kernel: the candidate prefix, the slices' sums with no filter, and the whole-row
//! radix selection (long nuclei, large top-k, many ties); one case takes the 1024-thread build.
//! Ignored by default like the other emulator tests
//! (`cargo test --lib emulator -- --ignored`).

use std::sync::Arc;

use super::gpu::{self, SampleLaunch};
use super::{cpu, DrawKey, SampleParams, SampleRow, Samples};
use crate::device::emulator::EmuRuntime;
use crate::device::gpu::{DeviceBuffer, GpuDevice, Temp};
use crate::error::Error;
use crate::test_rng::TestRng;

/// (what, logits, parameters, history, n_top) of one check.
type Case<'a> = (&'a str, &'a [f32], SampleParams, &'a [u32], usize);

/// Threads a block: a multiple of both waves, small enough to split rows of a few hundred.
const BLOCK: usize = 64;

fn params(temperature: f32, top_k: i64, top_p: f32, min_p: f32) -> SampleParams {
    SampleParams {
        temperature,
        top_k,
        top_p,
        min_p,
        ..Default::default()
    }
}

/// Rows drawing from `logits` (one row, broadcast) with `p`, keyed by position.
fn rows<'a>(p: &SampleParams, history: &'a [u32], n: usize, seed: u64) -> Vec<SampleRow<'a>> {
    (0..n)
        .map(|i| SampleRow {
            params: p.clone(),
            key: DrawKey {
                seed,
                sequence: 3,
                position: i as u32,
            },
            history,
        })
        .collect()
}

/// GPU and CPU agree: picks (all but a few within rounding), log-probabilities, top-n.
fn assert_agree(what: &str, gpu: &Samples, cpu: &Samples) {
    let differ = gpu.ids.iter().zip(&cpu.ids).filter(|(a, b)| a != b).count();
    assert!(
        differ * 50 <= gpu.ids.len().max(50),
        "{what}: {differ} of {} picks differ\n gpu {:?}\n cpu {:?}",
        gpu.ids.len(),
        &gpu.ids[..gpu.ids.len().min(40)],
        &cpu.ids[..cpu.ids.len().min(40)]
    );
    for (r, (a, b)) in gpu.logprobs.iter().zip(&cpu.logprobs).enumerate() {
        if gpu.ids[r] == cpu.ids[r] {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{what} row {r}: logprob {a} vs {b}"
            );
        }
    }
    assert_eq!(gpu.top_ids, cpu.top_ids, "{what}: top-n ids");
    for (a, b) in gpu.top_logprobs.iter().zip(&cpu.top_logprobs) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0) || (a.is_infinite() && a == b),
            "{what}: top-n logprob {a} vs {b}"
        );
    }
}

fn check_case(
    dev: &Arc<GpuDevice>,
    what: &str,
    logits: &[f32],
    p: &SampleParams,
    history: &[u32],
    n: usize,
    n_top: usize,
) {
    let vocab = logits.len();
    let rs = rows(p, history, n, 0x5eed ^ vocab as u64);
    let gpu = gpu::sample_with_block(dev, logits, 1, vocab, &rs, n_top, Some(BLOCK))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let cpu = cpu::sample(logits, 1, vocab, &rs, n_top).unwrap();
    assert_agree(&format!("{what} ({})", dev.name()), &gpu, &cpu);
}

#[test]
#[ignore = "builds the kernels with g++ (minutes); run by scripts/check-kernels.sh"]
fn emulator_sampling_matches_the_cpu_op() {
    let t0 = std::time::Instant::now();
    let mut rng = TestRng::for_test("sampling emulator test");
    let small = [0.5f32, 2.0, 1.0, 2.0, -1.0, f32::NEG_INFINITY, 1.5];
    let normal: Vec<f32> = (0..1000).map(|_| rng.normal(2.0)).collect();
    let flat: Vec<f32> = (0..1000).map(|_| rng.normal(0.3)).collect();
    let ties: Vec<f32> = (0..1000).map(|_| (rng.next_u64() % 4) as f32).collect();
    // Nearly flat rows: every token in the top 1/8 nat, so the candidates come from the finer
    // binnings (within 1e-4 nat: the second; 1e-6, a few float steps: ties, the slow path).
    let near: Vec<f32> = (0..1000).map(|_| 3.0 + rng.normal(1e-4)).collect();
    let nearer: Vec<f32> = (0..1000).map(|_| 3.0 + rng.normal(1e-6)).collect();
    // A peaked row (random-weight models' logits, confident models'): the top token far above
    // the rest, so that top-k 40 reaches past the candidates and top-p's weight must be
    // bounded to stay on the fast path.
    let mut peaked: Vec<f32> = (0..1000).map(|_| rng.normal(30.0)).collect();
    peaked[321] = 200.0;
    let mut with_inf = normal[..300].to_vec();
    for i in (0..300).step_by(7) {
        with_inf[i] = f32::NEG_INFINITY;
    }
    let history: Vec<u32> = (0..100).map(|_| (rng.next_u64() % 40) as u32).collect();
    let penalized = SampleParams {
        repeat_penalty: 1.3,
        presence_penalty: 0.5,
        frequency_penalty: 0.2,
        ..params(1.0, 0, 1.0, 0.0)
    };
    let cases: Vec<Case> = vec![
        (
            "7 tokens, defaults",
            &small,
            SampleParams::default(),
            &[],
            3,
        ),
        (
            "7 tokens, no filter",
            &small,
            params(1.0, 0, 1.0, 0.0),
            &[],
            0,
        ),
        ("7 tokens, top-p", &small, params(1.0, 0, 0.6, 0.0), &[], 0),
        ("7 tokens, greedy", &small, params(0.0, 0, 1.0, 0.0), &[], 2),
        (
            "1000 tokens, defaults",
            &normal,
            SampleParams::default(),
            &[],
            5,
        ),
        (
            "1000 tokens, no filter",
            &normal,
            params(1.0, 0, 1.0, 0.0),
            &[],
            0,
        ),
        (
            "1000 tokens, long nucleus",
            &flat,
            params(1.0, 0, 0.9, 0.0),
            &[],
            0,
        ),
        (
            "1000 tokens, top-k 500",
            &flat,
            params(1.5, 500, 0.95, 0.0),
            &[],
            0,
        ),
        (
            "1000 tokens, low min-p",
            &flat,
            params(1.0, 0, 1.0, 0.3),
            &[],
            0,
        ),
        (
            "1000 tokens, one far above the rest, usual filters",
            &peaked,
            params(0.8, 40, 0.95, 0.05),
            &[],
            0,
        ),
        (
            "1000 tokens within 1e-4 nat, usual filters",
            &near,
            params(0.8, 40, 0.95, 0.05),
            &[],
            3,
        ),
        (
            "1000 tokens within 1e-6 nat, usual filters",
            &nearer,
            params(0.8, 40, 0.95, 0.05),
            &[],
            0,
        ),
        (
            "1000 tokens, ties, defaults",
            &ties,
            SampleParams::default(),
            &[],
            4,
        ),
        (
            "1000 tokens, ties, top-k 10",
            &ties,
            params(1.0, 10, 1.0, 0.0),
            &[],
            0,
        ),
        (
            "300 tokens with -inf, top-p",
            &with_inf,
            params(0.7, 0, 0.8, 0.0),
            &[],
            2,
        ),
        (
            "1000 tokens, penalties",
            &normal,
            penalized.clone(),
            &history,
            0,
        ),
        (
            "1000 tokens, penalties, greedy",
            &normal,
            SampleParams {
                temperature: 0.0,
                ..penalized
            },
            &history,
            0,
        ),
    ];
    let devs = [
        Arc::new(GpuDevice::new(
            0,
            Box::new(EmuRuntime::tagged(32, 227 * 1024, "-sampling")),
        )),
        Arc::new(GpuDevice::new(
            1,
            Box::new(EmuRuntime::tagged(64, 64 * 1024, "-sampling")),
        )),
    ];
    for dev in &devs {
        for (what, logits, p, history, n_top) in &cases {
            let t = std::time::Instant::now();
            check_case(dev, what, logits, p, history, 8, *n_top);
            println!("{what}: {:.1} s", t.elapsed().as_secs_f64());
        }
        // Distinct rows in one launch, each with its own parameters and history.
        let vocab = 300;
        let block: Vec<f32> = (0..8 * vocab).map(|_| rng.normal(1.5)).collect();
        let hist: Vec<Vec<u32>> = (0..8)
            .map(|_| {
                (0..20)
                    .map(|_| (rng.next_u64() % vocab as u64) as u32)
                    .collect()
            })
            .collect();
        let rs: Vec<SampleRow> = (0..8)
            .map(|r| SampleRow {
                params: SampleParams {
                    temperature: [0.0, 0.5, 1.0, 1.7][r % 4],
                    top_k: [0, 5, 40, 250][r / 2],
                    repeat_penalty: 1.0 + r as f32 * 0.1,
                    frequency_penalty: 0.1,
                    ..params(1.0, 0, [1.0, 0.9][r % 2], [0.0, 0.05][r / 4])
                },
                key: DrawKey {
                    seed: r as u64,
                    sequence: 9,
                    position: 4,
                },
                history: &hist[r],
            })
            .collect();
        let g = gpu::sample_with_block(dev, &block, 8, vocab, &rs, 3, Some(BLOCK)).unwrap();
        let c = cpu::sample(&block, 8, vocab, &rs, 3).unwrap();
        assert_agree("distinct rows", &g, &c);
        // Errors: NaN, +inf, nothing finite.
        for bad in [f32::NAN, f32::INFINITY] {
            let mut l = normal.clone();
            l[517] = bad;
            let rs = rows(&SampleParams::default(), &[], 2, 1);
            let e = gpu::sample_with_block(dev, &l, 1, l.len(), &rs, 1, Some(BLOCK)).unwrap_err();
            assert!(matches!(e, Error::Runtime(_)), "{e}");
        }
        let rs = rows(&SampleParams::default(), &[], 1, 1);
        let e = gpu::sample_with_block(dev, &[f32::NEG_INFINITY; 300], 1, 300, &rs, 0, Some(BLOCK))
            .unwrap_err();
        assert!(matches!(e, Error::Runtime(_)), "{e}");
        check_next_step(dev, &normal);
        // The build for blocks of up to 1024 threads (the cases above take the 512 one): rows
        // of three slices.
        let wide: Vec<f32> = (0..9000).map(|_| rng.normal(2.0)).collect();
        let rs = rows(&SampleParams::default(), &[], 2, 7);
        let g = gpu::sample_with_block(dev, &wide, 1, wide.len(), &rs, 2, Some(1024)).unwrap();
        let c = cpu::sample(&wide, 1, wide.len(), &rs, 2).unwrap();
        assert_agree("9000 tokens, blocks of 1024", &g, &c);
    }
    println!(
        "emulator sampling test: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// The decode-step form: the draw keyed by the step's position + 1, the state advanced.
fn check_next_step(dev: &Arc<GpuDevice>, logits: &[f32]) {
    let op = "test";
    let p = params(1.0, 0, 0.95, 0.0);
    let key = DrawKey {
        seed: 11,
        sequence: 2,
        position: 0,
    };
    let words = gpu::param_words(&p, &key, 0);
    let logits_d = DeviceBuffer::from_slice(dev, logits, op).unwrap();
    let params_d = DeviceBuffer::from_slice(dev, &words, op).unwrap();
    let window_d = DeviceBuffer::zeros(dev, 4, op).unwrap();
    let out = DeviceBuffer::alloc(dev, 8, op).unwrap();
    let step = DeviceBuffer::from_slice(dev, &[5i32, 41], op).unwrap();
    let arrivals = DeviceBuffer::zeros(dev, 4, op).unwrap();
    let launch = SampleLaunch {
        logits: logits_d.ptr(),
        row_stride: 0,
        vocab: logits.len(),
        rows: 1,
        params: params_d.ptr(),
        window: window_d.ptr(),
        window_stride: 1,
        out_id: out.ptr(),
        out_logprob: out.ptr() + 4,
        top_id: 0,
        top_logprob: 0,
        n_top: 0,
        next_step: step.ptr(),
        arrivals: arrivals.ptr(),
    };
    gpu::launch_sample_to(dev, &launch, Some(BLOCK), Temp::Shared).unwrap();
    let want = cpu::sample(
        logits,
        1,
        logits.len(),
        &[SampleRow {
            params: p,
            key: DrawKey {
                position: 42,
                ..key
            },
            history: &[],
        }],
        0,
    )
    .unwrap();
    let id: Vec<i32> = out.to_vec(1, op).unwrap();
    let state: Vec<i32> = step.to_vec(2, op).unwrap();
    let left: Vec<u32> = arrivals.to_vec(1, op).unwrap();
    assert_eq!(id[0] as u32, want.ids[0], "the draw keyed by position + 1");
    assert_eq!(state, [id[0], 42], "[pick, position + 1]");
    assert_eq!(left, [0], "the arrival counter is left at zero");
}
