//! The OpenAI protocol's JSON. Requests are read field by field from the parsed value, so
//! that a missing field or a wrong type answers 400 naming the field; responses are serde
//! structs shaped as OpenAI's (`chat.completion`, `chat.completion.chunk`, `text_completion`,
//! the model list and the error object).
//!
//! Fields left out (or `null`) take `Model.generate`'s defaults (temperature 0.8, top_k 40,
//! top_p 0.95, min_p 0.05). Fields this server does not know are accepted and ignored, as
//! vLLM and llama.cpp's server do (OpenAI's own API answers 400): clients send extensions of
//! other servers (`ignore_eos`, ...) that must not fail a request. Known OpenAI fields this
//! server cannot honour, where ignoring them would change the answer (`n` > 1, `best_of`,
//! `echo`, `suffix`, `logit_bias`, `tools`, a structured `response_format`), answer 400.
//! `model` is read (a string) but not matched: one model is served. A known field of the
//! wrong type or out of its range answers 400 naming it in `param`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::chat::ChatMessage;
use crate::ops::sampling::MAX_TOP;
use crate::sampling::SamplingParams;

/// An error answer: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 about request field `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: None,
        }
    }

    /// 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// The error as an engine failure answers it: bad values 400, the device 503, else 500.
    pub fn from_engine(e: &crate::error::Error) -> ApiError {
        use crate::error::Error;
        match e {
            Error::InvalidArgument(m) | Error::InvalidType(m) => ApiError::bad_request(m.clone()),
            Error::Interrupted => ApiError::new(
                503,
                "server_error",
                "the server is stopping; the request was cancelled",
            ),
            Error::OutOfMemory { .. } | Error::Device(_) => {
                ApiError::new(503, "server_error", e.to_string())
            }
            _ => ApiError::new(500, "server_error", e.to_string()),
        }
    }

    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.body()).unwrap_or_default()
    }
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorObject<'a>,
}

#[derive(Serialize)]
pub struct ErrorObject<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

/// What a request asks the model for.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// `/v1/chat/completions`: the conversation, rendered with the chat template.
    Chat(Vec<ChatMessage>),
    /// `/v1/completions`: prompt text.
    Text(String),
    /// `/v1/completions`: prompt token ids (checked against the vocabulary later).
    Ids(Vec<i64>),
}

/// A request's fields, read and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub input: Input,
    /// None: until the context is full.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk carries the usage.
    pub include_usage: bool,
    /// Log-probabilities of each token and of the n most likely (None: not asked).
    pub logprobs: Option<usize>,
}

/// The request object's fields, with typed getters that name the field in their errors.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The field's value; an explicit `null` counts as absent.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn number(&self, name: &str) -> Result<Option<f64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "a number", v)),
        }
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match (v.as_i64(), v.as_u64(), v.as_f64()) {
                (Some(n), _, _) => Ok(Some(n)),
                (None, Some(_), _) => Err(ApiError::invalid(name, format!("{name} is too large"))),
                // JSON integers past 64 bits are read as floats: say what is wrong with them.
                (None, None, Some(x)) if x.fract() == 0.0 && x.abs() >= 9.2e18 => Err(
                    ApiError::invalid(name, format!("{name} is out of range, got {x}")),
                ),
                _ => Err(wrong_type(name, "an integer", v)),
            },
        }
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "a boolean", v)),
        }
    }

    fn string(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "a string", v)),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(name: &str, want: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        name,
        format!("{name} must be {want}, got {}", type_name(got)),
    )
}

/// Parse a request body as a JSON object.
fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::bad_request(format!(
            "the request body must be a JSON object, got {}",
            type_name(&other)
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// Read a `/v1/chat/completions` body.
pub fn parse_chat(body: &[u8]) -> Result<Request, ApiError> {
    let map = object(body)?;
    let f = Fields(&map);
    let messages = match f.get("messages") {
        None => return Err(ApiError::invalid("messages", "messages is required")),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid(
                "messages",
                "messages must hold at least one message",
            ))
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?,
        Some(v) => return Err(wrong_type("messages", "an array of messages", v)),
    };
    let logprobs = match (f.boolean("logprobs")?, f.integer("top_logprobs")?) {
        (Some(true), n) => Some(top_count("top_logprobs", n.unwrap_or(0))?),
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs needs logprobs set to true",
            ))
        }
        _ => None,
    };
    let max_tokens = match f.integer("max_completion_tokens")? {
        Some(n) => Some(count("max_completion_tokens", n)?),
        None => f
            .integer("max_tokens")?
            .map(|n| count("max_tokens", n))
            .transpose()?,
    };
    common(&f, Input::Chat(messages), max_tokens, logprobs)
}

