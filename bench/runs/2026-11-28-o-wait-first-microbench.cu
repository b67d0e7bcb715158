// Microbenchmark: one Llama-3-8B Q4_0 decode layer as the step launches it (q/k/v + rope, decode
// attention in 16 key splits + combine, o, gate/up, down), with the o projection as now (its first
// weight loads issued before its griddepcontrol.wait) or waiting before any load (o_wait_first):
// graphs of 8 layers on distinct weights, programmatic dependent launch.
#include "../../kernels/matmul.hip"
#include "../../kernels/attention.hip"
#include "microbench-common.h"
__global__ void __launch_bounds__(128, 3) o_wait_first(const float* x, int k, i64 row_bytes, int accumulate, const float* norm_w, float eps,
        const float* ss_parts, int n_parts, const float* norm_out_w, float* xw_out, float* ss_out,
        const u8* w0, float* out0, const float* bias0, int n0, const u8* w1, float* out1,
        const float* bias1, int n1, const u8* w2, float* out2, const float* bias2, int n2) {
    rf_grid_wait();  // before any weight load: the kernel before runs alone
    matvec_wide_multi<WideQ4_0, 16, true, false>(x, k, row_bytes, accumulate, norm_w, eps, ss_parts, n_parts, norm_out_w, xw_out, ss_out, w0, out0, bias0, n0, w1, out1, bias1, n1, w2, out2, bias2, n2);
}

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
    auto alloc_q = [](int rows, int k, u32 seed) { u8* w; CK(cudaMalloc(&w, rows * rb(k))); fill_q4<<<2048, 256>>>(w, rows, k, seed); return w; };
    std::vector<u8*> wq(C), wk(C), wv(C), wo(C), wd(C), wg(C), wu(C);
    for (int c = 0; c < C; ++c) { wq[c] = alloc_q(NQ, D, 1 + c); wk[c] = alloc_q(NKV, D, 20 + c); wv[c] = alloc_q(NKV, D, 40 + c); wo[c] = alloc_q(D, D, 60 + c); wd[c] = alloc_q(D, F, 80 + c);
        wg[c] = alloc_q(F, D, 200 + c); wu[c] = alloc_q(F, D, 220 + c); }
    CK(cudaDeviceSynchronize());
    const int flash_smem = (16 * 132 + 32 * 132 + 16 * 36) * 4;
    CK(cudaFuncSetAttribute(flash_attn_d128_q1_k2_f16, cudaFuncAttributeMaxDynamicSharedMemorySize, flash_smem));
    const int groups = 2 * F / 8, sg = std::min(groups, SMS * 4), ssm = (groups + sg - 1) / sg * 8 * 4 * 4;
    const float scale_log2 = 1.4426950408889634f / sqrtf(128.f);
    // which: 0 matvecs only; 1 + attention (splits) + combine; 2 attention + combine only (after q/k/v)
    auto layer = [&](int c, int which, int splits) {
        launch(matvec_qkv_rope_q8x_q4_0_r16_o3_f16, dim3((NQ + 2 * NKV) / 16), 128, 0, (const float*)xw, D, rb(D), ncf, 1e-5f, (const float*)sso, 256, (const u8*)wq[c], (const u8*)wk[c], (const u8*)wv[c], ncf, ncf, ncf, NQ, NKV, q, kc[c], vc[c], (const int*)pos, ncf, 128, 500000.f, 0);
        const float* ox = q;
        if (which == 1 || which == 2 || which == 3) {
            float* part_o = part; float* part_ml = part + (size_t)splits * KVH * 4 * 128;
            launch(flash_attn_d128_q1_k2_f16, dim3(1, KVH, splits), 256, flash_smem, (const float*)q, (const u16*)kc[c], (const u16*)vc[c], att, splits > 1 ? part_o : nf, splits > 1 ? part_ml : nf, 1, NCTX, H, KVH, HD, (i64)NCTX, scale_log2, 1, 32, (const int*)pos);
            if (splits > 1) launch(flash_attn_combine, dim3(4, KVH, 1), 128, splits * 8, (const float*)part_o, (const float*)part_ml, att, splits, 1, H, KVH, HD, 128);
            ox = att;
        }
        if (which == 2) return;
        launch(which == 3 ? o_wait_first : matvec_wide_multi_q8x_q4_0_r16_o3, dim3(D / 16), 128, 0, ox, D, rb(D), 1, ncf, 0.f, ncf, 0, (const float*)nw, xw, sso, (const u8*)wo[c], res, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0);
        launch(matvec_stream_swiglu_q8x_q4_0_r8, dim3(sg), 128, ssm, (const float*)xw, ncf, 1e-5f, (const float*)sso, 256, (const u8*)wg[c], (const u8*)wu[c], hid, F, D, rb(D));
        launch(matvec_wide_multi_q8x_q4_0_r16, dim3(D / 16), 128, 0, (const float*)hid, F, rb(F), 1, ncf, 0.f, ncf, 0, (const float*)nw, xw, sso, (const u8*)wd[c], res, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0);
    };
    for (int p0 : {0, 31, 63, 127, 300, 511}) {
        CK(cudaMemcpy(pos, &p0, 4, cudaMemcpyHostToDevice));
        printf("--- position %d (%d keys)\n", p0, p0 + 1);
        for (int round = 0; round < 3; ++round) {
            float t1 = graph_time([&] { for (int c = 0; c < C; ++c) layer(c, 1, 16); }) / C;
            float t3 = graph_time([&] { for (int c = 0; c < C; ++c) layer(c, 3, 16); }) / C;
            float t0 = graph_time([&] { for (int c = 0; c < C; ++c) layer(c, 0, 16); }) / C;
            printf("layer with attention: o prefetching (now) %.2f us | o waiting first %.2f us | matvecs only %.2f\n", t1, t3, t0);
        }
    }
    return 0;
}
