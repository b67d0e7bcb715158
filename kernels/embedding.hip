// embedding.hip: token embedding lookup from a table kept in its GGUF type.
//
// embedding_<type>: out[t, :] = dequant(table)[ids[t], :]
//   table: [vocab, dim] rows of row_bytes bytes in the GGUF layout (see quants.h);
//   ids: int32 [n_ids] (checked against the vocabulary by the caller); out: [n_ids, dim] float32.
//   Launch: grid (n_ids), block 128 (any multiple of the warp size); threads stride over the
//   row's 32-element chunks, each dequantized in registers.
#include "quants.h"

template <class T>
__device__ __forceinline__ void embedding_rows(const u8* table, const int* ids, float* out, int dim,
                                               i64 row_bytes) {
    const i64 t = blockIdx.x;
    const u8* row = table + (i64)ids[t] * row_bytes;
    float* orow = out + t * dim;
    const int chunks = (dim + 31) / 32;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        float y[32];
        T::chunk(row, c, dim, y);
#pragma unroll
        for (int i = 0; i < 32; ++i)
            if (32 * c + i < dim) orow[32 * c + i] = y[i];
    }
}

#define RF_EMBEDDING_KERNEL(suffix, T)                                                       \
    RF_KERNEL void RF_LAUNCH_BOUNDS(1024) embedding_##suffix(                                \
        const u8* table, const int* ids, float* out, int dim, i64 row_bytes) {               \
        rf_grid_wait();                                                                      \
        rf_grid_release();                                                                   \
        embedding_rows<T>(table, ids, out, dim, row_bytes);                                  \
    }
RF_FOR_EACH_WEIGHT_TYPE(RF_EMBEDDING_KERNEL)
