// Test-only CPU emulation of the HIP dialect the kernels are written in (see emulator.rs).
// Each thread of a block is a fiber on the one OS thread of the launch, run by a round-robin
// scheduler: __syncthreads is a barrier of the block, shuffles a barrier-synchronized
// exchange inside each wave of RF_EMU_WAVE lanes (32 or 64, like RDNA and CDNA), and a fiber
// waiting at a barrier yields to the next. Shared memory is a static (one block runs at a time).
// Fibers rather than OS threads: a block needs no thread creation and a barrier no kernel wait.
//
// A fiber starts on its own stack through makecontext/swapcontext; after that, switches are
// _setjmp/_longjmp, which unlike swapcontext make no system call (the signal mask is left
// alone), and a finished fiber jumps back to the scheduler rather than returning.
//
// Only C system headers: the C++ library's headers would take most of each file's build time.
#undef _FORTIFY_SOURCE  // its longjmp check rejects jumps between stacks
// The math functions the kernels call are declared here; a kernel calling another one fails
// to build on the emulator until it is added to the list.
#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>

extern "C" {
float expf(float);
float exp2f(float);
float logf(float);
float log2f(float);
float sqrtf(float);
float tanhf(float);
float sinf(float);
float cosf(float);
float fabsf(float);
float fmaxf(float, float);
float fminf(float, float);
float fmaf(float, float, float);
float floorf(float);
float ceilf(float);
float roundf(float);
float powf(float, float);
double exp(double);
double log(double);
double log2(double);
double sqrt(double);
double tanh(double);
double sin(double);
double cos(double);
double fabs(double);
double floor(double);
double ceil(double);
double pow(double, double);
int dprintf(int, const char*, ...);
void abort(void);
}

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
// The running fiber's indices: set by the scheduler each time it resumes a fiber.
dim3 threadIdx, blockIdx;
unsigned rf_emu_tid;
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
inline float __int_as_float(int i) { return __builtin_bit_cast(float, i); }
inline int __float_as_int(float f) { return __builtin_bit_cast(int, f); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

struct RfEmuFiber {
    ucontext_t start;  // the entry on its stack (first resume only)
    jmp_buf at;        // where it yielded
    bool started, done;
};
jmp_buf rf_emu_scheduler;
RfEmuFiber* rf_emu_fibers;
unsigned long rf_emu_progress;  // barrier arrivals and finished fibers: a pass without any is a deadlock

inline void rf_emu_yield() {
    if (!_setjmp(rf_emu_fibers[rf_emu_tid].at)) _longjmp(rf_emu_scheduler, 1);
}

// A barrier of fibers: the last to arrive opens it and runs on; the others yield until it opens.
struct RfEmuBarrier {
    int expected;
    int arrived;
    unsigned generation;
    void reset(int n) {
        expected = n;
        arrived = 0;
        generation = 0;
    }
    void open() {
        arrived = 0;
        ++generation;
    }
    void arrive_and_wait() {
        ++rf_emu_progress;
        const unsigned g = generation;
        if (++arrived == expected) {
            open();
            return;
        }
        while (generation == g) rf_emu_yield();
    }
    // A finished thread no longer takes part.
    void arrive_and_drop() {
        ++rf_emu_progress;
        if (--expected > 0 && arrived == expected) open();
    }
};

struct RfEmuWave {
    RfEmuBarrier sync;
    union {
        float f;
        int i;
    } lanes[64];
};
RfEmuBarrier rf_emu_block_barrier;
RfEmuWave rf_emu_waves[1024 / RF_EMU_WAVE];

inline void __syncthreads() { rf_emu_block_barrier.arrive_and_wait(); }

template <class T>
inline T rf_emu_exchange(T v, int mask, int width, bool is_float, bool indexed = false) {
    RfEmuWave& w = rf_emu_waves[rf_emu_tid / RF_EMU_WAVE];
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

// Short vectors (kernels/common.h's RF_VECTOR_TYPE) in g++'s form: the AMD builtins' operands.
#define RF_VECTOR_TYPE(T, n) T __attribute__((vector_size((n) * sizeof(T))))

// The AMD matrix-core builtins of the form the translation unit emulates (RF_MATRIX_WMMA11,
// RF_MATRIX_WMMA12 or RF_MATRIX_MFMA, defined before this prelude): D[16 x 16] = A B + C over
// the wave, each lane giving its fragments in the instruction's lane layout (kernels/mma.h
// spells them out): lane l holds row l % 16 of A and column l % 16 of B at k = k0(l) .. +K-1,
// and D elements e at row d_row(e, l), column l % 16. Every lane of the wave deposits its
// operands, a wave barrier, then each computes its own D elements from all of them (f32
// products and sums in k order), and a second barrier before the area is reused.
#if defined(RF_MATRIX_WMMA11) || defined(RF_MATRIX_WMMA12) || defined(RF_MATRIX_MFMA)
#if defined(RF_MATRIX_WMMA11)
constexpr int RF_EMU_MK = 16, RF_EMU_MC = 8, RF_EMU_MWAVE = 32;
inline int rf_emu_k0(int l) { return 0; }
inline int rf_emu_d_row(int e, int l) { return 2 * e + (l >> 4); }
#elif defined(RF_MATRIX_WMMA12)
constexpr int RF_EMU_MK = 8, RF_EMU_MC = 8, RF_EMU_MWAVE = 32;
inline int rf_emu_k0(int l) { return 8 * (l >> 4); }
inline int rf_emu_d_row(int e, int l) { return e + 8 * (l >> 4); }
#else
constexpr int RF_EMU_MK = 4, RF_EMU_MC = 4, RF_EMU_MWAVE = 64;
inline int rf_emu_k0(int l) { return 4 * (l >> 4); }
inline int rf_emu_d_row(int e, int l) { return 4 * (l >> 4) + e; }
#endif
static_assert(RF_EMU_WAVE == RF_EMU_MWAVE, "the matrix instructions of this target need its wave size");

struct RfEmuMatrixLane {
    float a[16], b[16];
};
RfEmuMatrixLane rf_emu_matrix_lanes[1024 / RF_EMU_WAVE][RF_EMU_WAVE];

// The value of A[r][k] (or of B[k][r]) from the deposited operands: the lane holding row
// (column) r at k.
inline float rf_emu_operand(const RfEmuMatrixLane* lanes, bool a, int r, int k) {
    for (int l = r; l < RF_EMU_WAVE; l += 16) {
        const int k0 = rf_emu_k0(l);
        if (k >= k0 && k < k0 + RF_EMU_MK) return a ? lanes[l].a[k - k0] : lanes[l].b[k - k0];
    }
    dprintf(2, "emulator: no lane holds k = %d of row %d\n", k, r);
    abort();
}

template <class V>
inline float rf_emu_value(V v, int i, bool bf16) {
    if (bf16) return __int_as_float((int)(unsigned short)v[i] << 16);
    return (float)v[i];
}

template <class In, class Acc>
inline Acc rf_emu_matrix(In a, In b, Acc c, bool bf16) {
    RfEmuWave& w = rf_emu_waves[rf_emu_tid / RF_EMU_WAVE];
    RfEmuMatrixLane* lanes = rf_emu_matrix_lanes[rf_emu_tid / RF_EMU_WAVE];
    const int lane = rf_emu_tid % RF_EMU_WAVE;
    for (int i = 0; i < RF_EMU_MK; ++i) {
        lanes[lane].a[i] = rf_emu_value(a, i, bf16);
        lanes[lane].b[i] = rf_emu_value(b, i, bf16);
    }
    w.sync.arrive_and_wait();
#if defined(RF_MATRIX_WMMA11)
    // The instruction reads lanes 0-15; the rest must repeat them.
    for (int i = 0; i < RF_EMU_MK; ++i) {
        const RfEmuMatrixLane &mine = lanes[lane], &low = lanes[lane & 15];
        if (__builtin_memcmp(&mine.a[i], &low.a[i], 4) || __builtin_memcmp(&mine.b[i], &low.b[i], 4)) {
            dprintf(2, "emulator: WMMA operands of lane %d differ from lane %d's\n", lane, lane & 15);
            abort();
        }
    }
#endif
    Acc d;
    for (int e = 0; e < RF_EMU_MC; ++e) {
        const int row = rf_emu_d_row(e, lane), col = lane & 15;
        float acc = c[e];
        for (int k = 0; k < 16; ++k)
            acc += rf_emu_operand(lanes, true, row, k) * rf_emu_operand(lanes, false, col, k);
        d[e] = acc;
    }
    w.sync.arrive_and_wait();
    return d;
}

typedef RF_VECTOR_TYPE(_Float16, RF_EMU_MK) rf_emu_f16v;
typedef RF_VECTOR_TYPE(short, RF_EMU_MK) rf_emu_bf16v;
typedef RF_VECTOR_TYPE(float, RF_EMU_MC) rf_emu_accv;
#if defined(RF_MATRIX_WMMA11)
inline rf_emu_accv __builtin_amdgcn_wmma_f32_16x16x16_f16_w32(rf_emu_f16v a, rf_emu_f16v b, rf_emu_accv c) {
    return rf_emu_matrix(a, b, c, false);
}
inline rf_emu_accv __builtin_amdgcn_wmma_f32_16x16x16_bf16_w32(rf_emu_bf16v a, rf_emu_bf16v b, rf_emu_accv c) {
    return rf_emu_matrix(a, b, c, true);
}
#elif defined(RF_MATRIX_WMMA12)
inline rf_emu_accv __builtin_amdgcn_wmma_f32_16x16x16_f16_w32_gfx12(rf_emu_f16v a, rf_emu_f16v b, rf_emu_accv c) {
    return rf_emu_matrix(a, b, c, false);
}
inline rf_emu_accv __builtin_amdgcn_wmma_f32_16x16x16_bf16_w32_gfx12(rf_emu_bf16v a, rf_emu_bf16v b, rf_emu_accv c) {
    return rf_emu_matrix(a, b, c, true);
}
#else
// cbsz, abid, blgp (broadcast controls) 0 only: the kernels use no broadcast.
inline rf_emu_accv __builtin_amdgcn_mfma_f32_16x16x16f16(rf_emu_f16v a, rf_emu_f16v b, rf_emu_accv c, int cbsz,
                                                         int abid, int blgp) {
    if (cbsz || abid || blgp) abort();
    return rf_emu_matrix(a, b, c, false);
}
inline rf_emu_accv __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(rf_emu_bf16v a, rf_emu_bf16v b, rf_emu_accv c,
                                                             int cbsz, int abid, int blgp) {
    if (cbsz || abid || blgp) abort();
    return rf_emu_matrix(a, b, c, true);
}
#endif
#endif

// At wave 32 the kernels take RDNA3/4's integer dot product and IQ4 lookup (kernels/quants.h,
// RF_DOT_IU8), at wave 64 the portable dot product and NVIDIA's IQ4 lookup (RF_PRMT): the
// builtins they use, as the instructions compute.
#if RF_EMU_WAVE == 64
#define RF_PRMT 1
// prmt (CUDA's __byte_perm): byte i of the result is byte (selector nibble i) & 7 of the 8
// bytes {y, x} (x bytes 0-3).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long data = (unsigned long long)y << 32 | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)(data >> (8 * (s >> (4 * i) & 7u)) & 0xffu) << (8 * i);
    return r;
}
#endif
#if RF_EMU_WAVE == 32
#define RF_DOT_IU8 1
// v_dot4_i32_iu8: c + the products of a's and b's bytes, each signed or not as told; clamp
// saturates the sum to 32 bits.
inline int __builtin_amdgcn_sudot4(bool a_signed, int a, bool b_signed, int b, int c, bool clamp) {
    long long s = c;
    for (int i = 0; i < 32; i += 8) {
        const int x = a_signed ? (int)(signed char)(a >> i) : (int)((unsigned)a >> i & 0xffu);
        const int y = b_signed ? (int)(signed char)(b >> i) : (int)((unsigned)b >> i & 0xffu);
        s += (long long)x * y;
    }
    if (clamp) s = s > 2147483647ll ? 2147483647ll : s < -2147483648ll ? -2147483648ll : s;
    return (int)(unsigned)(unsigned long long)s;
}
// v_perm_b32: byte i of the result by selector byte i of sel from the 8 bytes {hi, lo} (lo
// bytes 0-3): 0-7 that byte, 8-11 the sign of byte 1, 3, 5, 7 (0x00 or 0xff), 12 0x00, 13+ 0xff.
inline unsigned __builtin_amdgcn_perm(unsigned hi, unsigned lo, unsigned sel) {
    const unsigned long long data = (unsigned long long)hi << 32 | lo;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) {
        const unsigned s = sel >> (8 * i) & 0xffu;
        unsigned byte;
        if (s < 8) byte = (unsigned)(data >> (8 * s)) & 0xffu;
        else if (s < 12) byte = (data >> (16 * (s - 8) + 15) & 1u) ? 0xffu : 0u;
        else byte = s == 12 ? 0u : 0xffu;
        r |= byte << (8 * i);
    }
    return r;
}
#endif

