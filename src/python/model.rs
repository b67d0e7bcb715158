//! Python bindings of a model: `rocmforge.Model` and its streaming iterator.
//!
//! The engine sits behind a Mutex that is always taken with the GIL released, so one Model
//! used from several threads serializes its calls without deadlocking; long work polls for
//! Ctrl-C between tokens (`KeyboardInterrupt`, the model stays usable).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::gguf::meta_to_py;
use super::IntoPy;
use crate::chat::ChatMessage;
use crate::device::tuning::Tuning;
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::generate::{Engine, GenerateParams, Generation, Stats};
use crate::gguf::GgufFile;
use crate::model;
use crate::sampling::SamplingParams;

/// Poll Python for pending signals (Ctrl-C) from code running without the GIL.
pub(super) fn check_signals() -> Result<()> {
    Python::attach(|py| py.check_signals()).map_err(|_| Error::Interrupted)
}

/// Fault the memory-mapped tensor data in from disk (one read per page), polling Ctrl-C between
/// chunks: reading the file is most of a load, and this makes it interruptible and measurable.
/// `progress` draws a bar on stderr (callers pass it only for a terminal).
fn page_in(file: &GgufFile, label: &str, progress: bool) -> Result<()> {
    use std::io::Write;
    const CHUNK: usize = 16 << 20;
    const PAGE: usize = 4096;
    let data = &file.bytes()[(file.data_offset as usize).min(file.bytes().len())..];
    let total = data.len().max(1);
    let mut checksum = 0u8;
    let draw = |done: usize| {
        const WIDTH: usize = 30;
        let filled = WIDTH * done / total;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{label} [{}{}] {:3}% {:.0}/{:.0} MiB",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            100 * done / total,
            done as f64 / (1 << 20) as f64,
            data.len() as f64 / (1 << 20) as f64
        );
        let _ = err.flush();
    };
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        check_signals()?;
        for page in chunk.chunks(PAGE) {
            checksum = checksum.wrapping_add(page[0]);
        }
        if progress {
            draw((i * CHUNK + chunk.len()).min(data.len()));
        }
    }
    std::hint::black_box(checksum);
    Ok(())
}

/// A GGUF language model on a device: `Model(path=None, device="auto", n_ctx=None, seed=None,
/// verbose=False, kv_dtype=None, tuning=None)`.
///
/// Args:
///     path: a .gguf file; None loads the default model (SmolLM2-135M-Instruct Q4_1, fetched
///         into ~/.cache/rocmforge on first use; the ROCMFORGE_MODEL variable overrides it).
///     device: "cpu", "gpu" (the first GPU; an error when there is none) or "auto" (the first
///         GPU found, else the CPU). `rocmforge.devices()` lists them.
///     n_ctx: the KV cache's length in tokens; None is the file's context length capped at 4096.
///     seed: seeds the generator that draws a seed for each call made without one.
///     verbose: print a progress bar while loading (on a terminal) and a summary line (stderr).
///     kv_dtype: "f32" or "f16"; None is "f16" on a GPU and "f32" on the CPU.
///     tuning: a dict overriding fields of the GPU's tuning record for this model (speed
///         only: which kernels and launch shapes run; docs/TUNING.md lists the fields, and
///         `rocmforge.devices()` shows each GPU's record); None keeps the device's. Unknown
///         fields and bad values raise ValueError. The CPU has none (the dict is checked).
///
/// Raises FileNotFoundError, GGUFError (malformed file or metadata), UnsupportedError (an
/// architecture or tensor type rocmforge cannot run), DeviceError / OutOfMemoryError, and
/// KeyboardInterrupt (Ctrl-C while the file is read).
///
/// One Model may be used from several threads: its calls run one at a time, with the GIL
/// released. It is a context manager (`close()` on exit).
#[pyclass(name = "Model", module = "rocmforge", frozen)]
pub struct PyModel {
    engine: Mutex<Option<Engine>>,
    path: String,
    device: String,
    /// The file's metadata as a dict (built at load).
    metadata: Py<PyDict>,
    config: Py<PyDict>,
    /// Parameters of all tensors in the file.
    n_params: u64,
    /// Tensor types and how many tensors have each, the most common first.
    types: Vec<(String, usize)>,
    /// The tuning record the model runs with (GPU models), and how it differs from the
    /// built-in defaults (`key=value, ...`; empty: none).
    tuning: Option<Tuning>,
    /// What the decode plan runs, a line a kind of launch (GPU models).
    plan: Vec<String>,
}

