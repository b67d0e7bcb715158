//! Python bindings of the HTTP server: `rocmforge.Server`. The blocking `rocmforge.serve` is
//! Python over it (`python/rocmforge/_serve.py`), which also turns SIGTERM into a clean stop.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::model::{check_signals, LoadArgs};
use super::IntoPy;
use crate::error::{Error, Result};
use crate::serve::{Frontend, ServeConfig, Server};
use crate::tokenizer::Tokenizer;

/// An OpenAI-compatible HTTP server for one model: `Server(path=None, host="127.0.0.1",
/// port=8000, device="auto", n_ctx=None, api_key=None, queue_size=16, seed=None,
/// kv_dtype=None, tuning=None, model_name=None, verbose=False, max_batch=8)`.
///
/// `start()` loads the model and returns once the server listens; requests are then served
/// from threads of its own (the Python interpreter stays free) until `stop()`. It is a context
/// manager: `with rocmforge.Server(path, port=0) as server: ...` starts and stops it. For a
/// server that runs until Ctrl-C, see `rocmforge.serve`.
///
/// Endpoints: `POST /v1/chat/completions` and `POST /v1/completions` (the OpenAI protocol;
/// server-sent events when `"stream": true`), `GET /v1/models`, `GET /health`, `GET /metrics`
/// (Prometheus text). Up to `max_batch` requests run at once (continuous batching: each step
/// evaluates one token of every running request, and requests join and leave between steps);
/// further ones wait in arrival order, up to `queue_size`, and one more is answered 429 with
/// `Retry-After`. Each answer is the one the model gives that request alone. Bad requests are
/// answered 400 with OpenAI's error object, naming the field.
///
/// Args:
///     path, device, n_ctx, seed, kv_dtype, tuning: the model, as for `rocmforge.Model`.
///     host: the address to listen on; "127.0.0.1" (this machine only) unless you mean to
///         serve a network ("0.0.0.0").
///     port: the port; 0 picks a free one (`port` and `url` tell which, once started).
///     api_key: when set, every endpoint but /health needs the header
///         `Authorization: Bearer <api_key>` (401 otherwise).
///     queue_size: how many requests may wait for the model (at least 1).
///     max_batch: how many requests run at once (at least 1); each has a KV cache of
///         `n_ctx` positions, made when first needed and kept.
///     model_name: the model id `/v1/models` lists and answers carry (None: the file's name
///         without `.gguf`). The `model` field of requests is not checked.
///     verbose: print a progress bar while loading (on a terminal).
///
/// Raises (from `start`): as `rocmforge.Model` for the model; OSError when the address cannot
/// be bound (a port in use).
#[pyclass(name = "Server", module = "rocmforge", frozen)]
pub struct PyServer {
    load: LoadArgs,
    config: ServeConfig,
    model_name: Option<String>,
    verbose: bool,
    running: Mutex<Option<Running>>,
}

struct Running {
    server: Server,
    model_id: String,
}

