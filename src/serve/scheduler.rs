//! The scheduler: one thread owns the `Engine` and runs the jobs the HTTP side queues.
//!
//! The boundary: a `Job` (prompt ids and `GenerateParams`) enters the bounded `Queue`; the
//! scheduler answers through the job's own channel with `Event`s: text pieces (with their
//! tokens' log-probabilities when asked), then `Done` or `Failed`. A job whose receiver is
//! gone (the client disconnected, or its handler was dropped) is cancelled between tokens.
//!
//! For now the loop runs one sequence at a time, first come first served (`serve_one`); a
//! batching engine replaces `run` behind the same types. Each job's channel is unbounded but
//! holds at most one event per generated token (the request's `max_tokens`, itself at most the
//! context), so a client that does not read never stalls the engine.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::Shared;
use crate::error::{Error, Result};
use crate::generate::{Engine, FinishReason, GenerateParams, Generation, TokenLogprobs};

/// One request for the engine.
pub struct Job {
    /// The prompt's token ids (checked against the vocabulary and the context by the sender).
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// When the HTTP request arrived (time to first token counts from here).
    pub received: Instant,
    /// Where the job's events go; dropping the receiver cancels the job.
    pub events: UnboundedSender<Event>,
}

/// What the scheduler tells a job's sender.
#[derive(Debug)]
pub enum Event {
    /// Text released since the last piece (possibly empty) and the tokens generated since,
    /// with their log-probabilities when the job asked for them (else none).
    Piece {
        text: String,
        tokens: Vec<TokenLogprobs>,
    },
    /// The generation ended; `completion_tokens` counts every generated token (an ending
    /// end-of-generation token included).
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The generation failed (or was cancelled by a stop): nothing more comes.
    Failed(Error),
}

/// Why `Queue::push` refused a job.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueFull {
    /// As many jobs as the queue holds are waiting.
    Full,
    /// The server is stopping.
    Closed,
}

/// A bounded FIFO of waiting jobs (the running one is not in it).
pub struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
}

struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append a job, unless the queue is full or closed (then the job is dropped).
    pub fn push(&self, job: Job) -> std::result::Result<(), QueueFull> {
        let mut s = self.lock();
        if s.closed {
            return Err(QueueFull::Closed);
        }
        if s.jobs.len() >= self.capacity {
            return Err(QueueFull::Full);
        }
        s.jobs.push_back(job);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// The oldest waiting job, waiting up to `timeout` for one.
    pub fn pop(&self, timeout: Duration) -> Option<Job> {
        let s = self.lock();
        let (mut s, _) = self
            .ready
            .wait_timeout_while(s, timeout, |s| s.jobs.is_empty() && !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        s.jobs.pop_front()
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuse new jobs from now on (waiting ones stay).
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Wake the scheduler (after a flag changed).
    pub fn notify(&self) {
        self.ready.notify_all();
    }
}

/// Start the scheduler thread; it owns `engine` until the server stops.
pub(super) fn spawn(engine: Engine, shared: Arc<Shared>) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rocmforge-scheduler".to_string())
        .spawn(move || run(engine, &shared))
        .map_err(|e| Error::runtime(format!("cannot start the scheduler thread: {e}")))
}

/// Take jobs in arrival order and run each to its end, until the server stops and the queue
/// is empty.
fn run(mut engine: Engine, shared: &Shared) {
    loop {
        let Some(job) = shared.queue.pop(Duration::from_millis(50)) else {
            if shared.stopping.load(Ordering::SeqCst) && shared.queue.is_empty() {
                return;
            }
            continue;
        };
        if shared.aborting.load(Ordering::SeqCst) {
            let _ = job.events.send(Event::Failed(Error::Interrupted));
            continue;
        }
        if job.events.is_closed() {
            shared.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shared.metrics.running.fetch_add(1, Ordering::Relaxed);
        // A panic (a bug) fails this request, not the server: the job's sender is dropped
        // (its client gets a 500) and the cache bookkeeping starts over.
        let run_one = std::panic::AssertUnwindSafe(|| serve_one(&mut engine, job, shared));
        if std::panic::catch_unwind(run_one).is_err() {
            engine.reset_cache();
        }
        shared.metrics.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Run one job to its end, sending its pieces as they come.
fn serve_one(engine: &mut Engine, job: Job, shared: &Shared) {
    let Job {
        prompt,
        params,
        received,
        events,
    } = job;
    let prompt_tokens = prompt.len();
    let mut g = match Generation::new(engine, prompt, params) {
        Ok(g) => g,
        Err(e) => {
            let _ = events.send(Event::Failed(e));
            return;
        }
    };
    let metrics = &shared.metrics;
    metrics
        .prompt_tokens
        .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
    // Polled between tokens and between chunks of the prefill.
    let mut interrupt = || -> Result<()> {
        if events.is_closed() || shared.aborting.load(Ordering::SeqCst) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    };
    let (mut sent_tokens, mut counted) = (0, 0);
    loop {
        let step = g.next_piece(engine, &mut interrupt);
        let generated = g.generated_ids().len();
        metrics
            .generated_tokens
            .fetch_add((generated - counted) as u64, Ordering::Relaxed);
        if counted == 0 && generated > 0 {
            metrics.observe_first_token(received.elapsed());
        }
        counted = generated;
        let tokens = g.logprobs()[sent_tokens..].to_vec();
        sent_tokens += tokens.len();
        match step {
            Ok(Some(text)) => {
                let _ = events.send(Event::Piece { text, tokens });
            }
            Ok(None) => {
                if !tokens.is_empty() {
                    let text = String::new();
                    let _ = events.send(Event::Piece { text, tokens });
                }
                let _ = events.send(Event::Done {
                    finish: g.finish_reason().unwrap_or(FinishReason::Length),
                    prompt_tokens,
                    completion_tokens: generated,
                });
                return;
            }
            Err(Error::Interrupted) => {
                // The client went away (or the server is stopping): the cache's bookkeeping
                // stays consistent (an interrupted evaluation keeps only what completed).
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                let _ = events.send(Event::Failed(Error::Interrupted));
                return;
            }
            Err(e) => {
                let _ = events.send(Event::Failed(e));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(first: u32) -> (Job, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let job = Job {
            prompt: vec![first],
            params: GenerateParams::default(),
            received: Instant::now(),
            events,
        };
        (job, rx)
    }

    #[test]
    fn queue_is_a_bounded_fifo_that_closes() {
        let q = Queue::new(2);
        let (a, _ra) = job(1);
        let (b, _rb) = job(2);
        let (c, _rc) = job(3);
        assert!(q.push(a).is_ok() && q.push(b).is_ok());
        assert_eq!(q.push(c).err(), Some(QueueFull::Full));
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(Duration::ZERO).map(|j| j.prompt), Some(vec![1]));
        q.close();
        let (d, _rd) = job(4);
        assert_eq!(q.push(d).err(), Some(QueueFull::Closed));
        // Waiting jobs stay after the close; then pop returns at once.
        assert_eq!(
            q.pop(Duration::from_secs(5)).map(|j| j.prompt),
            Some(vec![2])
        );
        // (a closed, empty queue does not wait out the timeout; the bound allows a loaded machine)
        let t = Instant::now();
        assert!(q.pop(Duration::from_secs(60)).is_none());
        assert!(t.elapsed() < Duration::from_secs(20));
    }
}