// Atomics (shared or global memory: both are host memory here) and the memory fence.
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

void (*rf_emu_tramp)(void**);
void** rf_emu_args;

void rf_emu_fiber_main() {
    rf_emu_tramp(rf_emu_args);
    const unsigned t = rf_emu_tid;
    rf_emu_waves[t / RF_EMU_WAVE].sync.arrive_and_drop();
    rf_emu_block_barrier.arrive_and_drop();
    rf_emu_fibers[t].done = true;
    _longjmp(rf_emu_scheduler, 1);  // never returns: its stack is reused by the next block
}

// Each fiber's stack, with a guard page below it so that an overflow faults.
constexpr unsigned long RF_EMU_STACK = 256 * 1024;
constexpr unsigned long RF_EMU_PAGE = 4096;

extern "C" void rf_emu_launch(void (*tramp)(void**), const unsigned* grid, const unsigned* block, unsigned shared,
                              void** args) {
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    rf_emu_tramp = tramp;
    rf_emu_args = args;
    const unsigned n = block[0] * block[1] * block[2];
    char* dynamic = new char[shared + 64];
    rf_emu_dynamic_shared = (char*)(((unsigned long)dynamic + 63) & ~63ul);
    const unsigned long span = RF_EMU_STACK + RF_EMU_PAGE;
    char* stacks = (char*)mmap(nullptr, span * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                               -1, 0);
    if (stacks == MAP_FAILED) {
        dprintf(2, "emulator: no memory for %u fiber stacks\n", n);
        abort();
    }
    for (unsigned t = 0; t < n; ++t) mprotect(stacks + t * span, RF_EMU_PAGE, PROT_NONE);
    RfEmuFiber* fibers = new RfEmuFiber[n];
    rf_emu_fibers = fibers;
    const unsigned n_waves = (n + RF_EMU_WAVE - 1) / RF_EMU_WAVE;
    for (unsigned bz = 0; bz < grid[2]; ++bz)
        for (unsigned by = 0; by < grid[1]; ++by)
            for (unsigned bx = 0; bx < grid[0]; ++bx) {
                rf_emu_block_barrier.reset((int)n);
                for (unsigned w = 0; w < n_waves; ++w)
                    rf_emu_waves[w].sync.reset((int)(n - w * RF_EMU_WAVE < RF_EMU_WAVE ? n - w * RF_EMU_WAVE : RF_EMU_WAVE));
                blockIdx = dim3{bx, by, bz};
                for (unsigned t = 0; t < n; ++t) {
                    RfEmuFiber& f = fibers[t];
                    f.started = f.done = false;
                    getcontext(&f.start);
                    f.start.uc_stack.ss_sp = stacks + t * span + RF_EMU_PAGE;
                    f.start.uc_stack.ss_size = RF_EMU_STACK;
                    f.start.uc_link = nullptr;
                    makecontext(&f.start, rf_emu_fiber_main, 0);
                }
                for (unsigned running = n; running > 0;) {
                    const unsigned long before = rf_emu_progress;
                    for (unsigned t = 0; t < n; ++t) {
                        if (fibers[t].done) continue;
                        threadIdx = dim3{t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
                        rf_emu_tid = t;
                        if (!_setjmp(rf_emu_scheduler)) {
                            if (fibers[t].started) _longjmp(fibers[t].at, 1);
                            fibers[t].started = true;
                            ucontext_t here;
                            swapcontext(&here, &fibers[t].start);  // (never comes back here)
                        }
                        if (fibers[t].done) --running;
                    }
                    if (running > 0 && rf_emu_progress == before) {
                        dprintf(2, "emulator: the threads of block (%u, %u, %u) wait on each other forever\n", bx, by,
                                bz);
                        abort();
                    }
                }
            }
    delete[] fibers;
    munmap(stacks, span * n);
    delete[] dynamic;
}
