// Microbenchmark: one Llama-3-8B Q4_0 decode layer as the step launches it: decode attention as
// its own launches (flash_attn_d128_q1_k2_f16 key splits + flash_attn_combine) or in the q/k/v
// launch's tail (matvec_qkv_rope_att_*): graphs of 8 layers on distinct weights, programmatic
// dependent launch; the two attentions' outputs compared. Built against kernels/ of the commit
// "tried: decode attention in the q/k/v launch's tail" (reverted after), with its experiment
// switches: -DRF_EXP_KV_FIRST, -DRF_EXP_PREFETCH, -DRF_EXP_PREFETCH_ALL, -DRF_EXP_NO_TAIL,
// -DRF_EXP_LATE_RELEASE (raw output: 2026-11-28-h200-attention-in-qkv-tail.txt).
#include "../../kernels/matmul.hip"
#include "../../kernels/attention.hip"
#include "microbench-common.h"

int main() {
    cudaDeviceProp p; CK(cudaGetDeviceProperties(&p, 0)); SMS = p.multiProcessorCount;
    printf("%s, %d SMs\n", p.name, SMS);
    CK(cudaStreamCreateWithFlags(&ST, cudaStreamNonBlocking));
    const int D = 4096, F = 14336, NQ = 4096, NKV = 1024, C = 8, NCTX = 512, H = 32, KVH = 8, HD = 128;
    float *nw, *q, *att, *hid, *res, *xw, *sso, *part;
    CK(cudaMalloc(&nw, F * 4)); CK(cudaMalloc(&q, NQ * 4)); CK(cudaMalloc(&att, NQ * 4)); CK(cudaMalloc(&hid, F * 4));
    CK(cudaMalloc(&res, F * 4)); CK(cudaMalloc(&xw, F * 4)); CK(cudaMalloc(&sso, 4096 * 4)); CK(cudaMalloc(&part, 64 << 20));
    fill_f<<<64, 256>>>(nw, F, 6, 1.f); fill_f<<<64, 256>>>(xw, F, 5, 0.f); fill_f<<<64, 256>>>(sso, 4096, 7, 2.f); fill_f<<<64, 256>>>(res, F, 8, 0.f);
    std::vector<u16*> kc(C), vc(C);
    for (int c = 0; c < C; ++c) { CK(cudaMalloc(&kc[c], NCTX * NKV * 2)); CK(cudaMalloc(&vc[c], NCTX * NKV * 2)); fill_h<<<256, 256>>>(kc[c], NCTX * NKV, 30 + c); fill_h<<<256, 256>>>(vc[c], NCTX * NKV, 50 + c); }
    int* pos; CK(cudaMalloc(&pos, 4));
    int* arr; CK(cudaMalloc(&arr, 256)); CK(cudaMemset(arr, 0, 256));
    float* att2; CK(cudaMalloc(&att2, NQ * 4));
    auto alloc_q = [](int rows, int k, u32 seed) { u8* w; CK(cudaMalloc(&w, rows * rb(k))); fill_q4<<<2048, 256>>>(w, rows, k, seed); return w; };
    std::vector<u8*> wq(C), wk(C), wv(C), wo(C), wd(C), wg(C), wu(C);
    for (int c = 0; c < C; ++c) { wq[c] = alloc_q(NQ, D, 1 + c); wk[c] = alloc_q(NKV, D, 20 + c); wv[c] = alloc_q(NKV, D, 40 + c); wo[c] = alloc_q(D, D, 60 + c); wd[c] = alloc_q(D, F, 80 + c);
        wg[c] = alloc_q(F, D, 200 + c); wu[c] = alloc_q(F, D, 220 + c); }
    CK(cudaDeviceSynchronize());
    const int flash_smem = (16 * 132 + 32 * 132 + 16 * 36) * 4;
    CK(cudaFuncSetAttribute(flash_attn_d128_q1_k2_f16, cudaFuncAttributeMaxDynamicSharedMemorySize, flash_smem));
    const int groups = 2 * F / 8, sg = std::min(groups, SMS * 4), ssm = (groups + sg - 1) / sg * 8 * 4 * 4;
    const float scale_log2 = 1.4426950408889634f / sqrtf(128.f);
    const int att_smem = RF_DECODE_ATTENTION_SMEM_FLOATS(128, 4) * 4;
    printf("tail smem %d bytes\n", att_smem);
    auto qkv_att = [&](int c) {
        launch(matvec_qkv_rope_att_q8x_q4_0_r16_o3_f16, dim3((NQ + 2 * NKV) / 16), 128, att_smem, (const float*)xw, D, rb(D), ncf, 1e-5f, (const float*)sso, 256, (const u8*)wq[c], (const u8*)wk[c], (const u8*)wv[c], ncf, ncf, ncf, NQ, NKV, q, kc[c], vc[c], (const int*)pos, ncf, 128, 500000.f, 0, att2, arr, 4, scale_log2);
    };
    auto rest = [&](int c, const float* ox) {
        launch(matvec_wide_multi_q8x_q4_0_r16_o3, dim3(D / 16), 128, 0, ox, D, rb(D), 1, ncf, 0.f, ncf, 0, (const float*)nw, xw, sso, (const u8*)wo[c], res, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0);
        launch(matvec_stream_swiglu_q8x_q4_0_r8, dim3(sg), 128, ssm, (const float*)xw, ncf, 1e-5f, (const float*)sso, 256, (const u8*)wg[c], (const u8*)wu[c], hid, F, D, rb(D));
        launch(matvec_wide_multi_q8x_q4_0_r16, dim3(D / 16), 128, 0, (const float*)hid, F, rb(F), 1, ncf, 0.f, ncf, 0, (const float*)nw, xw, sso, (const u8*)wd[c], res, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0);
    };
    // which: 0 matvecs only; 1 + attention (splits) + combine; 2 attention + combine only (after q/k/v)
    auto layer = [&](int c, int which, int splits) {
        launch(matvec_qkv_rope_q8x_q4_0_r16_o3_f16, dim3((NQ + 2 * NKV) / 16), 128, 0, (const float*)xw, D, rb(D), ncf, 1e-5f, (const float*)sso, 256, (const u8*)wq[c], (const u8*)wk[c], (const u8*)wv[c], ncf, ncf, ncf, NQ, NKV, q, kc[c], vc[c], (const int*)pos, ncf, 128, 500000.f, 0, nf, (int*)nullptr, 4, 0.f);
        const float* ox = q;
        if (which >= 1) {
            float* part_o = part; float* part_ml = part + (size_t)splits * KVH * 4 * 128;
            launch(flash_attn_d128_q1_k2_f16, dim3(1, KVH, splits), 256, flash_smem, (const float*)q, (const u16*)kc[c], (const u16*)vc[c], att, splits > 1 ? part_o : nf, splits > 1 ? part_ml : nf, 1, NCTX, H, KVH, HD, (i64)NCTX, scale_log2, 1, 32, (const int*)pos);
            if (splits > 1) launch(flash_attn_combine, dim3(4, KVH, 1), 128, splits * 8, (const float*)part_o, (const float*)part_ml, att, splits, 1, H, KVH, HD, 128);
            ox = att;
        }
        if (which == 2) return;
        launch(matvec_wide_multi_q8x_q4_0_r16_o3, dim3(D / 16), 128, 0, ox, D, rb(D), 1, ncf, 0.f, ncf, 0, (const float*)nw, xw, sso, (const u8*)wo[c], res, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0);
        launch(matvec_stream_swiglu_q8x_q4_0_r8, dim3(sg), 128, ssm, (const float*)xw, ncf, 1e-5f, (const float*)sso, 256, (const u8*)wg[c], (const u8*)wu[c], hid, F, D, rb(D));
        launch(matvec_wide_multi_q8x_q4_0_r16, dim3(D / 16), 128, 0, (const float*)hid, F, rb(F), 1, ncf, 0.f, ncf, 0, (const float*)nw, xw, sso, (const u8*)wd[c], res, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0);
    };
    // q and the caches of layer copy 0 at every position, the x fixed: both attentions' outputs.
    for (int p0 = 0; p0 < NCTX; ++p0) {
        CK(cudaMemcpy(pos, &p0, 4, cudaMemcpyHostToDevice));
        layer(0, 2, 16);
        qkv_att(0);
        if (p0 % 37 == 0 || p0 == NCTX - 1) {
            std::vector<float> a(NQ), b(NQ);
            CK(cudaDeviceSynchronize());
            CK(cudaMemcpy(a.data(), att, NQ * 4, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(b.data(), att2, NQ * 4, cudaMemcpyDeviceToHost));
            double num = 0, den = 0, mx = 0; for (int i = 0; i < NQ; ++i) { num += (a[i] - b[i]) * (double)(a[i] - b[i]); den += (double)a[i] * a[i]; mx = std::max(mx, (double)fabsf(a[i] - b[i])); }
            printf("position %d: rel. l2 err %.3g, max abs diff %.3g (|out| rms %.3g)\n", p0, sqrt(num / den), mx, sqrt(den / NQ));
        }
    }
    int arrh[64]; CK(cudaMemcpy(arrh, arr, 256, cudaMemcpyDeviceToHost));
    int nz = 0; for (int i = 0; i < 64; ++i) nz += arrh[i] != 0;
    printf("arrival counters not 0 after: %d\n", nz);
    for (int p0 : {0, 31, 63, 127, 300, 511}) {
        CK(cudaMemcpy(pos, &p0, 4, cudaMemcpyHostToDevice));
        printf("--- position %d (%d keys)\n", p0, p0 + 1);
        for (int round = 0; round < 2; ++round) {
            float t0 = graph_time([&] { for (int c = 0; c < C; ++c) layer(c, 0, 16); }) / C;
            float t1 = graph_time([&] { for (int c = 0; c < C; ++c) layer(c, 1, 16); }) / C;
            float t4 = graph_time([&] { for (int c = 0; c < C; ++c) layer(c, 1, 4); }) / C;
            float t2 = graph_time([&] { for (int c = 0; c < C; ++c) layer(c, 2, 16); }) / C;
            float tq = graph_time([&] { for (int c = 0; c < C; ++c) launch(matvec_qkv_rope_q8x_q4_0_r16_o3_f16, dim3((NQ + 2 * NKV) / 16), 128, 0, (const float*)xw, D, rb(D), ncf, 1e-5f, (const float*)sso, 256, (const u8*)wq[c], (const u8*)wk[c], (const u8*)wv[c], ncf, ncf, ncf, NQ, NKV, q, kc[c], vc[c], (const int*)pos, ncf, 128, 500000.f, 0, nf, (int*)nullptr, 4, 0.f); }) / C;
            float tf = graph_time([&] { for (int c = 0; c < C; ++c) { qkv_att(c); rest(c, att2); } }) / C;
            float tqa = graph_time([&] { for (int c = 0; c < C; ++c) qkv_att(c); }) / C;
            printf("FUSED layer %.2f us (+%.2f over matvecs only) | q/k/v + attention tail alone %.2f\n", tf, tf - t0, tqa);
            printf("layer: matvecs only %.2f us | + attention (16 splits) + combine %.2f us (+%.2f) | 4 splits %.2f us | q/k/v alone %.2f, q/k/v + attention + combine %.2f (+%.2f)\n",
                   t0, t1, t1 - t0, t4, tq, t2, t2 - tq);
        }
    }
    return 0;
}