impl PyServer {
    /// The running server's slot (call without the GIL).
    fn slot(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stop `server`: no new requests; accepted ones get `grace` to finish, then are cancelled.
    /// Ctrl-C while waiting cancels them at once (and raises KeyboardInterrupt).
    fn stop_running(mut r: Running, grace: Duration) -> Result<()> {
        r.server.begin_stop();
        let deadline = Instant::now() + grace;
        while !r.server.is_finished() {
            if Instant::now() >= deadline {
                r.server.abort();
            }
            if let Err(e) = check_signals() {
                r.server.abort();
                r.server.join();
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        r.server.join();
        Ok(())
    }
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (path=None, host="127.0.0.1", port=8000, device="auto", n_ctx=None,
                        api_key=None, queue_size=16, seed=None, kv_dtype=None, tuning=None,
                        model_name=None, verbose=false, max_batch=8))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        path: Option<std::path::PathBuf>,
        host: &str,
        port: i64,
        device: &str,
        n_ctx: Option<i64>,
        api_key: Option<String>,
        queue_size: i64,
        seed: Option<u64>,
        kv_dtype: Option<&str>,
        tuning: Option<&Bound<'_, PyDict>>,
        model_name: Option<String>,
        verbose: bool,
        max_batch: i64,
    ) -> PyResult<Self> {
        let load = LoadArgs::new(path, device, n_ctx, seed, kv_dtype, tuning)?;
        let value_error = pyo3::exceptions::PyValueError::new_err;
        let port = u16::try_from(port)
            .map_err(|_| value_error(format!("port must be in [0, 65535], got {port}")))?;
        if queue_size < 1 {
            return Err(value_error(format!(
                "queue_size must be >= 1, got {queue_size}"
            )));
        }
        if max_batch < 1 {
            return Err(value_error(format!(
                "max_batch must be >= 1, got {max_batch}"
            )));
        }
        if api_key.as_deref() == Some("") {
            return Err(value_error(
                "api_key must not be empty (None: no key)".to_string(),
            ));
        }
        let config = ServeConfig {
            host: host.to_string(),
            port,
            api_key,
            queue_size: queue_size as usize,
            max_batch: max_batch as usize,
            ..ServeConfig::default()
        };
        Ok(PyServer {
            load,
            config,
            model_name,
            verbose,
            running: Mutex::new(None),
        })
    }

    /// Load the model and start serving; returns the server once it listens.
    ///
    /// Raises RocmForgeError when it is already running, OSError when the address cannot be
    /// bound, and the errors of `rocmforge.Model` for the model.
    fn start(slf: &Bound<'_, Self>) -> PyResult<Py<Self>> {
        let py = slf.py();
        let this = slf.get();
        let already = || Error::runtime("the server is already running (stop() it first)");
        if py.detach(|| this.slot().is_some()) {
            return Err(already()).py();
        }
        let (path, file, engine, _tuning) = this.load.load(py, this.verbose)?;
        let model_id = this.model_name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".to_string())
        });
        let config = ServeConfig {
            model_id: model_id.clone(),
            ..this.config.clone()
        };
        py.detach(move || -> Result<()> {
            let frontend = Frontend {
                tokenizer: Tokenizer::from_gguf(&file)?,
                chat_template: engine.chat_template.clone(),
                n_ctx: engine.model.n_ctx(),
            };
            drop(file);
            let server = Server::start(engine, frontend, config)?;
            let mut slot = this.slot();
            if slot.is_some() {
                // Another thread started it meanwhile: this one goes.
                drop(slot);
                drop(server);
                return Err(already());
            }
            *slot = Some(Running { server, model_id });
            Ok(())
        })
        .py()?;
        Ok(slf.clone().unbind())
    }

    /// Stop serving: stop accepting requests, give the accepted ones up to `timeout`
    /// seconds to finish, cancel what is left, and free the model. Does nothing when the
    /// server is not running. Ctrl-C while it waits cancels the requests at once.
    #[pyo3(signature = (timeout=10.0))]
    fn stop(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        if timeout.is_nan() || timeout < 0.0 {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "timeout must be >= 0, got {timeout}"
            )));
        }
        let grace = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::MAX);
        py.detach(|| match self.slot().take() {
            Some(r) => Self::stop_running(r, grace),
            None => Ok(()),
        })
        .py()
    }

    /// Block until the server stops (another thread calls `stop()`) or `timeout` seconds
    /// pass (None: no limit). Returns True when it has stopped. Ctrl-C raises
    /// KeyboardInterrupt and leaves the server running.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        py.detach(|| -> Result<bool> {
            loop {
                let stopped = self.slot().as_ref().is_none_or(|r| r.server.is_finished());
                if stopped {
                    return Ok(true);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
                check_signals()?;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .py()
    }

    /// Whether the server is running (started and not stopped).
    #[getter]
    fn running(&self, py: Python<'_>) -> bool {
        py.detach(|| self.slot().is_some())
    }

    /// The port the server listens on (the one asked for until it starts).
    #[getter]
    fn port(&self, py: Python<'_>) -> u16 {
        py.detach(|| {
            self.slot()
                .as_ref()
                .map_or(self.config.port, |r| r.server.addr().port())
        })
    }

    /// The host the server listens on, as given.
    #[getter]
    fn host(&self) -> String {
        self.config.host.clone()
    }

    /// The server's base URL, e.g. "http://127.0.0.1:8000" (clients add "/v1"); an address
    /// that means "every interface" (0.0.0.0, ::) is written as this machine's loopback.
    #[getter]
    fn url(&self, py: Python<'_>) -> String {
        let port = self.port(py);
        let host = match self.config.host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            Ok(ip) if ip.is_unspecified() => "[::1]".to_string(),
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.config.host.clone(),
        };
        format!("http://{host}:{port}")
    }

    /// The model id answers carry and /v1/models lists (None until started, unless given).
    #[getter]
    fn model(&self, py: Python<'_>) -> Option<String> {
        py.detach(|| {
            self.slot()
                .as_ref()
                .map(|r| r.model_id.clone())
                .or_else(|| self.model_name.clone())
        })
    }

    /// Start the server unless it runs; returns it.
    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<Py<Self>> {
        if slf.get().running(slf.py()) {
            return Ok(slf.clone().unbind());
        }
        Self::start(slf)
    }

    /// `stop()`.
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.stop(py, 10.0)?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.running(py) {
            "running"
        } else {
            "stopped"
        };
        match self.model(py) {
            Some(m) => format!("Server({}, model={m:?}, {state})", self.url(py)),
            None => format!("Server({}, {state})", self.url(py)),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyServer>()?;
    Ok(())
}
