// Microbenchmark behind bench/runs/2026-11-28-h200-matvec-bulk.txt (kept as a record, not built by
// anything): it includes kernels/matmul.hip as of commit 8d1a651 (the matvec_bulk_* kernels, reverted
// after). Build on the GPU machine from a checkout of that commit, in a directory two levels below the
// root, with microbench-common.h beside it: nvcc -O3 -std=c++17 -arch=sm_90 [-DRF_BULK_USE_TMA] [-DRF_BULK_NOCOMPUTE] -o st4 st4.cu; env: SG
// (grid = SG x multiprocessors), ONLY_LM, ONLY_OLD.
// Microbenchmark: the bulk-staged m = 1 kernels (matvec_bulk_*) against the current ones, on
// Llama-3-8B Q4_0 shapes (graphs of 8 launches on distinct weights, PDL as in the step), plus
// a layer chain (q/k/v -> o -> gate/up -> down, data dependent) of each set.
#include "../../kernels/matmul.hip"
#include <array>
#define RF_MB_REPS 20
#include "microbench-common.h"
std::vector<float> host(const float* d, int n) { std::vector<float> h(n); CK(cudaMemcpy(h.data(), d, n * 4, cudaMemcpyDeviceToHost)); return h; }
std::vector<float> hosth(const u16* d, int n) { std::vector<u16> h(n); CK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost)); std::vector<float> f(n);
    for (int i = 0; i < n; ++i) { u32 s = (h[i] >> 15) & 1, e = (h[i] >> 10) & 31, m = h[i] & 1023; float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m | 1024), (int)e - 25); f[i] = s ? -v : v; } return f; }
double rel(const std::vector<float>& a, const std::vector<float>& b) { double m = 0, r = 0; for (size_t i = 0; i < a.size(); ++i) { m = std::max(m, (double)fabs(a[i] - b[i])); r = std::max(r, (double)fabs(b[i])); } return m / r; }
int bulk_smem(int tp, int stages, int k, int nwarps, int extra) { return stages * 2 * tp * (int)rb(k) + (k / 32) * 40 + 16 * nwarps + 8 * stages + extra; }
template <class K> void allow(K kern) { CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024)); }
template <class K> int regs(K k) { cudaFuncAttributes fa; CK(cudaFuncGetAttributes(&fa, k)); return fa.numRegs; }