/// A Python dict of tuning overrides as `key=value` text pairs (`Tuning::set` parses them):
/// booleans as true/false, numbers as they print, None as "auto".
pub(super) fn tuning_pairs(d: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    let Some(d) = d else {
        return Ok(Vec::new());
    };
    d.iter()
        .map(|(k, v)| {
            let key: String = k.extract().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err(format!(
                    "tuning keys must be strings, got {k}"
                ))
            })?;
            let value = if v.is_none() {
                "auto".to_string()
            } else if let Ok(b) = v.extract::<bool>() {
                b.to_string()
            } else {
                v.str()?.to_string()
            };
            Ok((key, value))
        })
        .collect()
}

/// What loading a model takes, checked from Python's arguments (`Model` and `Server`).
pub(super) struct LoadArgs {
    /// None: the default model (fetched on first use).
    pub path: Option<std::path::PathBuf>,
    pub device: String,
    pub n_ctx: Option<usize>,
    pub seed: Option<u64>,
    pub kv_dtype: Option<KvDtype>,
    pub tuning: Vec<(String, String)>,
}

impl LoadArgs {
    pub fn new(
        path: Option<std::path::PathBuf>,
        device: &str,
        n_ctx: Option<i64>,
        seed: Option<u64>,
        kv_dtype: Option<&str>,
        tuning: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<LoadArgs> {
        let tuning = tuning_pairs(tuning)?;
        let n_ctx = match n_ctx {
            Some(n) if n < 1 => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "n_ctx must be >= 1, got {n}"
                )))
            }
            Some(n) => Some(n as usize),
            None => None,
        };
        let kv_dtype = match kv_dtype.map(|s| s.to_ascii_lowercase()) {
            None => None,
            Some(s) if s == "f32" => Some(KvDtype::F32),
            Some(s) if s == "f16" => Some(KvDtype::F16),
            Some(s) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "kv_dtype must be \"f32\" or \"f16\", got {s:?}"
                )))
            }
        };
        Ok(LoadArgs {
            path,
            device: device.to_string(),
            n_ctx,
            seed,
            kv_dtype,
            tuning,
        })
    }

    /// The file's path (the default model's, fetched on first use, when none was given).
    pub fn resolve_path(&self, py: Python<'_>) -> PyResult<std::path::PathBuf> {
        match &self.path {
            Some(p) => Ok(p.clone()),
            None => py
                .import("rocmforge._models")?
                .call_method0("default_model_path")?
                .extract::<std::path::PathBuf>(),
        }
    }

    /// Open the file, read it in (a progress bar when `verbose` on a terminal) and load the
    /// model and its engine, with the GIL released. Returns the path too.
    pub fn load(
        &self,
        py: Python<'_>,
        verbose: bool,
    ) -> PyResult<(std::path::PathBuf, GgufFile, Engine, Option<Tuning>)> {
        let path = self.resolve_path(py)?;
        let progress = verbose && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let label = format!(
            "rocmforge: loading {}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let (file, engine, tuning) = py
            .detach(|| -> Result<(GgufFile, Engine, Option<Tuning>)> {
                let file = GgufFile::open(&path)?;
                page_in(&file, &label, progress)?;
                let loaded =
                    model::load(&file, &self.device, self.n_ctx, self.kv_dtype, &self.tuning);
                if progress {
                    eprint!("\r\x1b[K"); // clear the bar's line
                }
                let (m, tuning) = loaded?;
                let engine = Engine::new(m, &file, self.seed)?;
                Ok((file, engine, tuning))
            })
            .py()?;
        Ok((path, file, engine, tuning))
    }
}

/// Sampling arguments shared by `generate` and `chat`, as Python passes them.
struct Request {
    max_tokens: i64,
    temperature: f64,
    top_k: i64,
    top_p: f64,
    min_p: f64,
    repeat_penalty: f64,
    seed: Option<u64>,
    stop: Vec<String>,
    logprobs: Option<i64>,
}

