//! Unit tests of the block layouts, `vec_dot`, the parallel paths and bad inputs. Bit-exactness
//! against the `gguf` package is checked from Python (tests_py/test_quants.py).

use super::*;
use crate::test_rng::TestRng;

/// Byte offsets of the f16 scale fields of each block type.
fn f16_field_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// `n_blocks` random blocks of `ty` whose float fields are finite (in [-1, 1)).
fn random_blocks(ty: GgmlType, n_blocks: usize, rng: &mut TestRng) -> Vec<u8> {
    let size = ty.type_size();
    let mut data = rng.bytes(n_blocks * size);
    for block in data.chunks_exact_mut(size) {
        match ty {
            GgmlType::F32 | GgmlType::Q8_K => {
                block[..4].copy_from_slice(&rng.uniform().to_le_bytes())
            }
            GgmlType::F16 => block.copy_from_slice(&F16Le::from_f32(rng.uniform()).0),
            GgmlType::BF16 => block.copy_from_slice(&f32_to_bf16_bits(rng.uniform()).to_le_bytes()),
            _ => {
                for &off in f16_field_offsets(ty) {
                    block[off..off + 2].copy_from_slice(&F16Le::from_f32(rng.uniform()).0);
                }
            }
        }
    }
    data
}

#[test]
fn block_sizes_match_the_type_table() {
    use std::mem::size_of;
    let sizes = [
        (GgmlType::Q4_0, size_of::<BlockQ4_0>()),
        (GgmlType::Q4_1, size_of::<BlockQ4_1>()),
        (GgmlType::Q5_0, size_of::<BlockQ5_0>()),
        (GgmlType::Q5_1, size_of::<BlockQ5_1>()),
        (GgmlType::Q8_0, size_of::<BlockQ8_0>()),
        (GgmlType::Q2_K, size_of::<BlockQ2_K>()),
        (GgmlType::Q3_K, size_of::<BlockQ3_K>()),
        (GgmlType::Q4_K, size_of::<BlockQ4_K>()),
        (GgmlType::Q5_K, size_of::<BlockQ5_K>()),
        (GgmlType::Q6_K, size_of::<BlockQ6_K>()),
        (GgmlType::Q8_K, size_of::<BlockQ8_K>()),
        (GgmlType::IQ4_NL, size_of::<BlockIQ4_NL>()),
        (GgmlType::IQ4_XS, size_of::<BlockIQ4_XS>()),
        (GgmlType::F32, size_of::<F32Le>()),
        (GgmlType::F16, size_of::<F16Le>()),
        (GgmlType::BF16, size_of::<Bf16Le>()),
    ];
    for (ty, size) in sizes {
        assert_eq!(size, ty.type_size(), "{ty}");
    }
    // ggml's block_q8_1 is two halves and 32 quants (the `gguf` package's table still says
    // 40, an older layout); files written by ggml use 36.
    assert_eq!(size_of::<BlockQ8_1>(), GgmlType::Q8_1.type_size());
    assert_eq!(std::mem::align_of::<BlockQ8_K>(), 1);
}

#[test]
fn dequantizable_set_matches_the_type_table() {
    for ty in GgmlType::ALL {
        let data = vec![0u8; ty.type_size()];
        let mut out = vec![0f32; ty.block_size()];
        let result = dequantize(ty, &data, &mut out);
        assert_eq!(result.is_ok(), ty.can_dequantize(), "{ty}");
        assert_eq!(DEQUANTIZABLE.contains(&ty), ty.can_dequantize(), "{ty}");
        if let Err(e) = result {
            assert!(matches!(e, Error::Unsupported(_)), "{ty}: {e}");
            assert!(e.to_string().contains(ty.name()), "{e}");
        }
        let dot = vec_dot(ty, &data, &out);
        assert_eq!(dot.is_ok(), ty.can_dequantize(), "{ty}");
    }
}