int main() {
    cudaDeviceProp p; CK(cudaGetDeviceProperties(&p, 0)); SMS = p.multiProcessorCount;
    printf("%s, %d SMs, smem/SM %zu, smem/block optin %zu\n", p.name, SMS, p.sharedMemPerMultiprocessor, p.sharedMemPerBlockOptin);
    CK(cudaStreamCreateWithFlags(&ST, cudaStreamNonBlocking));
    allow(matvec_bulk_multi_q8x_q4_0); allow(matvec_bulk_swiglu_q8x_q4_0); allow(matvec_bulk_qkv_rope_q8x_q4_0_f16);
    printf("regs: bulk multi %d swiglu %d qkv %d\n", regs(matvec_bulk_multi_q8x_q4_0), regs(matvec_bulk_swiglu_q8x_q4_0), regs(matvec_bulk_qkv_rope_q8x_q4_0_f16));
    const int D = 4096, F = 14336, NQ = 4096, NKV = 1024, NV = 128256, C = 8;
    float *x, *nw, *ss, *out, *out2, *xw, *sso, *q, *q2, *hid, *hid2, *res;
    u16 *kc, *vc, *kc2, *vc2; int* pos;
    CK(cudaMalloc(&x, F * 4)); CK(cudaMalloc(&nw, F * 4)); CK(cudaMalloc(&ss, 1024 * 4)); CK(cudaMalloc(&out, NV * 4)); CK(cudaMalloc(&out2, NV * 4));
    CK(cudaMalloc(&xw, F * 4)); CK(cudaMalloc(&sso, 4096 * 4)); CK(cudaMalloc(&q, NQ * 4)); CK(cudaMalloc(&q2, NQ * 4)); CK(cudaMalloc(&hid, F * 4)); CK(cudaMalloc(&hid2, F * 4)); CK(cudaMalloc(&res, F * 4));
    CK(cudaMalloc(&kc, 600 * NKV * 2)); CK(cudaMalloc(&vc, 600 * NKV * 2)); CK(cudaMalloc(&kc2, 600 * NKV * 2)); CK(cudaMalloc(&vc2, 600 * NKV * 2)); CK(cudaMalloc(&pos, 4));
    fill_f<<<64, 256>>>(x, F, 5, 0.f); fill_f<<<64, 256>>>(nw, F, 6, 1.f); fill_f<<<64, 256>>>(ss, 1024, 7, 2.f);
    int p0 = 300; CK(cudaMemcpy(pos, &p0, 4, cudaMemcpyHostToDevice));
    auto alloc_q = [](int rows, int k, u32 seed) { u8* w; CK(cudaMalloc(&w, rows * rb(k))); fill_q4<<<2048, 256>>>(w, rows, k, seed); return w; };
    std::vector<u8*> wq(C), wk(C), wv(C), wo(C), wd(C), wg(C), wu(C);
    for (int c = 0; c < C; ++c) { wq[c] = alloc_q(NQ, D, 1 + c); wk[c] = alloc_q(NKV, D, 20 + c); wv[c] = alloc_q(NKV, D, 40 + c); wo[c] = alloc_q(D, D, 60 + c); wd[c] = alloc_q(D, F, 80 + c);
        wg[c] = alloc_q(F, D, 200 + c); wu[c] = alloc_q(F, D, 220 + c); }
    std::vector<u8*> wl(4); for (int c = 0; c < 4; ++c) wl[c] = alloc_q(NV, D, 100 + c);
    CK(cudaDeviceSynchronize());
    auto rep = [&](const char* what, float t, double bytes, double err) { printf("%-34s %8.2f us %6.0f GB/s   rel.err %.3g\n", what, t, bytes / t / 1e3, err); };
    const int SG = getenv("SG") ? atoi(getenv("SG")) : 1;  // grid = SG x SMS
    printf("grid %d x SMs\n", SG);
    for (int round = 0; round < 2; ++round) {
        printf("--- round %d\n", round);
        const bool only_lm = getenv("ONLY_LM") != nullptr;
        // ---- q/k/v + rope (f16 cache), handed-over norm (256 parts)
        if (!only_lm) {
            const double by = (double)(NQ + 2 * NKV) * rb(D);
            const int nb = (NQ + 2 * NKV) / 16;
            float t = graph_time([&] { for (int c = 0; c < C; ++c) launch(matvec_qkv_rope_q8x_q4_0_r16_o3_f16, nb, 128, 0, (const float*)x, D, rb(D), ncf, 1e-5f, (const float*)ss, 256, (const u8*)wq[c], (const u8*)wk[c], (const u8*)wv[c], ncf, ncf, ncf, NQ, NKV, q, kc, vc, (const int*)pos, ncf, 128, 500000.f, 0); }) / C;
            rep("qkv old r16 o3", t, by, 0);
            auto qr = host(q, NQ); auto kr = hosth(kc + 300 * NKV, NKV); auto vr = hosth(vc + 300 * NKV, NKV);
            int cfgs[][3] = {{8, 8, 3}, {8, 8, 4}, {4, 8, 4}, {4, 8, 6}, {8, 16, 3}, {16, 16, 2}};
            for (auto& cf : cfgs) {
                if (getenv("ONLY_OLD")) break;
                const int tp = cf[0], nwp = cf[1], S = cf[2];
                const int tiles = (NQ + 2 * NKV) / 2 / tp, grid = std::min(tiles, SG * SMS);
                const int smem = bulk_smem(tp, S, D, nwp, 8 * tp * ((tiles + grid - 1) / grid));
                t = graph_time([&] { for (int c = 0; c < C; ++c) launch(matvec_bulk_qkv_rope_q8x_q4_0_f16, grid, 32 * nwp, smem, (const float*)x, D, rb(D), ncf, 1e-5f, (const float*)ss, 256, (const u8*)wq[c], (const u8*)wk[c], (const u8*)wv[c], ncf, ncf, ncf, NQ, NKV, q2, kc2, vc2, (const int*)pos, ncf, 128, 500000.f, 0, tp, S); }) / C;
                char name[64]; snprintf(name, 64, "qkv bulk tp%d w%d s%d (%dK)", tp, nwp, S, smem / 1024);
                auto qb = host(q2, NQ); auto kb = hosth(kc2 + 300 * NKV, NKV); auto vb = hosth(vc2 + 300 * NKV, NKV);
                rep(name, t, by, std::max(rel(qb, qr), std::max(rel(kb, kr), rel(vb, vr))));
            }
            if (!getenv("ONLY_OLD")) {
            launch(matvec_qkv_rope_q8x_q4_0_r16_o3_f16, nb, 128, 0, (const float*)x, D, rb(D), ncf, 1e-5f, (const float*)ss, 256, (const u8*)wq[7], (const u8*)wk[7], (const u8*)wv[7], ncf, ncf, ncf, NQ, NKV, q, kc, vc, (const int*)pos, ncf, 128, 500000.f, 1);
            launch(matvec_bulk_qkv_rope_q8x_q4_0_f16, SMS, 256, bulk_smem(8, 3, D, 8, 64 * 8), (const float*)x, D, rb(D), ncf, 1e-5f, (const float*)ss, 256, (const u8*)wq[7], (const u8*)wk[7], (const u8*)wv[7], ncf, ncf, ncf, NQ, NKV, q2, kc2, vc2, (const int*)pos, ncf, 128, 500000.f, 1, 8, 3);
            CK(cudaStreamSynchronize(ST));
            printf("neox check rel.err q %.3g k %.3g\n", rel(host(q2, NQ), host(q, NQ)), rel(hosth(kc2 + 300 * NKV, NKV), hosth(kc + 300 * NKV, NKV)));
            }
        }
        // ---- o (k = D) and down (k = F): the multi kernel (norm_out, no accumulate), current
        // form against the bulk form in several configurations {rows a tile, warps, stages}
        auto sweep_multi = [&](const char* tag, auto old_kernel, const char* old_name, int k,
                               std::vector<u8*>& w, std::vector<std::array<int, 3>> cfgs) {
            const double by = (double)D * rb(k);
            float t = graph_time([&] { for (int c = 0; c < C; ++c) launch(old_kernel, D / 16, 128, 0, (const float*)x, k, rb(k), 0, ncf, 0.f, (const float*)ss, 256, (const float*)nw, xw, sso, (const u8*)w[c], out, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0); }) / C;
            char name[64]; snprintf(name, 64, "%s old %s", tag, old_name);
            rep(name, t, by, 0);
            auto r = host(out, D);
            for (auto& cf : cfgs) {
                if (getenv("ONLY_OLD")) break;
                const int tp = cf[0], nwp = cf[1], S = cf[2];
                const int tiles = D / 2 / tp, grid = std::min(tiles, SG * SMS);
                const int smem = bulk_smem(tp, S, k, nwp, 0);
                t = graph_time([&] { for (int c = 0; c < C; ++c) launch(matvec_bulk_multi_q8x_q4_0, grid, 32 * nwp, smem, (const float*)x, k, rb(k), 0, ncf, 1e-5f, (const float*)ss, 256, (const float*)nw, xw, sso, (const u8*)w[c], out2, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0, tp, S); }) / C;
                snprintf(name, 64, "%s bulk tp%d w%d s%d (%dK)", tag, tp, nwp, S, smem / 1024);
                rep(name, t, by, rel(host(out2, D), r));
            }
        };
        if (!only_lm) {
            sweep_multi("o", matvec_wide_multi_q8x_q4_0_r16_o3, "r16 o3", D, wo, {{8, 8, 3}, {4, 8, 4}, {4, 8, 6}, {8, 16, 3}});
            sweep_multi("down", matvec_wide_multi_q8x_q4_0_r16, "r16", F, wd, {{2, 8, 3}, {2, 8, 4}, {1, 8, 6}, {2, 16, 4}, {4, 16, 2}, {1, 4, 8}});
        }
        // ---- gate/up + swiglu
        if (!only_lm) {
            const double by = 2.0 * F * rb(D);
            const int groups = 2 * F / 8, grid = std::min(groups, SMS * 4), smem = (groups + grid - 1) / grid * 8 * 4 * 4;
            float t = graph_time([&] { for (int c = 0; c < C; ++c) launch(matvec_stream_swiglu_q8x_q4_0_r8, grid, 128, smem, (const float*)x, ncf, 1e-5f, (const float*)ss, 256, (const u8*)wg[c], (const u8*)wu[c], hid, F, D, rb(D)); }) / C;
            rep("gate/up old stream r8", t, by, 0);
            auto r = host(hid, F);
            int cfgs[][3] = {{8, 8, 3}, {8, 8, 4}, {4, 8, 5}, {8, 16, 3}, {16, 16, 2}};
            for (auto& cf : cfgs) {
                if (getenv("ONLY_OLD")) break;
                const int tp = cf[0], nwp = cf[1], S = cf[2];
                const int tiles = F / tp, g2 = std::min(tiles, SG * SMS);
                const int sm = bulk_smem(tp, S, D, nwp, 0);
                t = graph_time([&] { for (int c = 0; c < C; ++c) launch(matvec_bulk_swiglu_q8x_q4_0, g2, 32 * nwp, sm, (const float*)x, ncf, 1e-5f, (const float*)ss, 256, (const u8*)wg[c], (const u8*)wu[c], hid2, F, D, rb(D), tp, S); }) / C;
                char name[64]; snprintf(name, 64, "gate/up bulk tp%d w%d s%d (%dK)", tp, nwp, S, sm / 1024);
                rep(name, t, by, rel(host(hid2, F), r));
            }
        }
        // ---- LM head
        {
            const double by = (double)NV * rb(D);
            float t = graph_time([&] { for (int c = 0; c < 4; ++c) launch(matvec_wide_q8x_q4_0_r16_o3, NV / 16, 128, 0, (const float*)x, (const u8*)wl[c], out, NV, D, rb(D)); }) / 4;
            rep("lm old r16 o3", t, by, 0);
            auto r = host(out, NV);
            int cfgs[][3] = {{8, 8, 3}, {8, 8, 4}, {16, 16, 2}, {4, 8, 6}};
            for (auto& cf : cfgs) {
                if (getenv("ONLY_OLD")) break;
                if (only_lm && cf[0] != 8) continue;
                if (only_lm && cf[2] != 3) continue;
                const int tp = cf[0], nwp = cf[1], S = cf[2];
                const int tiles = NV / 2 / tp, grid = std::min(tiles, SG * SMS);
                const int smem = bulk_smem(tp, S, D, nwp, 0);
                t = graph_time([&] { for (int c = 0; c < 4; ++c) launch(matvec_bulk_multi_q8x_q4_0, grid, 32 * nwp, smem, (const float*)x, D, rb(D), 0, ncf, 0.f, ncf, 0, ncf, nf, nf, (const u8*)wl[c], out2, ncf, NV, nu, nf, ncf, 0, nu, nf, ncf, 0, tp, S); }) / 4;
                char name[64]; snprintf(name, 64, "lm bulk tp%d w%d s%d (%dK)", tp, nwp, S, smem / 1024);
                rep(name, t, by, rel(host(out2, NV), r));
            }
        }
        // ---- layer chains (8 layers): q/k/v -> o (x = q) -> gate/up -> down; residual in res
        if (!only_lm) {
            const double by = ((double)(NQ + 2 * NKV) * rb(D) + (double)D * rb(D) + 2.0 * F * rb(D) + (double)D * rb(F));
            const int groups = 2 * F / 8, sg = std::min(groups, SMS * 4), ssm = (groups + sg - 1) / sg * 8 * 4 * 4;
            float t = graph_time([&] {
                for (int c = 0; c < C; ++c) {
                    launch(matvec_qkv_rope_q8x_q4_0_r16_o3_f16, (NQ + 2 * NKV) / 16, 128, 0, (const float*)xw, D, rb(D), ncf, 1e-5f, (const float*)sso, 256, (const u8*)wq[c], (const u8*)wk[c], (const u8*)wv[c], ncf, ncf, ncf, NQ, NKV, q, kc, vc, (const int*)pos, ncf, 128, 500000.f, 0);
                    launch(matvec_wide_multi_q8x_q4_0_r16_o3, D / 16, 128, 0, (const float*)q, D, rb(D), 1, ncf, 0.f, ncf, 0, (const float*)nw, xw, sso, (const u8*)wo[c], res, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0);
                    launch(matvec_stream_swiglu_q8x_q4_0_r8, sg, 128, ssm, (const float*)xw, ncf, 1e-5f, (const float*)sso, 256, (const u8*)wg[c], (const u8*)wu[c], hid, F, D, rb(D));
                    launch(matvec_wide_multi_q8x_q4_0_r16, D / 16, 128, 0, (const float*)hid, F, rb(F), 1, ncf, 0.f, ncf, 0, (const float*)nw, xw, sso, (const u8*)wd[c], res, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0);
                } }) / C;
            rep("layer old", t, by, 0);
            int lc[][9] = {{8, 8, 3, 8, 8, 3, 2, 8, 4}, {4, 8, 5, 4, 8, 5, 2, 8, 4}, {8, 8, 4, 8, 8, 4, 1, 8, 6}};
            for (auto& L : lc) {
                if (getenv("ONLY_OLD")) break;
                const int tq = (NQ + 2 * NKV) / 2 / L[0], gq = std::min(tq, SMS), sq = bulk_smem(L[0], L[2], D, L[1], 8 * L[0] * ((tq + gq - 1) / gq));
                const int go = std::min(D / 2 / L[0], SMS), so = bulk_smem(L[0], L[2], D, L[1], 0);
                const int gg = std::min(F / L[3], SMS), sgu = bulk_smem(L[3], L[5], D, L[4], 0);
                const int gd = std::min(D / 2 / L[6], SMS), sd = bulk_smem(L[6], L[8], F, L[7], 0);
                t = graph_time([&] {
                    for (int c = 0; c < C; ++c) {
                        launch(matvec_bulk_qkv_rope_q8x_q4_0_f16, gq, 32 * L[1], sq, (const float*)xw, D, rb(D), ncf, 1e-5f, (const float*)sso, gd, (const u8*)wq[c], (const u8*)wk[c], (const u8*)wv[c], ncf, ncf, ncf, NQ, NKV, q, kc, vc, (const int*)pos, ncf, 128, 500000.f, 0, L[0], L[2]);
                        launch(matvec_bulk_multi_q8x_q4_0, go, 32 * L[1], so, (const float*)q, D, rb(D), 1, ncf, 0.f, ncf, 0, (const float*)nw, xw, sso, (const u8*)wo[c], res, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0, L[0], L[2]);
                        launch(matvec_bulk_swiglu_q8x_q4_0, gg, 32 * L[4], sgu, (const float*)xw, ncf, 1e-5f, (const float*)sso, go, (const u8*)wg[c], (const u8*)wu[c], hid, F, D, rb(D), L[3], L[5]);
                        launch(matvec_bulk_multi_q8x_q4_0, gd, 32 * L[7], sd, (const float*)hid, F, rb(F), 1, ncf, 0.f, ncf, 0, (const float*)nw, xw, sso, (const u8*)wd[c], res, ncf, D, nu, nf, ncf, 0, nu, nf, ncf, 0, L[6], L[8]);
                    } }) / C;
                char name[64]; snprintf(name, 64, "layer bulk q%d/%d/%d g%d/%d/%d d%d/%d/%d", L[0], L[1], L[2], L[3], L[4], L[5], L[6], L[7], L[8]);
                rep(name, t, by, 0);
            }
        }
        if (only_lm) break;
    }
    return 0;
}
