//! Text generation: the prompt's tokens are prefilled in one batch, then one token at a time
//! is sampled and decoded until EOS/EOT, a stop string, `max_tokens` or the context's end.
//!
//! `Engine` owns a model, its tokenizer and the KV-cache bookkeeping; `Generation` is the state
//! of one request and advances one text piece per `next_piece` call, so the same code serves
//! blocking calls and streaming iterators. Several generations may interleave on one engine:
//! the engine tracks which tokens its cache holds and re-evaluates only what differs.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::LanguageModel;
use crate::ops::sampling::{DrawKey, StepPick};
use crate::sampling::{self, Rng, SamplingParams};
use crate::tokenizer::{Detokenizer, Tokenizer};

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop string appeared.
    Stop,
    /// The model produced an end-of-generation token (EOS/EOT).
    Eos,
    /// `max_tokens` were generated, or the context is full.
    Length,
}

impl FinishReason {
    pub fn name(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Eos => "eos",
            FinishReason::Length => "length",
        }
    }
}

/// Counters of the last call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub finish_reason: Option<FinishReason>,
    /// Tokens evaluated in the prefill (fewer than the prompt when the cache held a prefix).
    pub prefill_tokens: usize,
    pub prefill_seconds: f64,
    /// One-token forward steps after the prefill, and their time (with sampling).
    pub decode_steps: usize,
    pub decode_seconds: f64,
}

impl Stats {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        rate(self.prefill_tokens, self.prefill_seconds)
    }
    pub fn decode_tokens_per_s(&self) -> f64 {
        rate(self.decode_steps, self.decode_seconds)
    }
}

fn rate(n: usize, seconds: f64) -> f64 {
    if n == 0 || seconds <= 0.0 {
        0.0
    } else {
        n as f64 / seconds
    }
}

/// A request.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Seed of this call's draws; `None`: the next seed of the engine's own generator.
    pub seed: Option<u64>,
    /// Generation ends before the first occurrence of any of these (not included in the text).
    pub stop: Vec<String>,
    /// Record each generated token's log-probability and the `n` most likely tokens' (see
    /// `TokenLogprobs`; at most `ops::sampling::MAX_TOP`). None: nothing recorded.
    pub logprobs: Option<usize>,
}

/// A generated token with its log-probability under the model's distribution (log-softmax of
/// the raw logits, before penalties, temperature and filters, as OpenAI's `logprobs`), and the
/// most likely tokens' (best first, lower id first on ties).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            seed: None,
            stop: vec![],
            logprobs: None,
        }
    }
}

pub use crate::model::Interrupt;

/// A model with its tokenizer and the bookkeeping of its KV cache.
pub struct Engine {
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: Tokenizer,
    /// The file's `tokenizer.chat_template`, else its family's (`chat::family_template`).
    pub chat_template: Option<String>,
    /// Draws seeds for calls without one.
    pub rng: Rng,
    pub stats: Stats,
    /// The tokens whose keys and values the current slot's cache holds, position by position.
    cached: Vec<u32>,
    /// The same for every sequence slot (`set_slots`); the current slot's entry is `cached`,
    /// its place here empty.
    parked: Vec<Vec<u32>>,
    /// The model's current sequence slot.
    slot: usize,
    /// Host copy of the logits of one position `[vocab]`.
    logits: Vec<f32>,
}