impl Request {
    fn params(&self) -> Result<GenerateParams> {
        if self.max_tokens < 0 {
            return Err(Error::invalid(format!(
                "max_tokens must be >= 0, got {}",
                self.max_tokens
            )));
        }
        if self.top_k < 0 {
            return Err(Error::invalid(format!(
                "top_k must be >= 0, got {}",
                self.top_k
            )));
        }
        let sampling = SamplingParams {
            temperature: self.temperature as f32,
            top_k: self.top_k as usize,
            top_p: self.top_p as f32,
            min_p: self.min_p as f32,
            repeat_penalty: self.repeat_penalty as f32,
            ..SamplingParams::default()
        };
        sampling.check()?;
        let logprobs = match self.logprobs {
            Some(n) if !(0..=crate::ops::sampling::MAX_TOP as i64).contains(&n) => {
                return Err(Error::invalid(format!(
                    "logprobs must be in [0, {}], got {n}",
                    crate::ops::sampling::MAX_TOP
                )))
            }
            n => n.map(|n| n as usize),
        };
        Ok(GenerateParams {
            max_tokens: self.max_tokens as usize,
            sampling,
            seed: self.seed,
            stop: self.stop.clone(),
            logprobs,
        })
    }
}

/// `stop`: None, a string, or a sequence of strings.
fn parse_stop(stop: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let Some(stop) = stop else { return Ok(vec![]) };
    if stop.is_none() {
        return Ok(vec![]);
    }
    if let Ok(s) = stop.cast::<PyString>() {
        return Ok(vec![s.to_string()]);
    }
    stop.extract::<Vec<String>>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err("stop must be None, a string or a list of strings")
    })
}

impl PyModel {
    /// Lock the engine (call without the GIL). A poisoned lock (a panic mid-call) is recovered:
    /// the cache bookkeeping is reset, the model stays usable.
    fn lock(&self) -> Result<MutexGuard<'_, Option<Engine>>> {
        let guard = match self.engine.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                self.engine.clear_poison();
                let mut g = poisoned.into_inner();
                if let Some(e) = g.as_mut() {
                    e.reset_cache();
                }
                g
            }
        };
        if guard.is_none() {
            return Err(Error::runtime(format!("Model {:?} is closed", self.path)));
        }
        Ok(guard)
    }

    /// Run `f` on the engine with the GIL released.
    fn with_engine<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Engine) -> Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut guard = self.lock()?;
            f(guard.as_mut().expect("checked by lock"))
        })
        .py()
    }

    /// Start a generation from a prompt's text (`add_bos`: None = the file's default).
    fn start(
        slf: &Bound<'_, Self>,
        prompt: String,
        add_bos: Option<bool>,
        req: Request,
        stream: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let params = req.params().py()?;
        if stream && params.logprobs.is_some() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "logprobs is not available with stream=True",
            ));
        }
        if params.logprobs.is_some() {
            let (text, scored, finish, tokenizer_pieces) = this.with_engine(py, |e| {
                let ids = e.tokenizer.encode(&prompt, add_bos, true);
                let (text, scored) =
                    crate::generate::generate_scored(e, ids, params, &mut check_signals)?;
                let piece = |id: u32| e.tokenizer.decode_with(&[id], true);
                let mut pieces = std::collections::HashMap::new();
                for t in &scored {
                    for id in std::iter::once(t.id).chain(t.top.iter().map(|p| p.0)) {
                        if let std::collections::hash_map::Entry::Vacant(v) = pieces.entry(id) {
                            v.insert(piece(id)?);
                        }
                    }
                }
                Ok((text, scored, e.stats.finish_reason, pieces))
            })?;
            let token = |id: u32, logprob: f32| -> PyResult<Bound<'_, PyDict>> {
                let d = PyDict::new(py);
                d.set_item("id", id)?;
                d.set_item("text", &tokenizer_pieces[&id])?;
                d.set_item("logprob", logprob)?;
                Ok(d)
            };
            let tokens = PyList::empty(py);
            for t in &scored {
                let d = token(t.id, t.logprob)?;
                let top = PyList::empty(py);
                for &(id, lp) in &t.top {
                    top.append(token(id, lp)?)?;
                }
                d.set_item("top", top)?;
                tokens.append(d)?;
            }
            let out = PyDict::new(py);
            out.set_item("text", text)?;
            out.set_item("finish_reason", finish.map(|r| r.name()))?;
            out.set_item("tokens", tokens)?;
            return Ok(out.into_any().unbind());
        }
        if stream {
            let generation = this.with_engine(py, |e| {
                let ids = e.tokenizer.encode(&prompt, add_bos, true);
                Generation::new(e, ids, params)
            })?;
            let it = PyGenerationStream {
                model: slf.clone().unbind(),
                state: Mutex::new(generation),
            };
            return Ok(Py::new(py, it)?.into_any());
        }
        let text = this.with_engine(py, |e| {
            let ids = e.tokenizer.encode(&prompt, add_bos, true);
            crate::generate::generate_text(e, ids, params, &mut check_signals)
        })?;
        Ok(text.into_pyobject(py)?.into_any().unbind())
    }
}

