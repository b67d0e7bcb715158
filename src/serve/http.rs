//! The HTTP side: axum routes on a tokio runtime of their own thread.
//!
//! A generation request is read (`openai`), its prompt rendered and tokenized off the async
//! threads, checked against the context, and queued as a `Job`; the answer is built from the
//! job's events, as one JSON body or as server-sent events ending with `data: [DONE]`.
//! Dropping the answer (the client went away) drops the job's receiver, which cancels it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::openai::{self, ApiError, Input, Usage};
use super::scheduler::{Event, Job, QueueFull};
use super::{Frontend, ServeConfig, Shared};
use crate::error::{Error, Result};
use crate::generate::{FinishReason, GenerateParams, TokenLogprobs};

/// What every handler reads.
struct App {
    frontend: Frontend,
    model_id: Arc<str>,
    /// When the server started (seconds since the epoch), the model's `created`.
    created: u64,
    api_key: Option<String>,
    max_body_bytes: usize,
    shared: Arc<Shared>,
}

/// Start the HTTP thread serving `listener` until the server stops.
pub(super) fn spawn(
    listener: std::net::TcpListener,
    frontend: Frontend,
    config: ServeConfig,
    shared: Arc<Shared>,
) -> Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rocmforge-http")
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the HTTP runtime: {e}")))?;
    let app = Arc::new(App {
        frontend,
        model_id: config.model_id.into(),
        created: unix_time(),
        api_key: config.api_key,
        max_body_bytes: config.max_body_bytes,
        shared: shared.clone(),
    });
    let router = router(app);
    // Made inside the runtime (it registers with the runtime's reactor), but before the
    // thread starts, so that a failure is the caller's error.
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)
            .map_err(|e| Error::runtime(format!("cannot listen: {e}")))?
    };
    std::thread::Builder::new()
        .name("rocmforge-http".to_string())
        .spawn(move || {
            runtime.block_on(run(listener, router, &shared));
            runtime.shutdown_timeout(Duration::from_millis(200));
        })
        .map_err(|e| Error::runtime(format!("cannot start the HTTP thread: {e}")))
}

/// Serve until a stop: then stop accepting, and wait for the open requests to be answered
/// (after an abort, at most a second more: a client that does not read is dropped).
async fn run(listener: tokio::net::TcpListener, router: Router, shared: &Arc<Shared>) {
    let flags = shared.clone();
    let stopping = async move {
        while !flags.stopping.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(stopping)
            .into_future(),
    );
    let mut aborted_at = None;
    while !server.is_finished() {
        if shared.aborting.load(Ordering::SeqCst) {
            let t = *aborted_at.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_secs(1) {
                server.abort();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(app.max_body_bytes))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// The endpoints `/metrics` counts by name (anything else counts as "other").
const ENDPOINTS: [&str; 5] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/health",
    "/metrics",
];

/// Every request passes here: the API key check (all endpoints but /health), then the count.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let endpoint = ENDPOINTS
        .iter()
        .copied()
        .find(|e| *e == path)
        .unwrap_or("other");
    let response = if endpoint != "/health" && !authorized(&app, req.headers()) {
        let mut r = error_response(
            &ApiError::new(
                401,
                "invalid_request_error",
                "a valid API key is required: send the header `Authorization: Bearer <key>`",
            )
            .with_code("invalid_api_key"),
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        next.run(req).await
    };
    app.shared
        .metrics
        .count_request(endpoint, response.status().as_u16());
    response
}

fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(key) = &app.api_key else {
        return true;
    };
    // The scheme's name is case-insensitive (RFC 9110, 11.1).
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    // Compared in time independent of where they differ.
    let (a, b) = (given.as_bytes(), key.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, e.to_json())
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

async fn not_found(req: Request) -> Response {
    error_response(
        &ApiError::new(
            404,
            "invalid_request_error",
            format!("no endpoint {} {}", req.method(), req.uri().path()),
        )
        .with_code("not_found"),
    )
}

async fn method_not_allowed(req: Request) -> Response {
    error_response(&ApiError::new(
        405,
        "invalid_request_error",
        format!("{} does not take {}", req.uri().path(), req.method()),
    ))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if app.shared.stopping.load(Ordering::SeqCst) {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"stopping"}"#.into(),
        )
    } else {
        json_response(StatusCode::OK, r#"{"status":"ok"}"#.into())
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.shared.metrics.render(app.shared.queue.len());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn models(State(app): State<Arc<App>>) -> Response {
    let list = openai::ModelList {
        object: "list",
        data: [openai::ModelCard {
            id: &app.model_id,
            object: "model",
            created: app.created,
            owned_by: "rocmforge",
        }],
    };
    json_response(StatusCode::OK, to_json(&list))
}

#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Chat,
    Completion,
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let received = Instant::now();
    let req = body
        .map_err(|r| body_error(&app, r))
        .and_then(|b| openai::parse_chat(&b));
    match req {
        Ok(req) => generate(app, Endpoint::Chat, req, received).await,
        Err(e) => error_response(&e),
    }
}

async fn completions(
    State(app): State<Arc<App>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let received = Instant::now();
    let req = body
        .map_err(|r| body_error(&app, r))
        .and_then(|b| openai::parse_completion(&b));
    match req {
        Ok(req) => generate(app, Endpoint::Completion, req, received).await,
        Err(e) => error_response(&e),
    }
}

fn body_error(app: &App, r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            413,
            "invalid_request_error",
            format!(
                "the request body is larger than the limit of {} bytes",
                app.max_body_bytes
            ),
        )
    } else {
        ApiError::new(
            r.status().as_u16(),
            "invalid_request_error",
            format!("cannot read the request body: {}", r.body_text()),
        )
    }
}