impl Engine {
    pub fn new(
        model: Box<dyn LanguageModel>,
        file: &GgufFile,
        seed: Option<u64>,
    ) -> Result<Engine> {
        let tokenizer = Tokenizer::from_gguf(file)?;
        // The file's template, else its family's (llama.cpp also knows Gemma's by name).
        let chat_template = file
            .meta("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| crate::chat::family_template(model.config().arch).map(str::to_string));
        let vocab = model.config().vocab_size;
        // Every id the tokenizer can produce needs a row of the embedding (llama.cpp asks for
        // the same number of tokens and rows).
        if tokenizer.vocab_size() > vocab {
            return Err(Error::gguf(format!(
                "tokenizer.ggml.tokens holds {} tokens, more than the {vocab} rows of token_embd.weight",
                tokenizer.vocab_size()
            )));
        }
        Ok(Engine {
            model,
            tokenizer,
            chat_template,
            rng: seed.map(Rng::new).unwrap_or_else(Rng::from_entropy),
            stats: Stats::default(),
            cached: Vec::new(),
            parked: vec![Vec::new()],
            slot: 0,
            logits: vec![0.0; vocab],
        })
    }

    /// Forget what the cache holds (the next evaluation starts from position 0).
    pub fn reset_cache(&mut self) {
        self.cached.clear();
    }

    /// Sequence slots: KV caches the model keeps side by side (`LanguageModel::set_slots`).
    pub fn slots(&self) -> usize {
        self.parked.len()
    }

    /// Make `n >= 1` sequence slots; slots past `n` are freed and slot 0 becomes current if
    /// the current one was.
    pub fn set_slots(&mut self, n: usize) -> Result<()> {
        if n <= self.slot {
            self.use_slot(0)?;
        }
        self.model.set_slots(n)?;
        self.parked.resize_with(n, Vec::new);
        Ok(())
    }

    /// Make `slot` the one evaluations use (its cache and what it holds).
    pub fn use_slot(&mut self, slot: usize) -> Result<()> {
        if slot != self.slot {
            self.model.select_slot(slot)?;
            self.parked[self.slot] = std::mem::take(&mut self.cached);
            self.cached = std::mem::take(&mut self.parked[slot]);
            self.slot = slot;
        }
        Ok(())
    }

    /// The free slot (not in `busy`) whose cache holds the longest start of `tokens`, so that
    /// a prompt sharing a start with an earlier one (a system prompt) evaluates only the rest;
    /// on ties the one holding least (a cache worth keeping is not overwritten while an empty
    /// one is free), then the lowest. None when every slot is busy.
    pub fn best_slot(&self, tokens: &[u32], busy: &[usize]) -> Option<usize> {
        (0..self.slots())
            .filter(|s| !busy.contains(s))
            .max_by_key(|&s| {
                let (common, held) = self.slot_fit(s, tokens);
                (common, std::cmp::Reverse(held), std::cmp::Reverse(s))
            })
    }

    /// (tokens of the start of `tokens` that slot `slot`'s cache holds, tokens it holds).
    pub fn slot_fit(&self, slot: usize, tokens: &[u32]) -> (usize, usize) {
        let cached = if slot == self.slot {
            &self.cached
        } else {
            &self.parked[slot]
        };
        let common = cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        (common, cached.len())
    }

    /// What slot `slot`'s cache holds.
    fn cached_in(&mut self, slot: usize) -> &mut Vec<u32> {
        if slot == self.slot {
            &mut self.cached
        } else {
            &mut self.parked[slot]
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    /// `InvalidArgument` naming the first id outside the vocabulary.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&t| t as usize >= self.vocab_size()) {
            Some(bad) => Err(Error::invalid(format!(
                "token id {bad} is outside the vocabulary (size {})",
                self.vocab_size()
            ))),
            None => Ok(()),
        }
    }

    /// Make the cache hold `tokens` and the device hold the logits of the last one, evaluating
    /// only what follows the prefix the cache already holds. Returns the tokens evaluated.
    pub fn eval_sequence(&mut self, tokens: &[u32], interrupt: Interrupt) -> Result<usize> {
        let common = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        // The last token is always evaluated: its logits are what the caller wants.
        let start = common.min(tokens.len() - 1);
        self.cached.truncate(start);
        self.model.eval(&tokens[start..], start, interrupt)?;
        self.cached.extend_from_slice(&tokens[start..]);
        Ok(tokens.len() - start)
    }

    /// `eval_sequence` of at most `max_new` tokens: the next part of `tokens` after what the
    /// cache holds. Returns (tokens evaluated, whether all of `tokens` is now held, the
    /// device then holding the last one's logits).
    fn eval_part(
        &mut self,
        tokens: &[u32],
        max_new: usize,
        interrupt: Interrupt,
    ) -> Result<(usize, bool)> {
        let common = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        let start = common.min(tokens.len() - 1);
        let end = tokens.len().min(start + max_new.max(1));
        self.cached.truncate(start);
        self.model.eval(&tokens[start..end], start, interrupt)?;
        self.cached.extend_from_slice(&tokens[start..end]);
        Ok((end - start, end == tokens.len()))
    }

    /// Logits of every position of `ids` in a fresh context: `[ids.len(), vocab]`.
    pub fn logits_all(&mut self, ids: &[u32], interrupt: Interrupt) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::invalid("logits() needs at least one token id"));
        }
        self.check_ids(ids)?;
        let n_ctx = self.model.n_ctx();
        if ids.len() > n_ctx {
            return Err(Error::invalid(format!(
                "{} tokens do not fit the context of {n_ctx} tokens",
                ids.len()
            )));
        }
        let n = ids.len() * self.vocab_size();
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| {
            Error::runtime(format!(
                "cannot allocate the {} x {} logits on the host",
                ids.len(),
                self.vocab_size()
            ))
        })?;
        out.resize(n, 0.0);
        self.cached.clear();
        self.model.eval_all(ids, 0, &mut out, interrupt)?;
        self.cached.extend_from_slice(ids);
        Ok(out)
    }

    /// Make the cache hold `tokens` and pick the token after them; returns (tokens evaluated,
    /// token). After one new token this is one decode step on the device, the pick included
    /// (`LanguageModel::decode`: on a GPU, a replayed graph and one small copy back; with
    /// `more`, the caller will ask for the token after this one unless it ends here, and the
    /// step for it is queued before this one's pick is read).
    fn eval_and_pick(
        &mut self,
        tokens: &[u32],
        p: &SamplingParams,
        seed: u64,
        more: bool,
        interrupt: Interrupt,
    ) -> Result<(usize, u32)> {
        let pos = self.cached.len();
        if tokens.len() == pos + 1 && tokens.starts_with(&self.cached) {
            interrupt()?;
            let pick = StepPick::new(&p.op_params(), seed, 0);
            let (id, value) = self.model.decode(tokens[pos], pos, &pick, tokens, more)?;
            self.cached.push(tokens[pos]);
            if value.is_nan() {
                return Err(nan_logits());
            }
            return Ok((1, id));
        }
        let evaluated = self.eval_sequence(tokens, interrupt)?;
        let token = self.pick(tokens, p, seed)?;
        Ok((evaluated, token))
    }

    /// Make the cache hold `tokens` and pick the token after them as `eval_and_pick` does, with
    /// its log-probability and the `n_top` best (the logits come to the host).
    fn eval_and_pick_scored(
        &mut self,
        tokens: &[u32],
        p: &SamplingParams,
        seed: u64,
        n_top: usize,
        interrupt: Interrupt,
    ) -> Result<(usize, TokenLogprobs)> {
        let evaluated = self.eval_sequence(tokens, interrupt)?;
        self.model.last_logits(&mut self.logits)?;
        let key = DrawKey {
            seed,
            sequence: 0,
            position: tokens.len() as u32,
        };
        let row = crate::ops::sampling::SampleRow {
            params: p.op_params(),
            key,
            history: tokens,
        };
        let vocab = self.logits.len();
        let s = crate::ops::sampling::cpu::sample(&self.logits, 1, vocab, &[row], n_top)?;
        let top = s
            .top_ids
            .iter()
            .copied()
            .zip(s.top_logprobs.iter().copied());
        Ok((
            evaluated,
            TokenLogprobs {
                id: s.ids[0],
                logprob: s.logprobs[0],
                top: top.collect(),
            },
        ))
    }

    /// The next token after the sequence just evaluated (`history`; the draw is keyed by the
    /// call's seed and the new token's position). Plain greedy picks on the device; a NaN
    /// anywhere in the hidden state makes every logit NaN, which the picked logit shows.
    fn pick(&mut self, history: &[u32], p: &SamplingParams, seed: u64) -> Result<u32> {
        if p.is_plain_greedy() {
            // On the device: only the id and its logit come back.
            let (id, value) = self.model.last_argmax()?;
            if value.is_nan() {
                return Err(nan_logits());
            }
            return Ok(id);
        }
        self.model.last_logits(&mut self.logits)?;
        let key = DrawKey {
            seed,
            sequence: 0,
            position: history.len() as u32,
        };
        sampling::sample(&self.logits, history, p, key)
    }
}

