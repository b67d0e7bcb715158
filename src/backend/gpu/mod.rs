//! GPU backend: `GpuBackend`, the model's `Backend` on a GPU (`crate::device::gpu::GpuDevice`),
//! built from the GPU launchers of `crate::ops`, and `GpuPlan`, the decode plan it makes of a
//! model's recorded step (its fused kernels, a recorded graph). The runtimes, buffers and
//! kernel registry it runs on are in `crate::device`.

pub mod backend;
#[cfg(test)]
mod emulator_tests;
pub mod plan;

pub use backend::{GpuBackend, GpuKv, GpuWeight};
pub use plan::GpuPlan;