/// Read a `/v1/completions` body.
pub fn parse_completion(body: &[u8]) -> Result<Request, ApiError> {
    let map = object(body)?;
    let f = Fields(&map);
    let input = match f.get("prompt") {
        None => return Err(ApiError::invalid("prompt", "prompt is required")),
        Some(v) => prompt(v)?,
    };
    if f.boolean("echo")? == Some(true) {
        return Err(ApiError::invalid("echo", "echo is not supported"));
    }
    if f.string("suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "suffix is not supported"));
    }
    if f.integer("best_of")?.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("best_of", "best_of must be 1"));
    }
    let logprobs = f
        .integer("logprobs")?
        .map(|n| top_count("logprobs", n))
        .transpose()?;
    let max_tokens = f
        .integer("max_tokens")?
        .map(|n| count("max_tokens", n))
        .transpose()?;
    common(&f, input, max_tokens, logprobs)
}

/// A completion's `prompt`: a string, token ids, or a list holding one of these.
fn prompt(v: &Value) -> Result<Input, ApiError> {
    let ids = |items: &[Value]| -> Option<Vec<i64>> { items.iter().map(Value::as_i64).collect() };
    let one_prompt = || {
        ApiError::invalid(
            "prompt",
            "prompt must be a string, a list of token ids, or a list holding one of these (one prompt per request)",
        )
    };
    match v {
        Value::String(s) => Ok(Input::Text(s.clone())),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_number) => {
            ids(items).map(Input::Ids).ok_or_else(one_prompt)
        }
        Value::Array(items) if items.len() == 1 => match &items[0] {
            Value::String(s) => Ok(Input::Text(s.clone())),
            Value::Array(inner) if !inner.is_empty() => {
                ids(inner).map(Input::Ids).ok_or_else(one_prompt)
            }
            _ => Err(one_prompt()),
        },
        _ => Err(one_prompt()),
    }
}

/// One chat message: `role` and `content` (a string, or a list of text parts), and any other
/// string fields (for templates that read them, such as `name`).
fn message(i: usize, m: &Value) -> Result<ChatMessage, ApiError> {
    let param = format!("messages[{i}]");
    let Value::Object(fields) = m else {
        return Err(ApiError::invalid(
            &param,
            format!("{param} must be an object, got {}", type_name(m)),
        ));
    };
    let mut out = ChatMessage::new();
    match fields.get("role") {
        Some(Value::String(r)) => out.insert("role".to_string(), r.clone()),
        Some(v) => return Err(wrong_type(&format!("{param}.role"), "a string", v)),
        None => {
            return Err(ApiError::invalid(
                &format!("{param}.role"),
                format!("{param}.role is required"),
            ))
        }
    };
    let content = match fields.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| text_part(&format!("{param}.content[{j}]"), part))
            .collect::<Result<String, _>>()?,
        Some(v) => {
            return Err(wrong_type(
                &format!("{param}.content"),
                "a string or a list of text parts",
                v,
            ))
        }
    };
    out.insert("content".to_string(), content);
    for (k, v) in fields {
        if let (false, Value::String(s)) = (k == "role" || k == "content", v) {
            out.insert(k.clone(), s.clone());
        }
    }
    Ok(out)
}

/// The text of one content part `{"type": "text", "text": ...}` (other types: 400).
fn text_part<'v>(param: &str, part: &'v Value) -> Result<&'v str, ApiError> {
    let kind = part.get("type").and_then(Value::as_str);
    match (kind, part.get("text").and_then(Value::as_str)) {
        (Some("text"), Some(text)) => Ok(text),
        (Some(kind), _) if kind != "text" => Err(ApiError::invalid(
            param,
            format!("{param}: content parts of type {kind:?} are not supported (text only)"),
        )),
        _ => Err(ApiError::invalid(
            param,
            format!("{param} must be {{\"type\": \"text\", \"text\": string}}"),
        )),
    }
}