fn nan_logits() -> Error {
    Error::runtime("the model produced NaN logits; refusing to sample".to_string())
}

/// The state of one generation request.
pub struct Generation {
    params: GenerateParams,
    /// Keys this generation's draws (with each new token's position).
    seed: u64,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    n_prompt: usize,
    generated: usize,
    detok: Detokenizer,
    /// Decoded text not yet handed out: it may be the start of a stop string.
    held: String,
    finished: Option<FinishReason>,
    stats: Stats,
    /// Per generated token, when the request asks for them.
    logprobs: Vec<TokenLogprobs>,
    /// A prefill in parts (`step_batch`): tokens evaluated and seconds so far.
    prefill: (usize, f64),
}

impl Generation {
    /// Check a request; nothing is evaluated yet.
    pub fn new(
        engine: &mut Engine,
        prompt: Vec<u32>,
        params: GenerateParams,
    ) -> Result<Generation> {
        params.sampling.check()?;
        if params
            .logprobs
            .is_some_and(|n| n > crate::ops::sampling::MAX_TOP)
        {
            return Err(Error::invalid(format!(
                "logprobs must be at most {}, got {}",
                crate::ops::sampling::MAX_TOP,
                params.logprobs.unwrap_or(0)
            )));
        }
        if prompt.is_empty() {
            return Err(Error::invalid("the prompt has no tokens"));
        }
        engine.check_ids(&prompt)?;
        let n_ctx = engine.model.n_ctx();
        if prompt.len() > n_ctx {
            return Err(Error::invalid(format!(
                "the prompt has {} tokens, more than the context of {n_ctx} tokens",
                prompt.len()
            )));
        }
        let seed = params.seed.unwrap_or_else(|| engine.rng.next_u64());
        let stats = Stats {
            prompt_tokens: prompt.len(),
            ..Stats::default()
        };
        engine.stats = stats.clone();
        Ok(Generation {
            seed,
            n_prompt: prompt.len(),
            tokens: prompt,
            generated: 0,
            detok: engine.tokenizer.detokenizer(true),
            held: String::new(),
            finished: None,
            stats,
            logprobs: Vec::new(),
            prefill: (0, 0.0),
            params,
        })
    }

    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finished
    }

    /// Finished and all text handed out.
    pub fn is_done(&self) -> bool {
        self.finished.is_some() && self.held.is_empty()
    }

    /// Advance one token: `Some(id)` for each sampled token (an EOS/EOT token included, which
    /// ends the generation), `None` once it is over.
    pub fn next_token(&mut self, engine: &mut Engine, interrupt: Interrupt) -> Result<Option<u32>> {
        if self.finished.is_some() {
            return Ok(None);
        }
        interrupt()?;
        if self.generated >= self.params.max_tokens || self.tokens.len() >= engine.model.n_ctx() {
            self.finish(engine, FinishReason::Length);
            return Ok(None);
        }
        let token = self.step(engine, interrupt)?;
        self.tokens.push(token);
        if engine.tokenizer.is_eog(token) {
            self.finish(engine, FinishReason::Eos);
        }
        Ok(Some(token))
    }

    /// Before a token is picked for this generation: `false` (and the generation finished)
    /// when it may not have another one (`max_tokens`, or the context is full).
    fn may_continue(&mut self, engine: &mut Engine) -> bool {
        if self.finished.is_some() {
            return false;
        }
        if self.generated >= self.params.max_tokens || self.tokens.len() >= engine.model.n_ctx() {
            self.finish(engine, FinishReason::Length);
            return false;
        }
        true
    }

    /// Take `token` picked for this generation (`evaluated` tokens in `seconds`), as
    /// `next_piece` would: returns the text it releases, and at the end what is held.
    fn accept(
        &mut self,
        engine: &mut Engine,
        token: u32,
        scored: Option<TokenLogprobs>,
        evaluated: usize,
        seconds: f64,
    ) -> Result<Option<String>> {
        self.count_token(engine, evaluated, seconds);
        self.logprobs.extend(scored);
        self.tokens.push(token);
        if engine.tokenizer.is_eog(token) {
            self.finish(engine, FinishReason::Eos);
        } else {
            self.held
                .push_str(&self.detok.push(&engine.tokenizer, token)?);
            if let Some(piece) = self.release_text(engine) {
                return Ok(Some(piece));
            }
        }
        Ok(self.take_rest())
    }

    /// Once finished: the text still held, if any.
    fn take_rest(&mut self) -> Option<String> {
        (self.finished.is_some() && !self.held.is_empty()).then(|| std::mem::take(&mut self.held))
    }

    /// The next piece of text, or `None` when the generation is over.
    pub fn next_piece(
        &mut self,
        engine: &mut Engine,
        interrupt: Interrupt,
    ) -> Result<Option<String>> {
        loop {
            if self.finished.is_some() {
                return Ok((!self.held.is_empty()).then(|| std::mem::take(&mut self.held)));
            }
            let Some(token) = self.next_token(engine, interrupt)? else {
                continue;
            };
            if self.finished.is_some() {
                continue; // an end-of-generation token has no text
            }
            self.held
                .push_str(&self.detok.push(&engine.tokenizer, token)?);
            if let Some(piece) = self.release_text(engine) {
                return Ok(Some(piece));
            }
        }
    }

    /// Evaluate what the cache lacks and sample one token; updates the stats.
    fn step(&mut self, engine: &mut Engine, interrupt: Interrupt) -> Result<u32> {
        let t0 = Instant::now();
        let more = self.generated + 1 < self.params.max_tokens;
        let (evaluated, token) = match self.params.logprobs {
            Some(n_top) => {
                let (evaluated, scored) = engine.eval_and_pick_scored(
                    &self.tokens,
                    &self.params.sampling,
                    self.seed,
                    n_top,
                    interrupt,
                )?;
                let token = scored.id;
                self.logprobs.push(scored);
                (evaluated, token)
            }
            None => engine.eval_and_pick(
                &self.tokens,
                &self.params.sampling,
                self.seed,
                more,
                interrupt,
            )?,
        };
        self.count_token(engine, evaluated, t0.elapsed().as_secs_f64());
        Ok(token)
    }

    /// One more token generated, after `evaluated` tokens in `seconds` (the prefill for the
    /// first, a decode step for the others): the stats, here and the engine's.
    fn count_token(&mut self, engine: &mut Engine, evaluated: usize, seconds: f64) {
        if self.generated == 0 {
            self.stats.prefill_tokens = evaluated;
            self.stats.prefill_seconds = seconds;
        } else {
            self.stats.decode_steps += 1;
            self.stats.decode_seconds += seconds;
        }
        self.generated += 1;
        self.stats.generated_tokens = self.generated;
        engine.stats = self.stats.clone();
    }

    /// Hand out the held text up to where a stop string could begin; end at a stop string.
    fn release_text(&mut self, engine: &mut Engine) -> Option<String> {
        let stops = &self.params.stop;
        let first_stop = stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            self.held.truncate(at);
            self.finish(engine, FinishReason::Stop);
            return (!self.held.is_empty()).then(|| std::mem::take(&mut self.held));
        }
        // Keep back the longest tail of `held` that is a prefix of some stop string.
        let keep = stops
            .iter()
            .flat_map(|s| {
                let held = &self.held;
                (1..s.len().min(held.len() + 1))
                    .filter(move |&n| s.is_char_boundary(n) && held.ends_with(&s[..n]))
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        (cut > 0).then(|| {
            let rest = self.held.split_off(cut);
            std::mem::replace(&mut self.held, rest)
        })
    }

    fn finish(&mut self, engine: &mut Engine, reason: FinishReason) {
        self.finished = Some(reason);
        // Text the detokenizer still holds (an incomplete character) is flushed.
        if reason != FinishReason::Stop {
            self.held.push_str(&self.detok.finish());
        }
        self.stats.finish_reason = Some(reason);
        engine.stats = self.stats.clone();
    }

    /// Token counts, timings and the finish reason so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Prompt and generated tokens so far: the positions this sequence holds (or is filling)
    /// in its slot's KV cache.
    pub fn sequence_len(&self) -> usize {
        self.tokens.len()
    }

    /// The generated token ids (without the prompt).
    pub fn generated_ids(&self) -> &[u32] {
        &self.tokens[self.n_prompt..]
    }

    /// Each generated token's log-probabilities (empty unless the request asked for them).
    pub fn logprobs(&self) -> &[TokenLogprobs] {
        &self.logprobs
    }
}