#[test]
fn hand_decoded_blocks() {
    // Q4_0, d = 0.5: byte 0x1F holds weight 0 = 0.5 * (15 - 8) and weight 16 = 0.5 * (1 - 8).
    let mut block = vec![0u8; 18];
    block[..2].copy_from_slice(&F16Le::from_f32(0.5).0);
    block[2] = 0x1F;
    let mut out = [0f32; 32];
    dequantize(GgmlType::Q4_0, &block, &mut out).unwrap();
    assert_eq!((out[0], out[16], out[1]), (3.5, -3.5, -4.0));

    // Q8_K: weight = d * q.
    let mut block = vec![0u8; 292];
    block[..4].copy_from_slice(&0.25f32.to_le_bytes());
    block[4] = (-3i8) as u8;
    block[4 + 255] = 100;
    let mut out = [0f32; 256];
    dequantize(GgmlType::Q8_K, &block, &mut out).unwrap();
    assert_eq!((out[0], out[1], out[255]), (-0.75, 0.0, 25.0));

    // Q6_K, d = 1, scale of group 0 = 2, group 15 = -1: weight 0 from ql[0] low nibble and
    // qh[0] bits 0-1; weight 255 = (ql[127] high nibble | qh[63] bits 6-7 << 4) - 32.
    let mut block = BlockQ6_K {
        ql: [0; 128],
        qh: [0; 64],
        scales: [0; 16],
        d: F16Le::from_f32(1.0),
    };
    block.scales[0] = 2;
    block.scales[15] = -1;
    block.ql[0] = 0x05;
    block.qh[0] = 0b10;
    block.ql[127] = 0xA0;
    block.qh[63] = 0b1100_0000;
    let mut out = [0f32; 256];
    dequantize(GgmlType::Q6_K, bytemuck::bytes_of(&block), &mut out).unwrap();
    assert_eq!(out[0], 2.0 * ((0x05 | (0b10 << 4)) - 32) as f32);
    assert_eq!(out[255], -(((0x0A | (0b11 << 4)) - 32) as f32));

    // IQ4_NL, d = 0.5: byte 0x1F holds weight 0 = 0.5 * kvalues[15] and weight 16 =
    // 0.5 * kvalues[1]; the zero byte of weight 1 gives kvalues[0].
    let mut block = vec![0u8; 18];
    block[..2].copy_from_slice(&F16Le::from_f32(0.5).0);
    block[2] = 0x1F;
    let mut out = [0f32; 32];
    dequantize(GgmlType::IQ4_NL, &block, &mut out).unwrap();
    assert_eq!((out[0], out[16], out[1]), (56.5, -52.0, -63.5));

    // IQ4_XS, d = 0.25: group 0's scale 0b01_0011 (scales_l[0] low nibble 3, scales_h bits
    // 0-1 = 1) - 32 = -13; group 7's 0b10_1111 (scales_l[3] high nibble, scales_h bits 14-15)
    // - 32 = 15. Weight 0 = low nibble of qs[0], weight 255 = high nibble of qs[127].
    let mut block = BlockIQ4_XS {
        d: F16Le::from_f32(0.25),
        scales_h: 0b10_00_00_00_00_00_00_01u16.to_le_bytes(),
        scales_l: [0x03, 0, 0, 0xF0],
        qs: [0; 128],
    };
    block.qs[0] = 0x2E;
    block.qs[127] = 0x80;
    let mut out = [0f32; 256];
    dequantize(GgmlType::IQ4_XS, bytemuck::bytes_of(&block), &mut out).unwrap();
    assert_eq!(out[0], 0.25 * -13.0 * 89.0);
    assert_eq!(out[16], 0.25 * -13.0 * -83.0);
    assert_eq!(out[255], 0.25 * 15.0 * 1.0);
    assert_eq!(out[224], 0.25 * 15.0 * -127.0);
    // Groups 1..6 have scale -32 (every scale bit clear).
    assert_eq!(out[32], 0.25 * -32.0 * -127.0);
}

#[test]
fn vec_dot_matches_dequantize_then_dot() {
    let mut rng = TestRng::for_test("quants");
    for ty in DEQUANTIZABLE {
        for n_blocks in [1usize, 3, 17, 64] {
            let n_blocks = if ty.block_size() == 1 {
                n_blocks * 37
            } else {
                n_blocks
            };
            let row = random_blocks(ty, n_blocks, &mut rng);
            let n = n_blocks * ty.block_size();
            let x: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
            let mut w = vec![0f32; n];
            dequantize(ty, &row, &mut w).unwrap();
            let reference: f64 = w.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
            let magnitude: f64 = w
                .iter()
                .zip(&x)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let got = vec_dot(ty, &row, &x).unwrap() as f64;
            assert!(
                (got - reference).abs() <= 1e-5 * magnitude + 1e-30,
                "{ty} x{n_blocks}: {got} vs {reference} (magnitude {magnitude})"
            );
        }
    }
}