#[pymethods]
impl PyModel {
    #[new]
    #[pyo3(signature = (path=None, device="auto", n_ctx=None, seed=None, verbose=false, kv_dtype=None, tuning=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: Option<std::path::PathBuf>,
        device: &str,
        n_ctx: Option<i64>,
        seed: Option<u64>,
        verbose: bool,
        kv_dtype: Option<&str>,
        tuning: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let args = LoadArgs::new(path, device, n_ctx, seed, kv_dtype, tuning)?;
        let t0 = std::time::Instant::now();
        let (path, file, engine, tuning) = args.load(py, verbose)?;
        let plan = engine.model.plan();
        let metadata = PyDict::new(py);
        for (k, v) in &file.metadata {
            metadata.set_item(k, meta_to_py(py, v)?)?;
        }
        let c = engine.model.config();
        let config = PyDict::new(py);
        config.set_item("architecture", c.arch.name())?;
        config.set_item("dim", c.dim)?;
        config.set_item("n_layers", c.n_layers)?;
        config.set_item("ffn_dim", c.ffn_dim)?;
        config.set_item("heads", c.heads)?;
        config.set_item("kv_heads", c.kv_heads)?;
        config.set_item("head_dim", c.head_dim)?;
        config.set_item("vocab_size", c.vocab_size)?;
        config.set_item("context_length", c.context_length)?;
        config.set_item("rms_eps", c.rms_eps)?;
        config.set_item("rope_theta", c.rope.theta)?;
        config.set_item("rope_neox", c.rope.neox)?;
        config.set_item("rope_dims", c.rope.n_rot)?;
        config.set_item("tied_embeddings", c.tied_embeddings)?;
        config.set_item("n_ctx", engine.model.n_ctx())?;
        config.set_item("kv_dtype", engine.model.kv_dtype().name())?;
        let n_params: u64 = file.tensors.iter().map(|t| t.n_elements).sum();
        config.set_item("n_params", n_params)?;
        let mut types: BTreeMap<String, usize> = BTreeMap::new();
        for t in &file.tensors {
            *types.entry(t.ggml_type.to_string()).or_default() += 1;
        }
        let mut types: Vec<(String, usize)> = types.into_iter().collect();
        types.sort_by_key(|t| std::cmp::Reverse(t.1));
        let device_name = engine.model.device_name();
        if verbose {
            let msg = format!(
                "rocmforge: loaded {} ({} {} layers, {:.1} MiB on {device_name}, n_ctx {}) in {:.2} s",
                path.display(),
                c.arch.name(),
                c.n_layers,
                engine.model.nbytes() as f64 / (1 << 20) as f64,
                engine.model.n_ctx(),
                t0.elapsed().as_secs_f64()
            );
            py.import("sys")?
                .getattr("stderr")?
                .call_method1("write", (msg + "\n",))?;
        }
        Ok(PyModel {
            engine: Mutex::new(Some(engine)),
            path: path.display().to_string(),
            device: device_name,
            metadata: metadata.unbind(),
            config: config.unbind(),
            n_params,
            types,
            tuning,
            plan,
        })
    }

    /// The tuning record this model runs with, as a dict (None on the CPU). See `tuning=`.
    #[getter]
    fn tuning<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.tuning.as_ref().map(|t| tuning_dict(py, t)).transpose()
    }

    /// What the GPU's decode plan runs for one token, a line a kind of launch: the fused
    /// kernels it applied (and where an RMS norm went), and the ops it runs as they are.
    /// Empty on the CPU, which runs the block op by op.
    #[getter]
    fn plan(&self) -> Vec<String> {
        self.plan.clone()
    }

    /// Generate text after `prompt`.
    ///
    /// Args:
    ///     prompt: the text to continue (tokenized with the file's tokenizer; BOS per the file's
    ///         `add_bos_token`; special-token text such as `<|im_start|>` is parsed).
    ///     max_tokens: at most this many new tokens (default 128; 0 returns "").
    ///     temperature: 0 is greedy (argmax, lowest id on ties); higher is more random (0.8).
    ///     top_k: keep the k most likely tokens (40; 0 keeps all).
    ///     top_p: keep the smallest set of tokens whose probability reaches p (0.95; 1 keeps all).
    ///     min_p: drop tokens less likely than min_p times the best one (0.05; 0 keeps all).
    ///     repeat_penalty: divide the logits of tokens already seen (1.0: off).
    ///     seed: makes the draws repeatable (None: drawn from the Model's generator).
    ///     stop: a string or list of strings; the text ends before the first one (not included).
    ///     stream: False returns the whole text; True returns a `GenerationStream`, an
    ///         iterator of text pieces as they are generated (`for piece in ...: print(piece, end="")`).
    ///     logprobs: None returns text; n (0 to 20) returns a dict instead: "text",
    ///         "finish_reason", and "tokens", a list with a dict per generated token: "id",
    ///         "text" (its piece), "logprob" (log-softmax of the model's logits, before
    ///         penalties, temperature and filters, as OpenAI's `logprobs`) and "top" (the n
    ///         most likely tokens as dicts of id, text, logprob, best first). Not with stream.
    ///
    /// Generation ends at an end-of-generation token (finish_reason "eos"), a stop string
    /// ("stop"), or after `max_tokens` or at the end of the context ("length"); `stats` then
    /// holds the token counts, the finish reason and the prefill/decode speeds.
    ///
    /// Raises:
    ///     ValueError: bad sampling values, or a prompt longer than the context.
    ///     TypeError: `stop` is not a string or a list of strings.
    ///     KeyboardInterrupt: Ctrl-C (checked between tokens); the model stays usable.
    ///     RocmForgeError: the model is closed, or it produced NaN logits.
    ///     DeviceError: a GPU failure.
    #[pyo3(signature = (prompt, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
                        repeat_penalty=1.0, seed=None, stop=None, stream=false, logprobs=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        slf: &Bound<'_, Self>,
        prompt: String,
        max_tokens: i64,
        temperature: f64,
        top_k: i64,
        top_p: f64,
        min_p: f64,
        repeat_penalty: f64,
        seed: Option<u64>,
        stop: Option<&Bound<'_, PyAny>>,
        stream: bool,
        logprobs: Option<i64>,
    ) -> PyResult<Py<PyAny>> {
        let stop = parse_stop(stop)?;
        let req = Request {
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
            stop,
            logprobs,
        };
        Self::start(slf, prompt, None, req, stream)
    }

    /// Answer a conversation and return the assistant's reply (or a stream of its pieces).
    ///
    /// `messages` is a list of `{"role": "system" | "user" | "assistant", "content": str}`
    /// dicts, rendered with the file's `tokenizer.chat_template` (Jinja) and an assistant
    /// prompt. The keywords and their defaults are those of `generate`.
    ///
    /// Raises:
    ///     TypeError: `messages` is not a list of dicts of strings.
    ///     ValueError: the file has no chat template, or the template fails to render;
    ///         otherwise as `generate`.
    ///     KeyboardInterrupt: Ctrl-C (checked between tokens); the model stays usable.
    #[pyo3(signature = (messages, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
                        repeat_penalty=1.0, seed=None, stop=None, stream=false, logprobs=None))]
    #[allow(clippy::too_many_arguments)]
    fn chat(
        slf: &Bound<'_, Self>,
        messages: &Bound<'_, PyAny>,
        max_tokens: i64,
        temperature: f64,
        top_k: i64,
        top_p: f64,
        min_p: f64,
        repeat_penalty: f64,
        seed: Option<u64>,
        stop: Option<&Bound<'_, PyAny>>,
        stream: bool,
        logprobs: Option<i64>,
    ) -> PyResult<Py<PyAny>> {
        let messages = parse_messages(messages)?;
        let stop = parse_stop(stop)?;
        let req = Request {
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
            stop,
            logprobs,
        };
        let (prompt, add_bos) = slf
            .get()
            .with_engine(slf.py(), |e| chat_prompt(e, &messages))?;
        Self::start(slf, prompt, add_bos, req, stream)
    }

    /// The prompt text `chat(messages)` generates from: the file's `tokenizer.chat_template`
    /// rendered for `messages` (as Hugging Face's `apply_chat_template` renders it, with
    /// `add_generation_prompt=True`), the assistant's turn opened.
    ///
    /// Raises:
    ///     TypeError: `messages` is not a list of dicts of strings.
    ///     ValueError: the file has no chat template, or the template fails to render.
    fn apply_chat_template(&self, py: Python<'_>, messages: &Bound<'_, PyAny>) -> PyResult<String> {
        let messages = parse_messages(messages)?;
        self.with_engine(py, |e| Ok(chat_prompt(e, &messages)?.0))
    }

    /// Generate from token ids (no BOS is added), returning the generated ids (an ending
    /// EOS/EOT token included). The sampling keywords and defaults are those of `generate`.
    ///
    /// Raises ValueError for an id outside the vocabulary and KeyboardInterrupt on Ctrl-C.
    #[pyo3(signature = (ids, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
                        repeat_penalty=1.0, seed=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate_tokens(
        &self,
        py: Python<'_>,
        ids: Vec<Bound<'_, PyAny>>,
        max_tokens: i64,
        temperature: f64,
        top_k: i64,
        top_p: f64,
        min_p: f64,
        repeat_penalty: f64,
        seed: Option<u64>,
    ) -> PyResult<Vec<u32>> {
        let req = Request {
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
            stop: vec![],
            logprobs: None,
        };
        let params = req.params().py()?;
        let ids = py_ints(&ids)?;
        self.with_engine(py, |e| {
            let ids = to_ids(&ids, e.vocab_size())?;
            crate::generate::generate_ids(e, ids, params, &mut check_signals)
        })
    }

    /// Generate after each of `prompts` (a list of strings), several at a time: returns the
    /// texts, in the order of `prompts`.
    ///
    /// Up to `max_batch` prompts run together, each with a KV cache of its own (n_ctx
    /// positions; made for the call and freed after it); a prompt starts as soon as another
    /// ends. Each step evaluates one token of every running generation at once, reading the
    /// weights once for all of them. Each text is the one `generate` gives for that prompt
    /// alone with the same `seed` (at temperature 0, whatever the seed; up to the last bits of
    /// rounding, which can only matter at near-ties). The other keywords and their defaults are
    /// those of `generate`; `seed` None draws one seed per prompt.
    ///
    /// Raises:
    ///     ValueError: `max_batch` < 1, a batch larger than the model takes (n_ctx or 512 rows),
    ///         bad sampling values, or a prompt longer than the context.
    ///     TypeError: `prompts` is not a list of strings, or `stop` not a string or list of them.
    ///     KeyboardInterrupt: Ctrl-C (checked between steps); the model stays usable.
    ///     OutOfMemoryError: the caches of `max_batch` sequences do not fit the device.
    #[pyo3(signature = (prompts, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
                        repeat_penalty=1.0, seed=None, stop=None, max_batch=8))]
    #[allow(clippy::too_many_arguments)]
    fn generate_batch(
        &self,
        py: Python<'_>,
        prompts: Vec<String>,
        max_tokens: i64,
        temperature: f64,
        top_k: i64,
        top_p: f64,
        min_p: f64,
        repeat_penalty: f64,
        seed: Option<u64>,
        stop: Option<&Bound<'_, PyAny>>,
        max_batch: i64,
    ) -> PyResult<Vec<String>> {
        let stop = parse_stop(stop)?;
        let req = Request {
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
            stop,
            logprobs: None,
        };
        let params = req.params().py()?;
        if max_batch < 1 {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "max_batch must be at least 1, got {max_batch}"
            )));
        }
        let texts = self.with_engine(py, |e| {
            let ids = prompts
                .iter()
                .map(|p| e.tokenizer.encode(p, None, true))
                .collect();
            crate::generate::generate_batch(e, ids, &params, max_batch as usize, &mut check_signals)
        })?;
        Ok(texts.into_iter().map(|(text, _)| text).collect())
    }

    /// Token ids of `text`; `add_bos` None follows the file's `add_bos_token`; `special`
    /// parses special-token text such as `<|im_start|>`.
    #[pyo3(signature = (text, add_bos=None, special=true))]
    fn tokenize(
        &self,
        py: Python<'_>,
        text: String,
        add_bos: Option<bool>,
        special: bool,
    ) -> PyResult<Vec<u32>> {
        self.with_engine(py, |e| Ok(e.tokenizer.encode(&text, add_bos, special)))
    }

    /// The text of token ids (ids outside the vocabulary are a ValueError); `special`
    /// renders control tokens such as `<|im_end|>` as their text.
    #[pyo3(signature = (ids, special=true))]
    fn detokenize(
        &self,
        py: Python<'_>,
        ids: Vec<Bound<'_, PyAny>>,
        special: bool,
    ) -> PyResult<String> {
        let ids = py_ints(&ids)?;
        self.with_engine(py, |e| {
            let ids = to_ids(&ids, e.vocab_size())?;
            e.tokenizer.decode_with(&ids, special)
        })
    }

    /// Logits of every position of `ids` in a fresh context (no BOS is added): a float32
    /// array of shape `[len(ids), vocab_size]`; row i scores the token after `ids[:i+1]`.
    ///
    /// Raises ValueError for an empty list, an id outside the vocabulary or more ids than
    /// `n_ctx`; KeyboardInterrupt on Ctrl-C (checked between chunks of positions).
    fn logits<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, numpy::PyArrayDyn<f32>>> {
        let ids = py_ints(&ids)?;
        let (out, vocab) = self.with_engine(py, |e| {
            let ids = to_ids(&ids, e.vocab_size())?;
            Ok((e.logits_all(&ids, &mut check_signals)?, e.vocab_size()))
        })?;
        let rows = out.len() / vocab;
        PyArray1::from_vec(py, out).reshape(vec![rows, vocab])
    }

    /// The file's metadata (a dict like `GGUFFile.metadata`).
    #[getter]
    fn metadata(&self, py: Python<'_>) -> Py<PyDict> {
        self.metadata.clone_ref(py)
    }

    /// The model's hyperparameters and the context settings, a new dict: architecture, dim,
    /// n_layers, ffn_dim, heads, kv_heads, head_dim, vocab_size, context_length, rms_eps,
    /// rope_theta, rope_neox, rope_dims, tied_embeddings, n_ctx, kv_dtype, n_params.
    #[getter]
    fn config(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        Ok(self.config.bind(py).copy()?.unbind())
    }

    /// The device the model runs on ("cpu" or the GPU's name).
    #[getter]
    fn device(&self) -> String {
        self.device.clone()
    }

    /// The model file's path.
    #[getter]
    fn path(&self) -> String {
        self.path.clone()
    }

    /// Counters of the last generate/chat call (one Model shares them across threads), a new
    /// dict: prompt_tokens, generated_tokens, finish_reason ("stop" | "eos" | "length"; None
    /// while a stream runs or after an interrupted call), prefill_tokens_per_s,
    /// decode_tokens_per_s, prefill_tokens (those evaluated: a prompt prefix already in the KV
    /// cache is reused), prefill_seconds, decode_steps (the one-token steps after the
    /// prefill), decode_seconds.
    #[getter]
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let s: Stats = self.with_engine(py, |e| Ok(e.stats.clone()))?;
        let d = PyDict::new(py);
        d.set_item("prompt_tokens", s.prompt_tokens)?;
        d.set_item("generated_tokens", s.generated_tokens)?;
        d.set_item("finish_reason", s.finish_reason.map(|r| r.name()))?;
        d.set_item("prefill_tokens_per_s", s.prefill_tokens_per_s())?;
        d.set_item("decode_tokens_per_s", s.decode_tokens_per_s())?;
        d.set_item("prefill_tokens", s.prefill_tokens)?;
        d.set_item("prefill_seconds", s.prefill_seconds)?;
        d.set_item("decode_steps", s.decode_steps)?;
        d.set_item("decode_seconds", s.decode_seconds)?;
        Ok(d.unbind())
    }

    /// Free the model's memory. Later calls raise RocmForgeError; closing twice is fine.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            let mut g = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            *g = None;
        });
    }

    /// Whether `close()` has been called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        py.detach(|| self.engine.lock().map(|g| g.is_none()).unwrap_or(false))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let c = self.config.bind(py);
        let get = |k: &str| {
            c.get_item(k)
                .ok()
                .flatten()
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        let types: Vec<String> = self
            .types
            .iter()
            .map(|(t, n)| format!("{t}: {n}"))
            .collect();
        let tuning = match &self.tuning {
            Some(t) => match t.diff(&Tuning::default()) {
                d if d.is_empty() => ", tuning=default".to_string(),
                d => format!(", tuning={{{d}}}"),
            },
            None => String::new(),
        };
        format!(
            "Model({:?}, architecture={}, parameters={}, types={{{}}}, layers={}, device={:?}, n_ctx={}, kv_dtype={}{tuning}{})",
            self.path,
            get("architecture"),
            human_count(self.n_params),
            types.join(", "),
            get("n_layers"),
            self.device,
            get("n_ctx"),
            get("kv_dtype"),
            if self.closed(py) { ", closed" } else { "" }
        )
    }
}