/// Run a whole request on token ids and return the generated ids (an EOS/EOT included).
pub fn generate_ids(
    engine: &mut Engine,
    prompt: Vec<u32>,
    params: GenerateParams,
    interrupt: Interrupt,
) -> Result<Vec<u32>> {
    let mut g = Generation::new(engine, prompt, params)?;
    while g.next_token(engine, interrupt)?.is_some() {}
    Ok(g.generated_ids().to_vec())
}

/// Run a whole request and return its text.
pub fn generate_text(
    engine: &mut Engine,
    prompt: Vec<u32>,
    params: GenerateParams,
    interrupt: Interrupt,
) -> Result<String> {
    Ok(generate_scored(engine, prompt, params, interrupt)?.0)
}

/// Run a whole request and return its text and its tokens' log-probabilities (those the
/// request asks for with `logprobs`; a token after a stop string's start included).
pub fn generate_scored(
    engine: &mut Engine,
    prompt: Vec<u32>,
    params: GenerateParams,
    interrupt: Interrupt,
) -> Result<(String, Vec<TokenLogprobs>)> {
    let mut g = Generation::new(engine, prompt, params)?;
    let mut text = String::new();
    while let Some(piece) = g.next_piece(engine, interrupt)? {
        text.push_str(&piece);
    }
    Ok((text, g.logprobs))
}

