//! GGUF files: a pure reader (`reader`), the ggml tensor types (`types`) and CPU
//! (de)quantization of their blocks (`quants`). Knows nothing of devices or models.

pub mod quants;
pub mod reader;
pub mod types;

pub use reader::{GgufFile, MetaValue, TensorInfo};
pub use types::GgmlType;