#[test]
fn parallel_paths_match_block_by_block() {
    let mut rng = TestRng::for_test("quants");
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q6_K,
        GgmlType::F16,
        GgmlType::IQ4_XS,
    ] {
        let n_blocks = 3 * PARALLEL_MIN_WEIGHTS / ty.block_size() + 7;
        let data = random_blocks(ty, n_blocks, &mut rng);
        let mut whole = vec![0f32; n_blocks * ty.block_size()];
        dequantize(ty, &data, &mut whole).unwrap();
        for (block, expect) in data
            .chunks_exact(ty.type_size())
            .zip(whole.chunks_exact(ty.block_size()))
        {
            let mut one = vec![0f32; ty.block_size()];
            dequantize(ty, block, &mut one).unwrap();
            assert!(
                one.iter()
                    .zip(expect)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty}"
            );
        }
    }
    for ty in [GgmlType::Q4_0, GgmlType::Q8_K] {
        let n = 3 * PARALLEL_MIN_WEIGHTS + 5 * ty.block_size();
        let x: Vec<f32> = (0..n).map(|_| rng.uniform() * 10.0).collect();
        let whole = quantize(ty, &x).unwrap();
        let by_block: Vec<u8> = x
            .chunks_exact(ty.block_size())
            .flat_map(|b| quantize(ty, b).unwrap())
            .collect();
        assert_eq!(whole, by_block, "{ty}");
    }
}

#[test]
fn quantize_round_trip_error_is_bounded() {
    let mut rng = TestRng::for_test("quants");
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_K,
    ] {
        let n = 5 * ty.block_size();
        let x: Vec<f32> = (0..n).map(|_| rng.uniform() * 3.0).collect();
        let q = quantize(ty, &x).unwrap();
        assert_eq!(q.len(), 5 * ty.type_size());
        let mut y = vec![0f32; n];
        dequantize(ty, &q, &mut y).unwrap();
        for (xb, yb) in x.chunks(ty.block_size()).zip(y.chunks(ty.block_size())) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (max, min) = xb
                .iter()
                .fold((f32::MIN, f32::MAX), |(hi, lo), &v| (hi.max(v), lo.min(v)));
            let bound = match ty {
                // The far end of the symmetric types clips one step short: error up to d.
                GgmlType::Q4_0 => amax / 8.0,
                GgmlType::Q5_0 => amax / 16.0,
                GgmlType::Q4_1 => (max - min) / 15.0 / 2.0,
                GgmlType::Q5_1 => (max - min) / 31.0 / 2.0,
                _ => amax / 127.0 / 2.0,
            };
            for (a, b) in xb.iter().zip(yb) {
                // Plus the f16 rounding of the scale (and min).
                assert!(
                    (a - b).abs() <= bound + 2e-3 * amax,
                    "{ty}: {a} -> {b}, bound {bound}"
                );
            }
        }
    }
}

#[test]
fn q8_k_quantize_keeps_block_sums() {
    let mut rng = TestRng::for_test("quants");
    let x: Vec<f32> = (0..512).map(|_| rng.uniform()).collect();
    let bytes = quantize(GgmlType::Q8_K, &x).unwrap();
    for block in bytemuck::cast_slice::<u8, BlockQ8_K>(&bytes) {
        for (g, sum) in block.bsums.iter().enumerate() {
            let expect: i16 = block.qs[g * 16..g * 16 + 16]
                .iter()
                .map(|&q| q as i16)
                .sum();
            assert_eq!(sum.get(), expect);
        }
        assert!(block.qs.iter().any(|&q| q == -127 || q == 127));
    }
    // An all-zero block is all zeros.
    assert!(quantize(GgmlType::Q8_K, &[0f32; 256])
        .unwrap()
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn bad_inputs_are_errors() {
    let mut out = vec![0f32; 32];
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &[0u8; 19], &mut out),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &[0u8; 36], &mut out),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        vec_dot(GgmlType::Q4_0, &[0u8; 18], &out[..31]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        vec_dot(GgmlType::Q4_K, &[0u8; 143], &out),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        quantize(GgmlType::Q4_0, &out[..31]),
        Err(Error::InvalidArgument(_))
    ));
    for ty in [
        GgmlType::Q4_K,
        GgmlType::IQ2_XXS,
        GgmlType::Q8_1,
        GgmlType::TQ1_0,
    ] {
        let x = vec![0f32; ty.block_size()];
        let e = quantize(ty, &x).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported(_)) && e.to_string().contains(ty.name()),
            "{e}"
        );
    }
    // Empty input is zero blocks.
    assert!(dequantize(GgmlType::Q6_K, &[], &mut []).is_ok());
    assert_eq!(vec_dot(GgmlType::Q6_K, &[], &[]).unwrap(), 0.0);
}