/// Prompt tokens `step_batch` evaluates for a generation in one step: a long prompt takes
/// several steps, and the generations running beside it get a token at each.
pub const PREFILL_CHUNK: usize = crate::model::forward::MAX_BATCH;

/// One token for each of several generations at once, each in its own sequence slot
/// (`Engine::set_slots`; one generation a slot). A generation whose slot's cache holds all its
/// tokens but the last joins one batched step (`LanguageModel::decode_batch`: each weight
/// matrix read once for all of them); one whose prompt is not evaluated yet is evaluated
/// alone first, `PREFILL_CHUNK` tokens a step. Every pick is drawn on the host from the row's
/// logits as `ops::sampling` draws for a generation alone (the draw keyed by the seed and the
/// new token's position), so each generation's tokens are those it would get alone, whatever
/// else is in the batch (up to rounding: a batched matmul may add in another order).
///
/// Returns, per generation, the text this step released (at the end, all that was held);
/// finished generations are left as they are.
pub fn step_batch(
    engine: &mut Engine,
    gens: &mut [(usize, &mut Generation)],
    interrupt: Interrupt,
) -> Result<Vec<Option<String>>> {
    let mut out: Vec<Option<String>> = vec![None; gens.len()];
    let vocab = engine.vocab_size();
    let mut rows = Vec::new(); // (index in gens, slot, id, pos)
    for (i, (slot, g)) in gens.iter_mut().enumerate() {
        if !g.may_continue(engine) {
            out[i] = g.take_rest();
            continue;
        }
        let n = g.tokens.len();
        let cached = engine.cached_in(*slot);
        if cached.len() + 1 == n && g.tokens.starts_with(cached) {
            rows.push((i, *slot, g.tokens[n - 1], n - 1));
            continue;
        }
        // The prompt (or whatever the slot lacks): evaluated alone, at most one chunk a step so
        // that the running generations go on meanwhile; after the last chunk, picked on the
        // host.
        interrupt()?;
        let t0 = Instant::now();
        engine.use_slot(*slot)?;
        let (part, complete) = engine.eval_part(&g.tokens, PREFILL_CHUNK, interrupt)?;
        if !complete {
            g.prefill.0 += part;
            g.prefill.1 += t0.elapsed().as_secs_f64();
            continue;
        }
        let (earlier, earlier_seconds) = std::mem::take(&mut g.prefill);
        engine.model.last_logits(&mut engine.logits)?;
        let logits = std::mem::take(&mut engine.logits);
        let picked = pick_rows(&logits, vocab, &[&**g]);
        engine.logits = logits;
        let (token, scored) = picked?.pop().expect("one row");
        let seconds = earlier_seconds + t0.elapsed().as_secs_f64();
        out[i] = g.accept(engine, token, scored, earlier + part, seconds)?;
    }
    if rows.is_empty() {
        return Ok(out);
    }
    interrupt()?;
    let t0 = Instant::now();
    if let [(i, slot, ..)] = rows[..] {
        if gens[i].1.params.logprobs.is_none() {
            // One sequence: its own step (on a GPU, slot 0's decode plan), as when alone.
            engine.use_slot(slot)?;
            let g = &mut *gens[i].1;
            let more = g.generated + 1 < g.params.max_tokens;
            let (evaluated, token) =
                engine.eval_and_pick(&g.tokens, &g.params.sampling, g.seed, more, interrupt)?;
            out[i] = g.accept(engine, token, None, evaluated, t0.elapsed().as_secs_f64())?;
            return Ok(out);
        }
    }
    let places: Vec<(usize, u32, usize)> = rows.iter().map(|r| (r.1, r.2, r.3)).collect();
    let mut logits = vec![0f32; rows.len() * vocab];
    engine.model.decode_batch(&places, &mut logits)?;
    for &(_, slot, id, _) in &rows {
        engine.cached_in(slot).push(id);
    }
    let batch: Vec<&Generation> = rows.iter().map(|r| &*gens[r.0].1).collect();
    let picks = pick_rows(&logits, vocab, &batch)?;
    let seconds = t0.elapsed().as_secs_f64();
    for (&(i, ..), (token, scored)) in rows.iter().zip(picks) {
        out[i] = gens[i].1.accept(engine, token, scored, 1, seconds)?;
    }
    Ok(out)
}

