//! rocmforge: GGUF language models on AMD (ROCm/HIP) and NVIDIA (CUDA) GPUs, and on the CPU.
//!
//! Layers, bottom up: `gguf` (pure file reader and quant types) -> `ops` (one module per
//! transformer op: CPU reference + GPU launch) -> `backend` (device runtimes) -> `model`
//! (config, weights, forward, KV cache) -> `tokenizer`, `sampling`, `generate` -> `python`.

pub mod error;
pub mod backend;
pub mod bench;
pub mod gguf;
pub mod ops;
pub mod tokenizer;
pub mod model;
pub mod sampling;
pub mod chat;
pub mod generate;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
