// bulk.h: shared-memory staging of whole byte ranges by the copy engine (NVIDIA sm_90:
// cp.async.bulk + mbarrier), for matmul.hip's matvec_bulk_* kernels.
//
//   RF_BULK                     defined where the copies are asynchronous (NVIDIA sm_90+);
//                               elsewhere the kernels copy with plain loads (see matvec_bulk)
//   rf_bulk_init(bar, n)        n barriers at bar (one thread), then a block barrier
//   rf_bulk_expect(bar, bytes)  arm one fill of barrier bar: it completes once `bytes` have
//                               arrived by rf_bulk_copy (one thread, before those copies)
//   rf_bulk_copy(dst, src, bytes, bar)  global -> shared, 16-byte aligned, bytes % 16 == 0
//   rf_bulk_wait(bar, parity)   until fill number f of bar with f % 2 == parity has completed
//   rf_bulk_reuse()             before a buffer that threads have read is filled again
#pragma once
#include "common.h"

#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define RF_BULK 1

__device__ __forceinline__ u32 rf_smem_u32(const void* p) {
    u64 a;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
    return (u32)a;
}
__device__ __forceinline__ void rf_bulk_init(u64* bar, int n) {
    if (threadIdx.x == 0) {
        for (int i = 0; i < n; ++i)
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(rf_smem_u32(bar + i)) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
}
__device__ __forceinline__ void rf_bulk_expect(u64* bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(rf_smem_u32(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void rf_bulk_copy(void* dst, const void* src, u32 bytes, u64* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     rf_smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(rf_smem_u32(bar))
                 : "memory");
}
__device__ __forceinline__ void rf_bulk_wait(u64* bar, u32 parity) {
    const u32 a = rf_smem_u32(bar);
    u32 done;
    do {
        asm volatile(
            "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
            : "=r"(done)
            : "r"(a), "r"(parity)
            : "memory");
    } while (!done);
}
__device__ __forceinline__ void rf_bulk_reuse() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
#endif

// 16-byte asynchronous copies by each thread (NVIDIA sm_80+, cp.async): rf_async16 issues one,
// rf_async_commit closes the thread's current group, rf_async_wait<N> returns once at most N
// of the thread's groups are still in flight (then a block barrier publishes all threads').
#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define RF_ASYNC16 1
__device__ __forceinline__ void rf_async16(void* dst, const void* src) {
    u64 a;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"((u32)a), "l"(src) : "memory");
}
__device__ __forceinline__ void rf_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void rf_async_wait_n() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
// rf_async_wait_n<n> for a run-time n (0..7; more waits for 7).
__device__ __forceinline__ void rf_async_wait(int n) {
    switch (n) {
        case 0: rf_async_wait_n<0>(); break;
        case 1: rf_async_wait_n<1>(); break;
        case 2: rf_async_wait_n<2>(); break;
        case 3: rf_async_wait_n<3>(); break;
        case 4: rf_async_wait_n<4>(); break;
        case 5: rf_async_wait_n<5>(); break;
        case 6: rf_async_wait_n<6>(); break;
        default: rf_async_wait_n<7>(); break;
    }
}
#endif
