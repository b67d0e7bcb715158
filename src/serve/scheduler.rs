//! The scheduler: one thread owns the `Engine` and runs the jobs the HTTP side queues.
//!
//! The boundary: a `Job` (prompt ids and `GenerateParams`) enters the bounded `Queue`; the
//! scheduler answers through the job's own channel with `Event`s: text pieces (with their
//! tokens' log-probabilities when asked), then `Done` or `Failed`. A job whose receiver is
//! gone (the client disconnected, or its handler was dropped) is cancelled between tokens.
//!
//! The loop batches continuously (`run`): up to `max_batch` jobs run at once, each in a
//! sequence slot of the engine, and jobs join and leave between steps. Each job's channel is
//! unbounded but holds at most one event per generated token (the request's `max_tokens`,
//! itself at most the context), so a client that does not read never stalls the engine.

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

/// Start the scheduler thread; it owns `engine` until the server stops, and runs up to
/// `max_batch` requests at once (each in a sequence slot, made when first needed).
pub(super) fn spawn(
    engine: Engine,
    shared: Arc<Shared>,
    max_batch: usize,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rocmforge-scheduler".to_string())
        .spawn(move || run(engine, &shared, max_batch))
        .map_err(|e| Error::runtime(format!("cannot start the scheduler thread: {e}")))
}

/// A job the engine is running.
struct Running {
    generation: Generation,
    slot: usize,
    events: UnboundedSender<Event>,
    received: Instant,
    prompt_tokens: usize,
    /// Log-probabilities sent so far, and tokens counted in the metrics so far.
    sent_tokens: usize,
    counted: usize,
}

/// Continuous batching: every step advances each running job by one token
/// (`generate::step_batch`: one batched step on the device for all of them), and between
/// steps finished and cancelled jobs leave and waiting ones join (in arrival order, each in
/// the free sequence slot whose cache shares the longest start with its prompt), until the
/// server stops and nothing is left.
fn run(mut engine: Engine, shared: &Shared, max_batch: usize) {
    let mut running: Vec<Running> = Vec::new();
    loop {
        // Join: without running jobs, wait a little for one; else take only those waiting.
        // Slots (KV caches) are made as the jobs running at once first need them.
        while running.len() < max_batch {
            let slots = engine.slots();
            if running.len() == slots {
                // a new slot only for a job that waits for one
                if shared.queue.is_empty() || engine.set_slots(slots + 1).is_err() {
                    break; // (no memory for another cache: the jobs running now are the batch)
                }
            }
            let wait = if running.is_empty() {
                Duration::from_millis(50)
            } else {
                Duration::ZERO
            };
            let Some(job) = shared.queue.pop(wait) else {
                break;
            };
            if let Some(r) = admit(&mut engine, job, shared, &running, max_batch) {
                running.push(r);
            }
        }
        // Leave: cancelled jobs (their client is gone, or the server is aborting).
        let aborting = shared.aborting.load(Ordering::SeqCst);
        running.retain(|r| {
            let gone = aborting || r.events.is_closed();
            if gone {
                shared.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                let _ = r.events.send(Event::Failed(Error::Interrupted));
            }
            !gone
        });
        publish(shared, &engine, &running);
        if running.is_empty() {
            if shared.stopping.load(Ordering::SeqCst) && shared.queue.is_empty() {
                return;
            }
            continue;
        }
        let mut interrupt = || -> Result<()> {
            if shared.aborting.load(Ordering::SeqCst) {
                Err(Error::Interrupted)
            } else {
                Ok(())
            }
        };
        // A panic (a bug) fails the running requests, not the server: their senders are
        // dropped (their clients get a 500) and the cache bookkeeping starts over.
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut gens: Vec<(usize, &mut Generation)> = running
                .iter_mut()
                .map(|r| (r.slot, &mut r.generation))
                .collect();
            crate::generate::step_batch(&mut engine, &mut gens, &mut interrupt)
        }));
        let pieces = match step {
            Ok(Ok(pieces)) => pieces,
            Ok(Err(e)) => {
                // The step failed for every job in it: the first gets the error, the others
                // its message.
                let interrupted = matches!(e, Error::Interrupted);
                let message = e.to_string();
                let mut first = Some(e);
                for r in running.drain(..) {
                    if interrupted {
                        shared.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                    let e = match first.take() {
                        Some(e) => e,
                        None if interrupted => Error::Interrupted,
                        None => Error::runtime(message.clone()),
                    };
                    let _ = r.events.send(Event::Failed(e));
                }
                continue;
            }
            Err(_) => {
                running.clear();
                engine.reset_cache();
                continue;
            }
        };
        running = running
            .into_iter()
            .zip(pieces)
            .filter_map(|(r, piece)| report(r, piece, shared))
            .collect();
        publish(shared, &engine, &running);
    }
}