/// Tokenize, check, queue, answer.
async fn generate(
    app: Arc<App>,
    endpoint: Endpoint,
    req: openai::Request,
    received: Instant,
) -> Response {
    // Rendering and tokenizing a long prompt takes a while: not on the async threads.
    let prepared = {
        let (app, req) = (app.clone(), req.clone());
        tokio::task::spawn_blocking(move || prepare(&app.frontend, &req)).await
    };
    let (prompt, max_tokens) = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error_response(&e),
        Err(e) => {
            return error_response(&ApiError::new(
                500,
                "server_error",
                format!("preparing the prompt failed: {e}"),
            ))
        }
    };
    let prompt_tokens = prompt.len();
    let (events, rx) = unbounded_channel();
    let job = Job {
        prompt,
        params: GenerateParams {
            max_tokens,
            sampling: req.sampling.clone(),
            seed: req.seed,
            stop: req.stop.clone(),
            logprobs: req.logprobs,
        },
        received,
        events,
    };
    match app.shared.queue.push(job) {
        Ok(()) => {}
        Err(QueueFull::Full) => {
            let mut r = error_response(
                &ApiError::new(
                    429,
                    "rate_limit_error",
                    "too many requests are waiting for the model; retry later",
                )
                .with_code("rate_limit_exceeded"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Err(QueueFull::Closed) => {
            return error_response(&ApiError::new(
                503,
                "server_error",
                "the server is stopping",
            ))
        }
    }
    let answer = Answer {
        endpoint,
        id: format!(
            "{}-{}",
            match endpoint {
                Endpoint::Chat => "chatcmpl",
                Endpoint::Completion => "cmpl",
            },
            unique_id()
        ),
        created: unix_time(),
        app,
        logprobs: req.logprobs.is_some(),
        include_usage: req.include_usage,
        prompt_tokens,
        offset: 0,
    };
    if req.stream {
        stream(rx, answer)
    } else {
        collect(rx, answer).await
    }
}

/// The prompt's token ids and the tokens it may generate, or the 400 that says why not.
fn prepare(
    frontend: &Frontend,
    req: &openai::Request,
) -> std::result::Result<(Vec<u32>, usize), ApiError> {
    let tokenizer = &frontend.tokenizer;
    let ids = match &req.input {
        Input::Chat(messages) => {
            let template = frontend.chat_template.as_deref().ok_or_else(|| {
                ApiError::bad_request("this model file has no chat template; use /v1/completions")
            })?;
            let (text, add_bos) = crate::chat::chat_prompt(template, tokenizer, messages)
                .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
            tokenizer.encode(&text, add_bos, true)
        }
        Input::Text(text) => tokenizer.encode(text, None, true),
        Input::Ids(ids) => {
            let vocab = tokenizer.vocab_size();
            ids.iter()
                .map(|&t| match u32::try_from(t) {
                    Ok(id) if (id as usize) < vocab => Ok(id),
                    _ => Err(ApiError::invalid(
                        "prompt",
                        format!("token id {t} is outside the vocabulary (size {vocab})"),
                    )),
                })
                .collect::<std::result::Result<Vec<u32>, _>>()?
        }
    };
    let param = match req.input {
        Input::Chat(_) => "messages",
        _ => "prompt",
    };
    if ids.is_empty() {
        return Err(ApiError::invalid(param, "the prompt has no tokens"));
    }
    let n_ctx = frontend.n_ctx;
    if ids.len() > n_ctx {
        return Err(ApiError::invalid(
            param,
            format!(
                "the prompt has {} tokens, more than the context of {n_ctx} tokens",
                ids.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let room = n_ctx - ids.len();
    let max_tokens = match req.max_tokens {
        None => room,
        Some(m) if m <= room => m,
        Some(m) => {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "max_tokens is {m}, but the prompt's {} tokens leave room for {room} in the context of {n_ctx} tokens",
                    ids.len()
                ),
            )
            .with_code("context_length_exceeded"))
        }
    };
    Ok((ids, max_tokens))
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 16 hex digits, different for every call of the process.
fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| crate::sampling::Rng::from_entropy().next_u64());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // A bijection of the counter (SplitMix64's finalizer): distinct, and not sequential.
    let mut z = base.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    format!("{:016x}", z ^ (z >> 31))
}

/// Builds one request's answer from its events.
struct Answer {
    endpoint: Endpoint,
    id: String,
    created: u64,
    app: Arc<App>,
    logprobs: bool,
    include_usage: bool,
    prompt_tokens: usize,
    /// Characters of the token texts so far (the completions' `text_offset`).
    offset: usize,
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::Eos => "stop",
        FinishReason::Length => "length",
    }
}

impl Answer {
    /// A token's text (lossy where it is part of a character) and bytes.
    fn token(&self, id: u32) -> (String, Vec<u8>) {
        let bytes = self
            .app
            .frontend
            .tokenizer
            .piece(id, true)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }

    /// The tokens to report: an ending end-of-generation token has no text and is left out.
    fn reported<'t>(&self, tokens: &'t [TokenLogprobs]) -> Vec<&'t TokenLogprobs> {
        let tokenizer = &self.app.frontend.tokenizer;
        tokens.iter().filter(|t| !tokenizer.is_eog(t.id)).collect()
    }

    fn chat_logprobs(&self, tokens: &[TokenLogprobs]) -> Option<openai::ChatLogprobs> {
        if !self.logprobs {
            return None;
        }
        let content = self
            .reported(tokens)
            .into_iter()
            .map(|t| {
                let (token, bytes) = self.token(t.id);
                let top_logprobs = t
                    .top
                    .iter()
                    .map(|&(id, logprob)| {
                        let (token, bytes) = self.token(id);
                        openai::TopLogprob {
                            token,
                            logprob,
                            bytes,
                        }
                    })
                    .collect();
                openai::ChatTokenLogprob {
                    token,
                    logprob: t.logprob,
                    bytes,
                    top_logprobs,
                }
            })
            .collect();
        Some(openai::ChatLogprobs { content })
    }

    fn text_logprobs(&mut self, tokens: &[TokenLogprobs]) -> Option<openai::TextLogprobs> {
        if !self.logprobs {
            return None;
        }
        let mut out = openai::TextLogprobs::default();
        for t in self.reported(tokens) {
            let (token, _) = self.token(t.id);
            out.text_offset.push(self.offset);
            self.offset += token.chars().count();
            out.tokens.push(token);
            out.token_logprobs.push(t.logprob);
            out.top_logprobs.push(
                t.top
                    .iter()
                    .map(|&(id, logprob)| (self.token(id).0, logprob))
                    .collect(),
            );
        }
        Some(out)
    }

    fn usage(&self, completion_tokens: usize) -> Usage {
        Usage::new(self.prompt_tokens, completion_tokens)
    }

    /// The whole answer (not streamed).
    fn full(
        &mut self,
        text: String,
        tokens: &[TokenLogprobs],
        finish: FinishReason,
        completion_tokens: usize,
    ) -> String {
        let model = self.app.model_id.clone();
        let usage = self.usage(completion_tokens);
        match self.endpoint {
            Endpoint::Chat => to_json(&openai::ChatCompletion {
                id: &self.id,
                object: "chat.completion",
                created: self.created,
                model: &model,
                choices: [openai::ChatChoice {
                    index: 0,
                    message: openai::ChatMessageOut {
                        role: "assistant",
                        content: text,
                    },
                    logprobs: self.chat_logprobs(tokens),
                    finish_reason: finish_name(finish),
                }],
                usage,
            }),
            Endpoint::Completion => {
                let logprobs = self.text_logprobs(tokens);
                to_json(&openai::TextCompletion {
                    id: &self.id,
                    object: "text_completion",
                    created: self.created,
                    model: &model,
                    choices: vec![openai::TextChoice {
                        index: 0,
                        text,
                        logprobs,
                        finish_reason: Some(finish_name(finish)),
                    }],
                    usage: Some(Some(usage)),
                })
            }
        }
    }

    /// One streamed chunk: a piece of text with its tokens, or the end (`finish`), or (with
    /// `usage` and no choice) the usage chunk.
    fn chunk(
        &mut self,
        role: bool,
        text: Option<String>,
        tokens: &[TokenLogprobs],
        finish: Option<FinishReason>,
        usage: Option<Usage>,
    ) -> String {
        let model = self.app.model_id.clone();
        // With include_usage every chunk has a `usage` field: null but in the last one.
        let usage_field = self.include_usage.then_some(usage);
        let with_choice = usage.is_none();
        match self.endpoint {
            Endpoint::Chat => {
                let logprobs = self.chat_logprobs(tokens).filter(|l| !l.content.is_empty());
                let choices = with_choice
                    .then(|| openai::ChatChunkChoice {
                        index: 0,
                        delta: openai::Delta {
                            role: role.then_some("assistant"),
                            content: text,
                        },
                        logprobs,
                        finish_reason: finish.map(finish_name),
                    })
                    .into_iter()
                    .collect();
                to_json(&openai::ChatChunk {
                    id: &self.id,
                    object: "chat.completion.chunk",
                    created: self.created,
                    model: &model,
                    choices,
                    usage: usage_field,
                })
            }
            Endpoint::Completion => {
                let logprobs = self.text_logprobs(tokens).filter(|l| !l.tokens.is_empty());
                let choices = with_choice
                    .then(|| openai::TextChoice {
                        index: 0,
                        text: text.unwrap_or_default(),
                        logprobs,
                        finish_reason: finish.map(finish_name),
                    })
                    .into_iter()
                    .collect();
                to_json(&openai::TextCompletion {
                    id: &self.id,
                    object: "text_completion",
                    created: self.created,
                    model: &model,
                    choices,
                    usage: usage_field,
                })
            }
        }
    }
}

