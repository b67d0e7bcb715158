//! rocmforge: GGUF language models on AMD (ROCm/HIP) and NVIDIA (CUDA) GPUs, and on the CPU.
//!
//! Layers, bottom up: `gguf` (pure file reader and quant types) -> `ops` (one module per
//! transformer op: CPU reference + GPU launch) -> `backend` (device runtimes) -> `model`
//! (config, weights, forward, KV cache) -> `tokenizer`, `sampling`, `generate` -> `python`.

pub mod backend;
pub mod bench;
pub mod chat;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod ops;
pub mod sampling;
pub mod tokenizer;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