/// The next token of each generation from its row of `logits [gens, vocab]`, drawn as
/// `ops::sampling` draws for it alone, with its log-probabilities when it asks for them.
fn pick_rows(
    logits: &[f32],
    vocab: usize,
    gens: &[&Generation],
) -> Result<Vec<(u32, Option<TokenLogprobs>)>> {
    if logits[..gens.len() * vocab].iter().any(|v| v.is_nan()) {
        return Err(nan_logits());
    }
    let rows: Vec<crate::ops::sampling::SampleRow> = gens
        .iter()
        .map(|g| crate::ops::sampling::SampleRow {
            params: g.params.sampling.op_params(),
            key: DrawKey {
                seed: g.seed,
                sequence: 0,
                position: g.tokens.len() as u32,
            },
            history: &g.tokens,
        })
        .collect();
    let n_top = gens
        .iter()
        .filter_map(|g| g.params.logprobs)
        .max()
        .unwrap_or(0);
    let s = crate::ops::sampling::cpu::sample(logits, gens.len(), vocab, &rows, n_top)?;
    Ok(gens
        .iter()
        .enumerate()
        .map(|(r, g)| {
            let scored = g.params.logprobs.map(|n| TokenLogprobs {
                id: s.ids[r],
                logprob: s.logprobs[r],
                top: (0..n)
                    .map(|j| (s.top_ids[r * n_top + j], s.top_logprobs[r * n_top + j]))
                    .collect(),
            });
            (s.ids[r], scored)
        })
        .collect())
}

