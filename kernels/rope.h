// rope.h: the rotary-embedding angle and the KV-cache store, shared by rope.hip (rope_f32,
// rope_kv_*) and matmul.hip (matvec_qkv_rope_*), so that both turn a pair with the same
// float expressions.
#pragma once
#include "common.h"

// theta^(-2i / n_rot): pair i's angle per position, in double precision.
__device__ __forceinline__ double rf_rope_inv_freq(int i, int n_rot, float theta) {
    return pow((double)theta, -2.0 * (double)i / (double)n_rot);
}

// cos and sin of the angle pos * inv_freq / factor (factor: the pair's frequency factor, or
// null for 1), reduced to [0, 2 pi) in double precision before the float32 sin/cos
// (positions reach tens of thousands).
__device__ __forceinline__ void rf_rope_cs_at(double pos, double inv_freq, const float* factor,
                                              float* c, float* s) {
    double angle = pos * inv_freq;
    if (factor) angle /= (double)*factor;
    const double two_pi = 6.283185307179586476925286766559;
    angle -= two_pi * floor(angle / two_pi);
    *c = cosf((float)angle);
    *s = sinf((float)angle);
}

// cos and sin of pair i at position pos (rope.hip's formula).
__device__ __forceinline__ void rf_rope_cs(double pos, int i, int n_rot, float theta,
                                           const float* freq_factors, float* c, float* s) {
    rf_rope_cs_at(pos, rf_rope_inv_freq(i, n_rot, theta), freq_factors ? freq_factors + i : nullptr,
                  c, s);
}

// A KV-cache element: float32, or fp16 bits rounded to nearest even.
__device__ __forceinline__ void rf_kv_store(float* p, float v) { *p = v; }
__device__ __forceinline__ void rf_kv_store(u16* p, float v) { *p = rf_float_to_half(v); }
