//! Python bindings of the tokenizer: `Tokenizer(path)` and its streaming `Detokenizer`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::IntoPy;
use crate::tokenizer::{Detokenizer, Tokenizer};

/// The tokenizer of a GGUF file: `Tokenizer(path)`. Reads only the file's metadata, so
/// vocabulary-only files work. Token ids equal llama.cpp's for the same file and text.
///
/// Raises `FileNotFoundError` / `IsADirectoryError` / `PermissionError` for bad paths,
/// `GGUFError` for malformed tokenizer metadata (naming the key) and `UnsupportedError` for a
/// tokenizer model or pre-tokenizer that is not implemented.
#[pyclass(name = "Tokenizer", module = "rocmforge", frozen)]
pub struct PyTokenizer {
    inner: Arc<Tokenizer>,
}

/// Convert Python ids to u32, rejecting negative or oversized ones with a ValueError.
fn ids_u32(ids: Vec<i64>, vocab_size: usize) -> PyResult<Vec<u32>> {
    ids.into_iter()
        .map(|id| {
            u32::try_from(id)
                .ok()
                .filter(|&id| (id as usize) < vocab_size)
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "token id {id} is outside the vocabulary (0..{vocab_size})"
                    ))
                })
        })
        .collect()
}

#[pymethods]
impl PyTokenizer {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let tokenizer = py.detach(|| Tokenizer::open(&path)).py()?;
        Ok(PyTokenizer {
            inner: Arc::new(tokenizer),
        })
    }

    /// Token ids of `text`. `add_bos=None` follows the file's `add_bos_token` (and
    /// `add_eos_token`); True adds BOS; False adds nothing. `special=True` turns text such as
    /// `<|im_start|>` into its control token; False tokenizes it as plain text.
    #[pyo3(signature = (text, add_bos=None, special=true))]
    fn tokenize(
        &self,
        py: Python<'_>,
        text: &str,
        add_bos: Option<bool>,
        special: bool,
    ) -> PyResult<Vec<u32>> {
        if add_bos == Some(true) && self.inner.bos().is_none() {
            return Err(PyValueError::new_err(
                "add_bos=True, but this vocabulary has no BOS token",
            ));
        }
        let tokenizer = &self.inner;
        Ok(py.detach(|| tokenizer.encode(text, add_bos, special)))
    }

    /// Text of `ids`. `special=True` renders control tokens (`<|im_end|>`) as their text.
    /// Bytes that do not form valid UTF-8 become U+FFFD. Ids outside the vocabulary raise
    /// ValueError.
    #[pyo3(signature = (ids, special=true))]
    fn detokenize(&self, py: Python<'_>, ids: Vec<i64>, special: bool) -> PyResult<String> {
        let ids = ids_u32(ids, self.inner.vocab_size())?;
        let tokenizer = &self.inner;
        py.detach(|| tokenizer.decode_with(&ids, special)).py()
    }

    /// The bytes one token detokenizes to (a byte-fallback token is a single byte).
    #[pyo3(signature = (id, special=true))]
    fn token_to_piece<'py>(
        &self,
        py: Python<'py>,
        id: i64,
        special: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let id = ids_u32(vec![id], self.inner.vocab_size())?[0];
        Ok(PyBytes::new(py, self.inner.piece(id, special).py()?))
    }

    /// The token's text as stored in the vocabulary (e.g. "Ġthe", "▁the", "<0x0A>").
    fn token_text(&self, id: i64) -> PyResult<String> {
        let id = ids_u32(vec![id], self.inner.vocab_size())?[0];
        Ok(self.inner.vocab().text(id).to_owned())
    }

    /// Whether `id` ends generation (EOS, EOT, `<|im_end|>`-like tokens).
    fn is_eog(&self, id: i64) -> bool {
        u32::try_from(id).is_ok_and(|id| self.inner.is_eog(id))
    }

    /// A streaming detokenizer: `push(id)` returns only complete characters; `finish()` the rest.
    #[pyo3(signature = (special=true))]
    fn detokenizer(&self, special: bool) -> PyDetokenizer {
        PyDetokenizer {
            tokenizer: Arc::clone(&self.inner),
            stream: Mutex::new(self.inner.detokenizer(special)),
        }
    }

    /// Number of tokens in the vocabulary (ids are 0..vocab_size).
    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    /// The beginning-of-sequence token id, or None.
    #[getter]
    fn bos_id(&self) -> Option<u32> {
        self.inner.bos()
    }
    /// The end-of-sequence token id, or None.
    #[getter]
    fn eos_id(&self) -> Option<u32> {
        self.inner.eos()
    }
    /// The end-of-turn token id (e.g. `<|im_end|>`, `<|eot_id|>`), or None.
    #[getter]
    fn eot_id(&self) -> Option<u32> {
        self.inner.eot()
    }
    /// All end-of-generation ids, ascending.
    #[getter]
    fn eog_ids(&self) -> Vec<u32> {
        self.inner.eog_ids().collect()
    }
    /// Whether `tokenize(text)` adds BOS by default (the file's `add_bos_token`).
    #[getter]
    fn add_bos(&self) -> bool {
        self.inner.add_bos()
    }
    /// `tokenizer.ggml.model`: "llama" (SentencePiece), "gpt2" (byte-level BPE), "gemma4".
    #[getter]
    fn model(&self) -> String {
        self.inner.model_name().to_owned()
    }
    /// `tokenizer.ggml.pre` ("" when the file has none).
    #[getter]
    fn pre(&self) -> String {
        self.inner.pre_name().to_owned()
    }

    fn __len__(&self) -> usize {
        self.inner.vocab_size()
    }

    fn __repr__(&self) -> String {
        format!(
            "Tokenizer(model={:?}, pre={:?}, vocab_size={})",
            self.inner.model_name(),
            self.inner.pre_name(),
            self.inner.vocab_size()
        )
    }
}

/// Incremental detokenizer of one sequence (from `Tokenizer.detokenizer()`).
#[pyclass(name = "Detokenizer", module = "rocmforge", frozen)]
pub struct PyDetokenizer {
    tokenizer: Arc<Tokenizer>,
    stream: Mutex<Detokenizer>,
}

#[pymethods]
impl PyDetokenizer {
    /// Add one token id; returns the text it completes (often "", never half a character).
    fn push(&self, id: i64) -> PyResult<String> {
        let id = ids_u32(vec![id], self.tokenizer.vocab_size())?[0];
        let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        stream.push(&self.tokenizer, id).py()
    }

    /// End of the sequence: the held-back tail (an unfinished character becomes U+FFFD).
    fn finish(&self) -> String {
        let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        stream.finish()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTokenizer>()?;
    m.add_class::<PyDetokenizer>()?;
    Ok(())
}