/// Generate after each of `prompts` with `params`, up to `max_batch` of them at a time in
/// sequence slots of their own (`step_batch`): a prompt takes a slot as soon as one is free.
/// Returns each generation's text and finish reason, in the order of `prompts`. Afterwards
/// the engine has one slot again (slot 0, holding the last generation that ran in it).
pub fn generate_batch(
    engine: &mut Engine,
    prompts: Vec<Vec<u32>>,
    params: &GenerateParams,
    max_batch: usize,
    interrupt: Interrupt,
) -> Result<Vec<(String, Option<FinishReason>)>> {
    if max_batch == 0 {
        return Err(Error::invalid("max_batch must be at least 1"));
    }
    let mut gens = prompts
        .into_iter()
        .map(|p| Generation::new(engine, p, params.clone()))
        .collect::<Result<Vec<_>>>()?;
    let slots = max_batch.min(gens.len()).max(1);
    let result = run_batch(engine, &mut gens, slots, interrupt);
    let restored = engine.set_slots(1);
    let texts = result?;
    restored?;
    Ok(texts
        .into_iter()
        .zip(&gens)
        .map(|(text, g)| (text, g.finish_reason()))
        .collect())
}

fn run_batch(
    engine: &mut Engine,
    gens: &mut [Generation],
    slots: usize,
    interrupt: Interrupt,
) -> Result<Vec<String>> {
    engine.set_slots(slots)?;
    let mut texts = vec![String::new(); gens.len()];
    let mut running: Vec<(usize, usize)> = Vec::new(); // (generation, slot)
    let mut next = 0;
    loop {
        // Free slots take the next prompts (their caches' contents are reused where they match).
        while running.len() < slots && next < gens.len() {
            let busy: Vec<usize> = running.iter().map(|r| r.1).collect();
            let slot = engine
                .best_slot(&gens[next].tokens, &busy)
                .expect("a free slot");
            running.push((next, slot));
            next += 1;
        }
        if running.is_empty() {
            return Ok(texts);
        }
        let mut refs: Vec<(usize, &mut Generation)> = Vec::with_capacity(running.len());
        let mut order = Vec::with_capacity(running.len());
        for (i, g) in gens.iter_mut().enumerate() {
            if let Some(&(_, slot)) = running.iter().find(|r| r.0 == i) {
                refs.push((slot, g));
                order.push(i);
            }
        }
        let pieces = step_batch(engine, &mut refs, interrupt)?;
        for (&i, piece) in order.iter().zip(pieces) {
            texts[i].push_str(&piece.unwrap_or_default());
        }
        running.retain(|&(i, _)| !gens[i].is_done());
    }
}