/// Python ints (or NumPy integers) as i64: anything else is a TypeError, an int beyond 64 bits
/// a ValueError (no token has such an id).
fn py_ints(ids: &[Bound<'_, PyAny>]) -> PyResult<Vec<i64>> {
    ids.iter()
        .map(|x| {
            x.extract::<i64>().map_err(|e| {
                if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(x.py()) {
                    pyo3::exceptions::PyValueError::new_err(format!(
                        "token id {x} is outside the vocabulary"
                    ))
                } else {
                    pyo3::exceptions::PyTypeError::new_err(format!(
                        "token ids must be ints, got {}",
                        x.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ))
                }
            })
        })
        .collect()
}

/// 134515008 -> "134.5M", 7241732096 -> "7.24B", 1234 -> "1234".
fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// `messages`: a list of dicts of strings.
fn parse_messages(messages: &Bound<'_, PyAny>) -> PyResult<Vec<ChatMessage>> {
    messages.extract::<Vec<BTreeMap<String, String>>>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(
            "messages must be a list of dicts of strings, e.g. [{\"role\": \"user\", \"content\": \"Hi\"}]",
        )
    })
}

/// The chat prompt for `messages` and the `add_bos` to tokenize it with (`chat::chat_prompt`).
fn chat_prompt(e: &Engine, messages: &[ChatMessage]) -> Result<(String, Option<bool>)> {
    let template = e.chat_template.as_deref().ok_or_else(|| {
        Error::invalid("this model file has no tokenizer.chat_template; use generate()")
    })?;
    crate::chat::chat_prompt(template, &e.tokenizer, messages)
}

