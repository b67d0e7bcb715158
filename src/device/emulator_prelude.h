// Test-only CPU emulation of the HIP dialect the kernels are written in (see emulator.rs).
// Each block runs as blockDim OS threads; __syncthreads is a barrier of the block, shuffles a
// barrier-synchronized exchange inside each wave of RF_EMU_WAVE lanes (32 or 64, like
// RDNA and CDNA), shared memory is a static (one block runs at a time).
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __HIP__ 1
#define __HIPCC_RTC__ 1
#define __HIP_DEVICE_COMPILE__ 1
#define __AMDGCN_WAVEFRONT_SIZE RF_EMU_WAVE
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
thread_local dim3 threadIdx, blockIdx;
thread_local unsigned rf_emu_tid;
dim3 blockDim, gridDim;
char* rf_emu_dynamic_shared;

struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline int __float_as_int(float f) {
    int i;
    std::memcpy(&i, &f, 4);
    return i;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

struct RfEmuWave {
    std::barrier<> sync;
    union {
        float f;
        int i;
    } lanes[64];
    explicit RfEmuWave(int n) : sync(n) {}
};
std::barrier<>* rf_emu_block_barrier;
std::vector<std::unique_ptr<RfEmuWave>>* rf_emu_waves;

inline void __syncthreads() { rf_emu_block_barrier->arrive_and_wait(); }

template <class T>
inline T rf_emu_exchange(T v, int mask, int width, bool is_float, bool indexed = false) {
    RfEmuWave& w = *(*rf_emu_waves)[rf_emu_tid / RF_EMU_WAVE];
    const int lane = rf_emu_tid % RF_EMU_WAVE;
    if (is_float) w.lanes[lane].f = (float)v; else w.lanes[lane].i = (int)v;
    w.sync.arrive_and_wait();
    const int base = lane & ~(width - 1);
    const int src = base | ((indexed ? mask : (lane ^ mask)) & (width - 1));
    T r = is_float ? (T)w.lanes[src].f : (T)w.lanes[src].i;
    w.sync.arrive_and_wait();
    return r;
}
inline float __shfl_xor(float v, int mask, int width) { return rf_emu_exchange<float>(v, mask, width, true); }
inline int __shfl_xor(int v, int mask, int width) { return rf_emu_exchange<int>(v, mask, width, false); }
// Indexed shuffle: lane `src` of the caller's aligned group of `width` lanes.
inline int __shfl(int v, int src, int width) { return rf_emu_exchange<int>(v, src, width, false, true); }

// Atomics (shared or global memory: both are host memory here) and the memory fence.
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

extern "C" void rf_emu_launch(void (*tramp)(void**), const unsigned* grid, const unsigned* block, unsigned shared,
                              void** args) {
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    const unsigned n = block[0] * block[1] * block[2];
    std::vector<char> dynamic(shared + 64);
    rf_emu_dynamic_shared = (char*)(((size_t)dynamic.data() + 63) & ~(size_t)63);
    for (unsigned bz = 0; bz < grid[2]; ++bz)
        for (unsigned by = 0; by < grid[1]; ++by)
            for (unsigned bx = 0; bx < grid[0]; ++bx) {
                std::barrier<> block_barrier(n);
                std::vector<std::unique_ptr<RfEmuWave>> waves;
                for (unsigned w = 0; w < (n + RF_EMU_WAVE - 1) / RF_EMU_WAVE; ++w)
                    waves.emplace_back(new RfEmuWave((int)std::min<unsigned>(RF_EMU_WAVE, n - w * RF_EMU_WAVE)));
                rf_emu_block_barrier = &block_barrier;
                rf_emu_waves = &waves;
                std::vector<std::thread> threads;
                threads.reserve(n);
                for (unsigned t = 0; t < n; ++t)
                    threads.emplace_back([&, t] {
                        threadIdx = dim3{t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
                        blockIdx = dim3{bx, by, bz};
                        rf_emu_tid = t;
                        tramp(args);
                        // A finished thread no longer takes part in barriers.
                        (*rf_emu_waves)[t / RF_EMU_WAVE]->sync.arrive_and_drop();
                        rf_emu_block_barrier->arrive_and_drop();
                    });
                for (auto& th : threads) th.join();
            }
}