/// Wait for the whole generation and answer with one JSON body.
async fn collect(mut rx: UnboundedReceiver<Event>, mut answer: Answer) -> Response {
    let mut text = String::new();
    let mut tokens = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Piece {
                text: t,
                tokens: ts,
            } => {
                text.push_str(&t);
                tokens.extend(ts);
            }
            Event::Done {
                finish,
                completion_tokens,
                ..
            } => {
                let body = answer.full(text, &tokens, finish, completion_tokens);
                return json_response(StatusCode::OK, body);
            }
            Event::Failed(e) => return error_response(&ApiError::from_engine(&e)),
        }
    }
    error_response(&ApiError::new(
        500,
        "server_error",
        "the engine ended the request without an answer",
    ))
}

/// Answer with server-sent events as the generation goes.
fn stream(rx: UnboundedReceiver<Event>, mut answer: Answer) -> Response {
    let mut out = VecDeque::new();
    if answer.endpoint == Endpoint::Chat {
        let first = answer.chunk(true, Some(String::new()), &[], None, None);
        out.push_back(first);
    }
    let events = EventStream {
        rx,
        answer,
        out,
        done: false,
    };
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The SSE body: each job event becomes one or more `data:` lines; dropping it (the client
/// went away) drops the receiver, which cancels the job.
struct EventStream {
    rx: UnboundedReceiver<Event>,
    answer: Answer,
    /// Data lines ready to send.
    out: VecDeque<String>,
    /// The last line (`[DONE]`) is in `out`.
    done: bool,
}

impl EventStream {
    fn push(&mut self, event: Option<Event>) {
        match event {
            Some(Event::Piece { text, tokens }) => {
                // The tokens after the last text may be only an end-of-generation token.
                let logprobs = self.answer.logprobs && !self.answer.reported(&tokens).is_empty();
                if text.is_empty() && !logprobs {
                    return;
                }
                let line = self.answer.chunk(false, Some(text), &tokens, None, None);
                self.out.push_back(line);
            }
            Some(Event::Done {
                finish,
                completion_tokens,
                ..
            }) => {
                let content = (self.answer.endpoint == Endpoint::Completion).then(String::new);
                let last = self.answer.chunk(false, content, &[], Some(finish), None);
                self.out.push_back(last);
                if self.answer.include_usage {
                    let usage = self.answer.usage(completion_tokens);
                    let line = self.answer.chunk(false, None, &[], None, Some(usage));
                    self.out.push_back(line);
                }
                self.finish();
            }
            Some(Event::Failed(e)) => {
                self.out.push_back(ApiError::from_engine(&e).to_json());
                self.finish();
            }
            None => {
                let e = ApiError::new(
                    500,
                    "server_error",
                    "the engine ended the request without an answer",
                );
                self.out.push_back(e.to_json());
                self.finish();
            }
        }
    }

    fn finish(&mut self) {
        self.out.push_back("[DONE]".to_string());
        self.done = true;
    }
}

impl futures_core::Stream for EventStream {
    type Item = std::result::Result<sse::Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(line) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(sse::Event::default().data(line))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(event) => this.push(event),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