/// The gauges of what the running jobs hold: they are back at 0 once every job has ended or
/// left (a client that disconnected included).
fn publish(shared: &Shared, engine: &Engine, running: &[Running]) {
    let m = &shared.metrics;
    m.running.store(running.len(), Ordering::Relaxed);
    m.slots.store(engine.slots(), Ordering::Relaxed);
    // one slot per running job (`admit` gives each a slot no other running job has)
    let mut slots: Vec<usize> = running.iter().map(|r| r.slot).collect();
    slots.sort_unstable();
    slots.dedup();
    m.slots_in_use.store(slots.len(), Ordering::Relaxed);
    let positions = running.iter().map(|r| r.generation.sequence_len()).sum();
    m.kv_positions_in_use.store(positions, Ordering::Relaxed);
}

/// Check a job and start its generation in a free slot; a bad or cancelled job is answered
/// here and not run.
fn admit(
    engine: &mut Engine,
    job: Job,
    shared: &Shared,
    running: &[Running],
    max_batch: usize,
) -> Option<Running> {
    let Job {
        prompt,
        params,
        received,
        events,
    } = job;
    if shared.aborting.load(Ordering::SeqCst) {
        let _ = events.send(Event::Failed(Error::Interrupted));
        return None;
    }
    if events.is_closed() {
        shared.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let busy: Vec<usize> = running.iter().map(|r| r.slot).collect();
    let mut slot = engine.best_slot(&prompt, &busy)?;
    let (common, held) = engine.slot_fit(slot, &prompt);
    // A prompt that shares nothing with the free slots' caches gets a new slot while fewer
    // than max_batch exist, so that those caches stay for the prompts that share their start.
    if common == 0 && held > 0 && engine.slots() < max_batch {
        let n = engine.slots();
        if engine.set_slots(n + 1).is_ok() {
            slot = n;
        }
    }
    let prompt_tokens = prompt.len();
    match Generation::new(engine, prompt, params) {
        Ok(generation) => {
            shared
                .metrics
                .prompt_tokens
                .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
            Some(Running {
                generation,
                slot,
                events,
                received,
                prompt_tokens,
                sent_tokens: 0,
                counted: 0,
            })
        }
        Err(e) => {
            let _ = events.send(Event::Failed(e));
            None
        }
    }
}

/// Send what a step gave a job (`piece`: the text it released); keep the job unless it ended.
fn report(mut r: Running, piece: Option<String>, shared: &Shared) -> Option<Running> {
    let metrics = &shared.metrics;
    let g = &r.generation;
    let generated = g.generated_ids().len();
    metrics
        .generated_tokens
        .fetch_add((generated - r.counted) as u64, Ordering::Relaxed);
    if r.counted == 0 && generated > 0 {
        metrics.observe_first_token(r.received.elapsed());
        // the prompt's start its slot's cache already held (a shared system prompt)
        let reused = r.prompt_tokens.saturating_sub(g.stats().prefill_tokens);
        metrics
            .prompt_tokens_cached
            .fetch_add(reused as u64, Ordering::Relaxed);
    }
    r.counted = generated;
    let tokens = g.logprobs()[r.sent_tokens..].to_vec();
    r.sent_tokens += tokens.len();
    if piece.is_some() || !tokens.is_empty() {
        let text = piece.unwrap_or_default();
        let _ = r.events.send(Event::Piece { text, tokens });
    }
    if !g.is_done() {
        return Some(r);
    }
    let _ = r.events.send(Event::Done {
        finish: g.finish_reason().unwrap_or(FinishReason::Length),
        prompt_tokens: r.prompt_tokens,
        completion_tokens: generated,
    });
    None
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
