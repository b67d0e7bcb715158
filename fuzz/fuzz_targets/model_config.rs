//! Coverage-guided fuzzing of model configuration: arbitrary bytes choose the value and type
//! (or absence) of every metadata key a model config reads, and the shape of the token
//! embedding; the GGUF file they describe is written here and read back. Building the config
//! either gives one whose every invariant holds or a `Gguf` / `Unsupported` error; loading a
//! model from it (on the CPU, tiny context) fails cleanly on the tensors the file lacks.
//! Nothing panics, overflows or over-allocates. Run with `scripts/fuzz.sh [seconds] model_config`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rocmforge::gguf::GgufFile;
use rocmforge::model::{self, ModelConfig};
use rocmforge::Error;

const ARCHS: [&str; 4] = ["llama", "qwen2", "gptj", ""];
const KEYS: [&str; 16] = [
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.layer_norm_rms_epsilon",
    "rope.freq_base",
    "attention.key_length",
    "attention.value_length",
    "rope.dimension_count",
    "rope.scaling.type",
    "rope.scaling.factor",
    "vocab_size",
    "expert_count",
    "rope.scaling.original_context_length",
];

/// Reads the fuzz input front to back; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.byte())
    }
    /// Mostly small numbers (the interesting range of counts), sometimes any 64-bit pattern.
    fn number(&mut self) -> u64 {
        match self.byte() {
            b @ 0..=199 => b as u64,
            200..=239 => u16::from_le_bytes(self.bytes()) as u64,
            _ => u64::from_le_bytes(self.bytes()),
        }
    }
}

fn gstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One metadata value of a type the input picks; `None`: the key is left out.
fn value(input: &mut Input) -> Option<(u32, Vec<u8>)> {
    let n = input.number();
    Some(match input.byte() % 10 {
        0 => return None,
        1 | 2 => (4, (n as u32).to_le_bytes().to_vec()),                 // u32
        3 => (5, (n as i32).to_le_bytes().to_vec()),                      // i32
        4 => (10, n.to_le_bytes().to_vec()),                              // u64
        5 => (6, (n as f32 * 1e-3).to_le_bytes().to_vec()),               // f32
        6 => (12, f64::from_bits(n).to_le_bytes().to_vec()),              // f64, any bits
        7 => {
            let mut s = Vec::new();
            gstr(&mut s, ["linear", "none", "yarn", "7"][n as usize % 4]);
            (8, s)                                                        // string
        }
        8 => (7, vec![(n & 1) as u8]),                                    // bool
        _ => (1, vec![n as u8]),                                          // i8
    })
}

/// A GGUF v3 file of the metadata the input describes and one F32 `token_embd.weight`.
fn build(input: &mut Input) -> Vec<u8> {
    let arch = ARCHS[input.byte() as usize % ARCHS.len()];
    let mut kvs: Vec<(String, u32, Vec<u8>)> = Vec::new();
    if input.byte() % 8 != 0 {
        let mut s = Vec::new();
        gstr(&mut s, arch);
        kvs.push(("general.architecture".into(), 8, s));
    }
    for key in KEYS {
        if let Some((ty, bytes)) = value(input) {
            kvs.push((format!("{arch}.{key}"), ty, bytes));
        }
    }
    let rows = input.byte() as u64 % 64;
    let cols = input.byte() as u64 % 64;
    let with_tensor = input.byte() % 8 != 0;

    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(with_tensor as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (key, ty, bytes) in &kvs {
        gstr(&mut out, key);
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    if with_tensor {
        gstr(&mut out, "token_embd.weight");
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&cols.to_le_bytes()); // ggml order: row length first
        out.extend_from_slice(&rows.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // F32
        out.extend_from_slice(&0u64.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(32), 0);
    if with_tensor {
        out.resize(out.len() + (rows * cols * 4) as usize, 0);
    }
    out
}

fn check(cfg: &ModelConfig) {
    assert!(cfg.dim >= 1 && cfg.n_layers >= 1 && cfg.ffn_dim >= 1 && cfg.vocab_size >= 1);
    assert!(cfg.heads >= 1 && cfg.kv_heads >= 1 && cfg.heads % cfg.kv_heads == 0);
    assert!(cfg.head_dim >= 1);
    assert!(cfg.rope.n_rot <= cfg.head_dim && cfg.rope.n_rot % 2 == 0);
    assert!(cfg.rms_eps.is_finite() && cfg.rms_eps >= 0.0);
    assert!(cfg.rope.theta.is_finite() && cfg.rope.theta > 0.0);
    assert!(cfg.rope_linear_scale.is_finite() && cfg.rope_linear_scale > 0.0);
    assert!(cfg.context_length >= 1);
    // the sizes the model will allocate are computable
    assert!(cfg.q_dim().checked_mul(cfg.dim).is_some());
    assert!(cfg.kv_dim().checked_mul(cfg.dim).is_some());
    assert!(cfg.ffn_dim.checked_mul(cfg.dim).is_some());
    assert!(cfg.vocab_size.checked_mul(cfg.dim).is_some());
}

fuzz_target!(|data: &[u8]| {
    let bytes = build(&mut Input(data));
    let file = GgufFile::from_bytes(bytes).expect("the file written here is well-formed GGUF");
    match ModelConfig::from_gguf(&file) {
        Ok(cfg) => {
            check(&cfg);
            // one tensor only: loading stops at the first missing one, cleanly
            match model::load(&file, "cpu", Some(4), None, &[]) {
                Err(Error::Gguf(m)) | Err(Error::Unsupported(m)) => assert!(!m.is_empty()),
                Err(other) => panic!("loading: {other:?}"),
                Ok(_) => panic!("a model loaded from a file with one tensor"),
            }
        }
        Err(Error::Gguf(m)) | Err(Error::Unsupported(m)) => assert!(!m.is_empty()),
        Err(other) => panic!("config: {other:?}"),
    }
});
