//! rocmforge: GGUF language models on AMD (ROCm/HIP) and NVIDIA (CUDA) GPUs, and on the CPU.
//!
//! Layers, bottom up: `gguf` (pure file reader and quant types) -> `device` (the CPU or a GPU:
//! runtimes, buffers, kernel registry, weight layout) -> `ops` (one module per transformer op:
//! CPU reference + GPU launch) -> `backend` (the model's `Backend` on each device) -> `model`
//! (config, weights, forward, KV cache) -> `tokenizer`, `sampling`, `generate` -> `serve` (the
//! OpenAI-compatible HTTP server), `python`.
//! A layer names only itself and the layers below it (`tests/layering.rs` checks).

pub mod backend;
pub mod bench;
pub mod chat;
pub mod device;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod ops;
pub mod sampling;
#[cfg(feature = "serve")]
pub mod serve;
pub(crate) mod test_rng;
pub mod tokenizer;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
