//! GPU backend: `GpuBackend`, the model's `Backend` on a GPU (`crate::device::gpu::GpuDevice`),
//! built from the GPU launchers of `crate::ops`. The runtimes, buffers and kernel registry it
//! runs on are in `crate::device`.

pub mod backend;
#[cfg(test)]
mod emulator_tests;

pub use backend::GpuBackend;