fn count(name: &str, n: i64) -> Result<usize, ApiError> {
    usize::try_from(n).map_err(|_| ApiError::invalid(name, format!("{name} must be >= 0, got {n}")))
}

fn top_count(name: &str, n: i64) -> Result<usize, ApiError> {
    match usize::try_from(n) {
        Ok(n) if n <= MAX_TOP => Ok(n),
        _ => Err(ApiError::invalid(
            name,
            format!("{name} must be in [0, {MAX_TOP}], got {n}"),
        )),
    }
}

/// The fields both endpoints share: sampling, seed, stop, stream, n.
fn common(
    f: &Fields<'_>,
    input: Input,
    max_tokens: Option<usize>,
    logprobs: Option<usize>,
) -> Result<Request, ApiError> {
    f.string("model")?;
    f.string("user")?;
    // OpenAI fields that would change the answer if honoured: ignoring them would answer
    // something else than what was asked, so they are refused (empty or plain-text forms pass).
    if f.get("logit_bias")
        .is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty()))
    {
        return Err(ApiError::invalid(
            "logit_bias",
            "logit_bias is not supported",
        ));
    }
    if f.get("tools")
        .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(ApiError::invalid("tools", "tools are not supported"));
    }
    let plain_text = |v: &Value| v.get("type").and_then(Value::as_str) == Some("text");
    if f.get("response_format").is_some_and(|v| !plain_text(v)) {
        return Err(ApiError::invalid(
            "response_format",
            "response_format must be {\"type\": \"text\"} (structured output is not supported)",
        ));
    }
    if let Some(n) = f.integer("n")? {
        if n != 1 {
            return Err(ApiError::invalid(
                "n",
                format!("n must be 1 (one choice per request), got {n}"),
            ));
        }
    }
    let mut s = SamplingParams::default();
    let number = |name: &str, ok: &dyn Fn(f64) -> bool, want: &str| {
        f.number(name)?
            .map(|x| {
                if ok(x) {
                    Ok(x as f32)
                } else {
                    Err(ApiError::invalid(
                        name,
                        format!("{name} must be {want}, got {x}"),
                    ))
                }
            })
            .transpose()
    };
    if let Some(t) = number("temperature", &|x| x >= 0.0, "a number >= 0")? {
        s.temperature = t;
    }
    if let Some(p) = number("top_p", &|x| x > 0.0 && x <= 1.0, "in (0, 1]")? {
        s.top_p = p;
    }
    if let Some(p) = number("min_p", &|x| (0.0..=1.0).contains(&x), "in [0, 1]")? {
        s.min_p = p;
    }
    let penalty = |x: f64| (-2.0..=2.0).contains(&x);
    if let Some(p) = number("presence_penalty", &penalty, "in [-2, 2]")? {
        s.presence_penalty = p;
    }
    if let Some(p) = number("frequency_penalty", &penalty, "in [-2, 2]")? {
        s.frequency_penalty = p;
    }
    let positive = |x: f64| x > 0.0 && x.is_finite() && x < f32::MAX as f64;
    if let Some(p) = number("repetition_penalty", &positive, "a number > 0")? {
        s.repeat_penalty = p;
    }
    match f.integer("top_k")? {
        // -1 (as vLLM takes it) and 0 keep every token.
        Some(-1) => s.top_k = 0,
        Some(k) => s.top_k = count("top_k", k)?,
        None => {}
    }
    if s.temperature > f32::MAX {
        return Err(ApiError::invalid("temperature", "temperature is too large"));
    }
    s.check()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Any 64-bit integer seeds the draws (negative ones as their two's complement).
    let seed = f.integer("seed")?.map(|n| n as u64);
    let stop = match f.get("stop") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid("stop", "stop must be a string or a list of strings")
            })?,
        Some(v) => return Err(wrong_type("stop", "a string or a list of strings", v)),
    };
    let stream = f.boolean("stream")?.unwrap_or(false);
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(wrong_type("stream_options.include_usage", "a boolean", v)),
        },
        Some(v) => return Err(wrong_type("stream_options", "an object", v)),
    };
    Ok(Request {
        input,
        max_tokens,
        sampling: s,
        seed,
        stop,
        stream,
        include_usage,
        logprobs,
    })
}

