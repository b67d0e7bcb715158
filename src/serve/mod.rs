//! An OpenAI-compatible HTTP server over one `Engine`.
//!
//! Three parts, each in its own file, meet at two boundaries:
//! - `http`: axum routes on a tokio runtime (its own thread). A handler reads the request
//!   (`openai`), renders and tokenizes the prompt with the server's own copy of the tokenizer,
//!   checks it against the context, and hands the scheduler a `Job` through the bounded
//!   `Queue` (full: 429). It then reads the job's `Event`s from the job's own channel and
//!   answers with one JSON body or a stream of server-sent events.
//! - `scheduler`: one thread that owns the `Engine` and runs the queued jobs, up to
//!   `max_batch` at once (continuous batching, each job in a sequence slot of its own). A job
//!   whose event receiver is gone (the client disconnected) is cancelled between tokens, and
//!   its slot is free for the next job.
//! - `metrics`: counters both sides update, rendered as Prometheus text at `/metrics`; the
//!   gauges of what running jobs hold (`requests_running`, `sequence_slots_in_use`,
//!   `kv_positions_in_use`) are 0 whenever the server is idle.
//!
//! `Server::start` loads nothing: the caller builds the `Engine` (and a second `Tokenizer`
//! from the same file for the HTTP side), so the Python bindings keep their load path.
//! `Server::stop` stops accepting, lets accepted requests finish for a bounded time, then
//! cancels what is left and joins both threads.

mod http;
mod metrics;
pub mod openai;
mod scheduler;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::generate::Engine;
use crate::tokenizer::Tokenizer;

pub use metrics::Metrics;
pub use scheduler::{Event, Job, Queue, QueueFull};

/// What a server is started with (besides the engine).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to bind, e.g. "127.0.0.1" (the default: this machine only) or "0.0.0.0".
    pub host: String,
    /// Port to bind; 0 picks a free one (`Server::addr` tells which).
    pub port: u16,
    /// The model id `/v1/models` lists and responses carry.
    pub model_id: String,
    /// Requests need `Authorization: Bearer <key>` (all endpoints but `/health`).
    pub api_key: Option<String>,
    /// Requests that may wait for the engine; one more is answered 429.
    pub queue_size: usize,
    /// Requests run at once (continuous batching), each with a KV cache of its own.
    pub max_batch: usize,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            host: "127.0.0.1".to_string(),
            port: 8000,
            model_id: "model".to_string(),
            api_key: None,
            queue_size: 16,
            max_batch: 8,
            max_body_bytes: 4 << 20,
        }
    }
}

/// What both threads share: the queue, the metrics and the stop flags.
pub(crate) struct Shared {
    pub queue: Queue,
    pub metrics: Metrics,
    /// `stop` began: no new requests; accepted ones run on.
    pub stopping: AtomicBool,
    /// Cancel everything now (the stop's grace time is over).
    pub aborting: AtomicBool,
}

/// The HTTP side's view of the model: enough to render and tokenize prompts.
pub struct Frontend {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
    pub n_ctx: usize,
}

/// A running server: its address, and `stop`.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    http: Option<JoinHandle<()>>,
    scheduler: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind `config.host:config.port`, start the scheduler thread (which takes `engine`) and
    /// the HTTP thread, and return once the socket listens.
    pub fn start(engine: Engine, frontend: Frontend, config: ServeConfig) -> Result<Server> {
        if config.queue_size == 0 {
            return Err(Error::invalid("queue_size must be >= 1"));
        }
        if config.max_batch == 0 {
            return Err(Error::invalid("max_batch must be >= 1"));
        }
        let io_err = |e: std::io::Error| Error::Io {
            path: format!("{}:{}", config.host, config.port),
            source: e,
        };
        let addrs: Vec<SocketAddr> = (config.host.as_str(), config.port)
            .to_socket_addrs()
            .map_err(io_err)?
            .collect();
        let listener = TcpListener::bind(&addrs[..]).map_err(io_err)?;
        listener.set_nonblocking(true).map_err(io_err)?;
        let addr = listener.local_addr().map_err(io_err)?;
        let shared = Arc::new(Shared {
            queue: Queue::new(config.queue_size),
            metrics: Metrics::default(),
            stopping: AtomicBool::new(false),
            aborting: AtomicBool::new(false),
        });
        let scheduler = scheduler::spawn(engine, shared.clone(), config.max_batch)?;
        let http = http::spawn(listener, frontend, config, shared.clone());
        let http = match http {
            Ok(h) => h,
            Err(e) => {
                shared.stopping.store(true, Ordering::SeqCst);
                shared.aborting.store(true, Ordering::SeqCst);
                shared.queue.close();
                let _ = scheduler.join();
                return Err(e);
            }
        };
        Ok(Server {
            addr,
            shared,
            http: Some(http),
            scheduler: Some(scheduler),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Stop accepting requests (new connections and new jobs); accepted requests run on.
    pub fn begin_stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.queue.close();
    }

    /// Cancel the running and waiting requests now (implies `begin_stop`).
    pub fn abort(&self) {
        self.begin_stop();
        self.shared.aborting.store(true, Ordering::SeqCst);
        self.shared.queue.notify();
    }

    /// Whether both threads have ended (after a stop, or a failure).
    pub fn is_finished(&self) -> bool {
        self.http.as_ref().is_none_or(|h| h.is_finished())
            && self.scheduler.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Wait for both threads to end (call after `begin_stop` or `abort`).
    pub fn join(&mut self) {
        for handle in [self.http.take(), self.scheduler.take()]
            .into_iter()
            .flatten()
        {
            let _ = handle.join();
        }
    }

    /// Stop: no new requests; accepted ones get `grace` to finish, then are cancelled.
    pub fn stop(&mut self, grace: Duration) {
        self.begin_stop();
        let deadline = Instant::now() + grace;
        while !self.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.abort();
        self.join();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.http.is_some() || self.scheduler.is_some() {
            self.abort();
            self.join();
        }
    }
}