/// Python ints to token ids, each checked against the vocabulary.
fn to_ids(ids: &[i64], vocab: usize) -> Result<Vec<u32>> {
    ids.iter()
        .map(|&t| {
            if t < 0 || t as u64 >= vocab as u64 {
                Err(Error::invalid(format!(
                    "token id {t} is outside the vocabulary (size {vocab})"
                )))
            } else {
                Ok(t as u32)
            }
        })
        .collect()
}

/// The iterator `Model.generate(..., stream=True)` returns: yields text pieces as they come.
/// The model's `stats` follow it; it holds the model (its lock only while computing a piece).
#[pyclass(name = "GenerationStream", module = "rocmforge", frozen)]
pub struct PyGenerationStream {
    model: Py<PyModel>,
    state: Mutex<Generation>,
}

#[pymethods]
impl PyGenerationStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let model = self.model.get();
        py.detach(|| -> Result<Option<String>> {
            let mut generation = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if generation.is_done() {
                return Ok(None);
            }
            let mut guard = model.lock()?;
            let engine = guard.as_mut().expect("checked by lock");
            generation.next_piece(engine, &mut check_signals)
        })
        .py()
    }

    /// The generation's finish reason so far (None while it runs).
    #[getter]
    fn finish_reason(&self, py: Python<'_>) -> Option<&'static str> {
        py.detach(|| {
            let generation = self.state.lock().unwrap_or_else(|p| p.into_inner());
            generation.finish_reason().map(|r| r.name())
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add_class::<PyGenerationStream>()?;
    Ok(())
}

/// A tuning record as a dict: booleans, integers, None for "auto", strings for choices.
pub(super) fn tuning_dict<'py>(py: Python<'py>, t: &Tuning) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in t.entries() {
        match v.as_str() {
            "true" => d.set_item(k, true)?,
            "false" => d.set_item(k, false)?,
            "auto" => d.set_item(k, py.None())?,
            other => match other.parse::<i64>() {
                Ok(n) => d.set_item(k, n)?,
                Err(_) => d.set_item(k, other)?,
            },
        }
    }
    Ok(d)
}