// ---- responses ----

#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Serialize)]
pub struct ChatCompletion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: [ChatChoice; 1],
    pub usage: Usage,
}

#[derive(Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatMessageOut,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: &'static str,
}

#[derive(Serialize)]
pub struct ChatMessageOut {
    pub role: &'static str,
    pub content: String,
}

#[derive(Serialize)]
pub struct ChatChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<ChatChunkChoice>,
    /// Present (null but in the last chunk) only with `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Serialize, Default)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

#[derive(Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Serialize)]
pub struct TextCompletion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<TextChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
pub struct TextChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<TextLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// The legacy completions' log-probabilities: parallel lists, one entry per token.
#[derive(Serialize, Default)]
pub struct TextLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<BTreeMap<String, f32>>,
    /// Each token's offset (in characters) in the completion's text.
    pub text_offset: Vec<usize>,
}

#[derive(Serialize)]
pub struct ModelList<'a> {
    pub object: &'static str,
    pub data: [ModelCard<'a>; 1],
}

#[derive(Serialize)]
pub struct ModelCard<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<Request, ApiError>) -> ApiError {
        r.expect_err("an error")
    }

    #[test]
    fn chat_fields() {
        let r = parse_chat(
            br#"{"model": "x", "messages": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}], "name": "bo"}],
                "max_completion_tokens": 7, "temperature": 0, "top_p": 0.5, "top_k": -1,
                "stop": "END", "seed": -1, "logprobs": true, "top_logprobs": 3, "n": 1,
                "stream": true, "stream_options": {"include_usage": true}, "whatever": [1]}"#,
        )
        .unwrap();
        let Input::Chat(m) = &r.input else { panic!() };
        assert_eq!(m[1]["content"], "Hi!");
        assert_eq!(m[1]["name"], "bo");
        assert_eq!(r.max_tokens, Some(7));
        assert_eq!(r.sampling.temperature, 0.0);
        assert_eq!(r.sampling.top_k, 0);
        assert_eq!(r.seed, Some(u64::MAX));
        assert_eq!(r.stop, vec!["END".to_string()]);
        assert_eq!(r.logprobs, Some(3));
        assert!(r.stream && r.include_usage);
        let d = parse_chat(br#"{"messages": [{"role": "user", "content": "x"}]}"#).unwrap();
        assert_eq!(d.sampling, SamplingParams::default());
        assert_eq!((d.max_tokens, d.logprobs, d.stream), (None, None, false));
    }

    #[test]
    fn completion_prompts() {
        let p = |body: &str| parse_completion(body.as_bytes()).map(|r| r.input);
        assert_eq!(p(r#"{"prompt": "a"}"#), Ok(Input::Text("a".into())));
        assert_eq!(p(r#"{"prompt": ["a"]}"#), Ok(Input::Text("a".into())));
        assert_eq!(p(r#"{"prompt": [1, 2]}"#), Ok(Input::Ids(vec![1, 2])));
        assert_eq!(p(r#"{"prompt": [[3]]}"#), Ok(Input::Ids(vec![3])));
        for bad in [
            r#"{"prompt": ["a", "b"]}"#,
            r#"{"prompt": 5}"#,
            r#"{"prompt": [1.5]}"#,
            r#"{"prompt": []}"#,
        ] {
            assert_eq!(
                p(bad).unwrap_err().param.as_deref(),
                Some("prompt"),
                "{bad}"
            );
        }
        let r = parse_completion(br#"{"prompt": "a", "logprobs": 2, "max_tokens": 3}"#).unwrap();
        assert_eq!((r.logprobs, r.max_tokens), (Some(2), Some(3)));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"prompt": "a", "temperature": "hot"}"#, "temperature"),
            (r#"{"prompt": "a", "temperature": -1}"#, "temperature"),
            (r#"{"prompt": "a", "top_p": 0}"#, "top_p"),
            (r#"{"prompt": "a", "top_k": -2}"#, "top_k"),
            (r#"{"prompt": "a", "min_p": 2}"#, "min_p"),
            (
                r#"{"prompt": "a", "presence_penalty": 3}"#,
                "presence_penalty",
            ),
            (
                r#"{"prompt": "a", "frequency_penalty": -3}"#,
                "frequency_penalty",
            ),
            (
                r#"{"prompt": "a", "repetition_penalty": 0}"#,
                "repetition_penalty",
            ),
            (r#"{"prompt": "a", "max_tokens": -1}"#, "max_tokens"),
            (r#"{"prompt": "a", "max_tokens": 1.5}"#, "max_tokens"),
            (r#"{"prompt": "a", "n": 2}"#, "n"),
            (r#"{"prompt": "a", "stop": [1]}"#, "stop"),
            (r#"{"prompt": "a", "stream": "yes"}"#, "stream"),
            (r#"{"prompt": "a", "logprobs": 21}"#, "logprobs"),
            (r#"{"prompt": "a", "model": 3}"#, "model"),
            (
                r#"{"prompt": "a", "stream_options": {"include_usage": 1}}"#,
                "stream_options.include_usage",
            ),
            (r#"{"max_tokens": 3}"#, "prompt"),
            (r#"{"prompt": "a", "max_tokens": "ten"}"#, "max_tokens"),
            (r#"{"prompt": "a", "temperature": [1]}"#, "temperature"),
            (r#"{"prompt": "a", "temperature": 1e300}"#, "temperature"),
            (r#"{"prompt": "a", "top_p": 1e300}"#, "top_p"),
            (r#"{"prompt": "a", "stop": 5}"#, "stop"),
            (r#"{"prompt": "a", "logprobs": -1}"#, "logprobs"),
            (
                r#"{"prompt": "a", "max_tokens": 100000000000000000000}"#,
                "max_tokens",
            ),
            (r#"{"prompt": "a", "seed": 18446744073709551616}"#, "seed"),
            (r#"{"prompt": "a", "logit_bias": {"5": 100}}"#, "logit_bias"),
            (
                r#"{"prompt": "a", "response_format": {"type": "json_object"}}"#,
                "response_format",
            ),
        ];
        for (body, param) in cases {
            let e = err(parse_completion(body.as_bytes()));
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(*param)),
                "{body}: {e:?}"
            );
            assert!(e.message.contains(param), "{body}: {}", e.message);
        }
        let chat: &[(&str, &str)] = &[
            (r#"{"messages": "hi"}"#, "messages"),
            (r#"{"messages": []}"#, "messages"),
            (r#"{"messages": [3]}"#, "messages[0]"),
            (r#"{"messages": [{"content": "x"}]}"#, "messages[0].role"),
            (
                r#"{"messages": [{"role": "user", "content": 5}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
                "messages[0].content[0]",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}"#,
                "top_logprobs",
            ),
        ];
        for (body, param) in chat {
            let e = err(parse_chat(body.as_bytes()));
            assert_eq!(e.param.as_deref(), Some(*param), "{body}: {e:?}");
        }
        // Unknown fields, and the empty or plain forms of the unsupported ones, are accepted.
        let r = parse_chat(
            br#"{"messages": [{"role": "user", "content": "x"}], "frobnicate": {"a": [1]},
                "ignore_eos": true, "logit_bias": {}, "tools": [], "tool_choice": "none",
                "response_format": {"type": "text"}, "user": "u", "metadata": null}"#,
        )
        .unwrap();
        assert_eq!(r.sampling, SamplingParams::default());
        for body in ["{", "[1]", "", "null"] {
            let e = err(parse_chat(body.as_bytes()));
            assert_eq!((e.status, e.param.as_deref()), (400, None), "{body}");
        }
    }

    #[test]
    fn error_body_shape() {
        let e = ApiError::invalid("top_p", "top_p must be in (0, 1], got 0");
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "top_p must be in (0, 1], got 0",
                "type": "invalid_request_error", "param": "top_p", "code": null}})
        );
    }
}
