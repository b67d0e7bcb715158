//! The tokenizer of a GGUF file, built from its `tokenizer.*` metadata, producing the token ids
//! llama.cpp produces for the same file and text.
//!
//! Two tokenizer models:
//! - `gpt2`: byte-level BPE (`bpe.rs`) after a pre-tokenizer chosen by `tokenizer.ggml.pre`
//!   (`pretokenize.rs`); also `gemma4`, a BPE over raw UTF-8 with spaces written as U+2581;
//! - `llama`: SentencePiece with token scores and byte fallback (`spm.rs`).
//!
//! Before either runs, the text is partitioned around special tokens (control, user-defined and
//! unknown tokens, longest first); control and unknown ones only when `special` is asked for,
//! user-defined ones always, as llama.cpp does.

mod bpe;
mod pretokenize;
mod spm;
mod stream;
mod unicode;
mod unicode_table;

use std::collections::{BTreeSet, HashMap};

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, MetaValue};

pub use pretokenize::{CharSet, Split};
pub use stream::Detokenizer;

/// GGUF `tokenizer.ggml.token_type` values.
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Token attributes (llama.cpp's `llama_token_attr` bits), derived from the token types.
pub mod attr {
    pub const UNDEFINED: u16 = 0;
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    /// Special-token matching swallows the whitespace left of the token.
    pub const LSTRIP: u16 = 1 << 7;
    /// Special-token matching swallows the whitespace right of the token.
    pub const RSTRIP: u16 = 1 << 8;
}

const SPACE_ESCAPE: &str = "\u{2581}";

/// The vocabulary: token texts, scores and attributes by id, and the id of each text.
pub struct Vocab {
    texts: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u16>,
    /// Text -> id; where two tokens share a text, the later id (llama.cpp's `token_to_id`).
    ids: FxHashMap<String, u32>,
}

impl Vocab {
    pub fn len(&self) -> usize {
        self.texts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }
    pub fn text(&self, id: u32) -> &str {
        &self.texts[id as usize]
    }
    pub fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }
    pub fn attr(&self, id: u32) -> u16 {
        self.attrs[id as usize]
    }
}

/// How text between special tokens becomes ids.
enum Model {
    /// SentencePiece: spaces escaped as U+2581, merges by score, byte fallback `<0xXX>`.
    Spm,
    Bpe {
        merges: bpe::BpeMerges,
        splits: Vec<Split>,
        /// GPT-2 byte-to-character encoding of words (false: raw UTF-8, `<0xXX>` fallback).
        byte_encode: bool,
        /// A word that is itself a token is not merged (Llama 3's `ignore_merges`).
        ignore_merges: bool,
        /// Gemma 4: a word of only newlines that is a token is taken whole.
        whole_newline_words: bool,
    },
}

/// A GGUF file's tokenizer. `encode`/`decode` match llama.cpp's `llama_tokenize` /
/// `llama_detokenize` for the same file.
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    /// `tokenizer.ggml.model` and `tokenizer.ggml.pre` as found (pre: "" when absent).
    model_name: String,
    pre_name: String,
    /// Special tokens in partition order: longest text first (ties: lower id first).
    special_tokens: Vec<u32>,
    byte_tokens: [Option<u32>; 256],
    pub(crate) add_space_prefix: bool,
    escape_whitespaces: bool,
    pub(crate) clean_spaces: bool,
    add_bos: bool,
    add_eos: bool,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    /// End-of-generation tokens: eos, eot, eom and the tokens llama.cpp recognizes by text.
    eog: BTreeSet<u32>,
    /// Each token's bytes when detokenized with `special` (control tokens as their text).
    pieces: Vec<Box<[u8]>>,
}

/// Text fragments between special tokens, in order.
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// Pre-tokenizer and flags of one `tokenizer.ggml.pre` value (llama.cpp's list, for the regex
/// families implemented in `pretokenize.rs`).
struct PreConfig {
    splits: Vec<Split>,
    ignore_merges: bool,
    clean_spaces: bool,
    /// `Some(v)`: the default of `add_bos` before `tokenizer.ggml.add_bos_token` is read.
    add_bos: Option<bool>,
    /// The vocabulary has no BOS token (ChatGLM).
    no_bos: bool,
}

fn pre_config(pre: &str) -> Option<PreConfig> {
    const LLAMA3: Split = Split::Llama3Words {
        max_digits: 3,
        marks_in_words: false,
    };
    const QWEN2: Split = Split::Llama3Words {
        max_digits: 1,
        marks_in_words: false,
    };
    const QWEN35: Split = Split::Llama3Words {
        max_digits: 1,
        marks_in_words: true,
    };
    let cfg = |splits: Vec<Split>, clean_spaces: bool| PreConfig {
        splits,
        ignore_merges: false,
        clean_spaces,
        add_bos: None,
        no_bos: false,
    };
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreConfig {
            ignore_merges: true,
            add_bos: Some(true),
            ..cfg(vec![LLAMA3], true)
        },
        "dbrx" | "smaug-bpe" => cfg(vec![LLAMA3], true),
        "chatglm-bpe" => PreConfig {
            no_bos: true,
            ..cfg(vec![LLAMA3], true)
        },
        "glm4" | "glm5" => PreConfig {
            no_bos: true,
            ignore_merges: true,
            ..cfg(vec![LLAMA3], true)
        },
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open"
        | "grok-2" => cfg(vec![QWEN2], false),
        "megrez" | "stablelm2" => cfg(vec![QWEN2], true),
        "qwen35" => cfg(vec![QWEN35], false),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4" | "mpt" | "olmo" | "jais" => {
            cfg(vec![Split::Gpt2Words], true)
        }
        "trillion" | "granite-docling" => cfg(vec![Split::Gpt2Words], false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            cfg(vec![Split::EachNumber, Split::Gpt2Words], true)
        }
        "command-r" | "smollm" => cfg(vec![Split::EachNumber, Split::Gpt2Words], false),
        "falcon" => cfg(
            vec![
                Split::PunctuationRuns { backtick: true },
                Split::Gpt2Words,
                Split::AsciiDigitTriples,
            ],
            true,
        ),
        "deepseek-coder" => cfg(
            vec![
                Split::EachNewline,
                Split::SpaceThenRun(CharSet::Letter),
                Split::SpaceThenRun(CharSet::Punctuation),
                Split::Runs(CharSet::Cjk),
                Split::EachNumber,
            ],
            false,
        ),
        "deepseek-llm" => cfg(
            vec![
                Split::EachNewline,
                Split::SpaceThenRun(CharSet::CasedLetters),
                Split::SpaceThenRun(CharSet::AsciiFullWidthPunctuation),
                Split::TrailingWhitespace,
                Split::Runs(CharSet::Cjk),
                Split::NumberRuns,
            ],
            false,
        ),
        "" | "default" => cfg(
            vec![
                Split::PunctuationRuns { backtick: false },
                Split::Gpt2Words,
                Split::NumberRuns,
                Split::AsciiDigitTriples,
            ],
            true,
        ),
        _ => return None,
    })
}

/// What a special token id is for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum SpecialRole {
    Bos,
    Eos,
    Eot,
    Eom,
    Unk,
    Sep,
    Pad,
    Mask,
    FimPre,
    FimSuf,
    FimMid,
    FimPad,
    FimRep,
    FimSep,
}

const SPECIAL_KEYS: [(&str, SpecialRole); 17] = [
    ("tokenizer.ggml.bos_token_id", SpecialRole::Bos),
    ("tokenizer.ggml.eos_token_id", SpecialRole::Eos),
    ("tokenizer.ggml.eot_token_id", SpecialRole::Eot),
    ("tokenizer.ggml.eom_token_id", SpecialRole::Eom),
    ("tokenizer.ggml.unknown_token_id", SpecialRole::Unk),
    ("tokenizer.ggml.seperator_token_id", SpecialRole::Sep),
    ("tokenizer.ggml.padding_token_id", SpecialRole::Pad),
    ("tokenizer.ggml.mask_token_id", SpecialRole::Mask),
    ("tokenizer.ggml.fim_pre_token_id", SpecialRole::FimPre),
    ("tokenizer.ggml.fim_suf_token_id", SpecialRole::FimSuf),
    ("tokenizer.ggml.fim_mid_token_id", SpecialRole::FimMid),
    ("tokenizer.ggml.fim_pad_token_id", SpecialRole::FimPad),
    ("tokenizer.ggml.fim_rep_token_id", SpecialRole::FimRep),
    ("tokenizer.ggml.fim_sep_token_id", SpecialRole::FimSep),
    // older names of the FIM keys
    ("tokenizer.ggml.prefix_token_id", SpecialRole::FimPre),
    ("tokenizer.ggml.suffix_token_id", SpecialRole::FimSuf),
    ("tokenizer.ggml.middle_token_id", SpecialRole::FimMid),
];

/// Token texts that llama.cpp takes as a role's token when the file names none, in the order
/// tried here (llama.cpp takes whichever its hash map yields first).
const ROLE_TEXTS: [(SpecialRole, &[&str]); 7] = [
    (
        SpecialRole::Eot,
        &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "<｜end▁of▁sentence｜>",
            "<end_of_utterance>",
        ],
    ),
    (SpecialRole::Eom, &["<|eom_id|>"]),
    (
        SpecialRole::FimPre,
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        SpecialRole::FimSuf,
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        SpecialRole::FimMid,
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        SpecialRole::FimPad,
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        SpecialRole::FimRep,
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Token texts that end generation (llama.cpp's list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

// ---- metadata readers: every type problem is Error::Gguf naming the key ----

fn meta_str<'g>(gguf: &'g GgufFile, key: &str) -> Result<Option<&'g str>> {
    match gguf.meta(key) {
        None => Ok(None),
        Some(MetaValue::Str(s)) => Ok(Some(s)),
        Some(v) => Err(Error::gguf(format!(
            "{key}: expected a string, found {}",
            v.type_name()
        ))),
    }
}

fn meta_bool(gguf: &GgufFile, key: &str) -> Result<Option<bool>> {
    match gguf.meta(key) {
        None => Ok(None),
        Some(MetaValue::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Error::gguf(format!(
            "{key}: expected a bool, found {}",
            v.type_name()
        ))),
    }
}

/// An array whose every element `get` accepts; `what` names the element type in errors.
fn meta_array<'g, T>(
    gguf: &'g GgufFile,
    key: &str,
    what: &str,
    get: impl Fn(&'g MetaValue) -> Option<T>,
) -> Result<Option<Vec<T>>> {
    let Some(value) = gguf.meta(key) else {
        return Ok(None);
    };
    let items = value.as_array().ok_or_else(|| {
        Error::gguf(format!(
            "{key}: expected an array of {what}, found {}",
            value.type_name()
        ))
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            get(item).ok_or_else(|| {
                Error::gguf(format!(
                    "{key}: expected an array of {what}, element {i} is {}",
                    item.type_name()
                ))
            })
        })
        .collect::<Result<Vec<T>>>()
        .map(Some)
}

const MODEL_KEY: &str = "tokenizer.ggml.model";
const PRE_KEY: &str = "tokenizer.ggml.pre";
const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
const SCORES_KEY: &str = "tokenizer.ggml.scores";
const TYPES_KEY: &str = "tokenizer.ggml.token_type";
const MERGES_KEY: &str = "tokenizer.ggml.merges";

impl Tokenizer {
    /// Build the tokenizer from a GGUF file's metadata (tensors are not needed: vocab-only
    /// files work). Malformed metadata is `Error::Gguf` naming the key; a tokenizer model or
    /// pre-tokenizer this crate does not implement is `Error::Unsupported`.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
        let model_name = meta_str(gguf, MODEL_KEY)?
            .ok_or_else(|| {
                Error::gguf(format!("{MODEL_KEY} is missing: the file has no tokenizer"))
            })?
            .to_owned();
        let mut pre_name = meta_str(gguf, PRE_KEY)?.unwrap_or("").to_owned();
        let is_spm = match model_name.as_str() {
            "llama" => true,
            "gpt2" => false,
            "gemma4" => {
                pre_name = "gemma4".into();
                false
            }
            other => {
                return Err(Error::unsupported(format!(
                    "{MODEL_KEY} = {other:?}: tokenizer model not supported (supported: \"llama\" SentencePiece, \"gpt2\" byte-level BPE, \"gemma4\")"
                )))
            }
        };

        let mut vocab = read_vocab(gguf)?;
        let n_vocab = vocab.len();

        // ---- model, pre-tokenizer and flags ----
        let mut roles: HashMap<SpecialRole, u32> = HashMap::new();
        let (model, mut add_bos, add_space_prefix_default, escape_whitespaces, clean_spaces);
        if is_spm {
            model = Model::Spm;
            (
                add_bos,
                add_space_prefix_default,
                escape_whitespaces,
                clean_spaces,
            ) = (true, true, true, false);
            roles.extend([
                (SpecialRole::Bos, 1),
                (SpecialRole::Eos, 2),
                (SpecialRole::Unk, 0),
            ]);
        } else {
            let merges =
                meta_array(gguf, MERGES_KEY, "strings", MetaValue::as_str)?.ok_or_else(|| {
                    Error::gguf(format!(
                        "{MERGES_KEY} is missing: a BPE vocabulary needs its merges"
                    ))
                })?;
            let merges = bpe::BpeMerges::new(&merges, &vocab, MERGES_KEY)?;
            if model_name == "gemma4" {
                model = Model::Bpe {
                    merges,
                    splits: vec![Split::NewlineRuns],
                    byte_encode: false,
                    ignore_merges: false,
                    whole_newline_words: true,
                };
                (
                    add_bos,
                    add_space_prefix_default,
                    escape_whitespaces,
                    clean_spaces,
                ) = (true, false, true, true);
            } else {
                let pre = pre_config(&pre_name).ok_or_else(|| {
                    Error::unsupported(format!(
                        "{PRE_KEY} = {pre_name:?}: pre-tokenizer not supported"
                    ))
                })?;
                model = Model::Bpe {
                    merges,
                    splits: pre.splits,
                    byte_encode: true,
                    ignore_merges: pre.ignore_merges,
                    whole_newline_words: false,
                };
                (
                    add_bos,
                    add_space_prefix_default,
                    escape_whitespaces,
                    clean_spaces,
                ) = (pre.add_bos.unwrap_or(false), false, false, pre.clean_spaces);
                // llama.cpp's default ids for byte-level BPE files that name none
                if !pre.no_bos {
                    roles.insert(SpecialRole::Bos, 11);
                }
                roles.insert(SpecialRole::Eos, 11);
            }
        }
        let add_space_prefix =
            meta_bool(gguf, "tokenizer.ggml.add_space_prefix")?.unwrap_or(add_space_prefix_default);

        // ---- special token ids ----
        roles.retain(|_, id| (*id as usize) < n_vocab); // defaults outside the vocabulary: none
        for (key, role) in SPECIAL_KEYS {
            let Some(value) = gguf.meta(key) else {
                continue;
            };
            let id = value.as_int().ok_or_else(|| {
                Error::gguf(format!(
                    "{key}: expected an integer token id, found {}",
                    value.type_name()
                ))
            })?;
            if !(0..n_vocab as i128).contains(&id) {
                return Err(Error::gguf(format!(
                    "{key} = {id} is outside the vocabulary of {n_vocab} tokens"
                )));
            }
            roles.insert(role, id as u32);
        }
        if let Some(b) = meta_bool(gguf, "tokenizer.ggml.add_bos_token")? {
            add_bos = b;
        }
        let add_eos = meta_bool(gguf, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        if model_name == "gemma4" {
            add_bos = true; // llama.cpp forces it for Gemma 4
        }

        // roles the file does not name, recognized by text; such a token becomes a control token
        let mark_control = |vocab: &mut Vocab, id: u32| vocab.attrs[id as usize] |= attr::CONTROL;
        for (role, candidates) in ROLE_TEXTS
            .iter()
            .chain([(SpecialRole::FimSep, FIM_SEP_TEXTS)].iter())
        {
            if roles.contains_key(role) {
                continue;
            }
            if let Some(id) = candidates.iter().find_map(|t| vocab.id(t)) {
                roles.insert(*role, id);
                mark_control(&mut vocab, id);
            }
        }

        let eog = end_of_generation(&mut vocab, &roles);

        // ---- special-token partitioning order ----
        let mut special_tokens: Vec<u32> = (0..n_vocab as u32)
            .filter(|&id| {
                vocab.attr(id) & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_tokens.sort_by_key(|&id| std::cmp::Reverse(vocab.text(id).len()));

        // Phi-3 files: special tokens swallow the whitespace after them (llama.cpp, by model name)
        let name = meta_str(gguf, "general.name")
            .ok()
            .flatten()
            .unwrap_or("")
            .to_lowercase();
        if name.contains("phi-3") || name.contains("phi3") {
            for &id in &special_tokens {
                vocab.attrs[id as usize] |= attr::RSTRIP;
            }
            if let Some(id) = vocab.id("</s>") {
                vocab.attrs[id as usize] |= attr::RSTRIP;
            }
            for text in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(id) = vocab.id(text) {
                    vocab.attrs[id as usize] &= !attr::RSTRIP;
                }
            }
        }

        let byte_encode = matches!(
            model,
            Model::Bpe {
                byte_encode: true,
                ..
            }
        );
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            *slot = if byte_encode {
                // GPT-2 byte-level: llama.cpp spells a leftover byte with its one-byte text
                (b < 0x80)
                    .then(|| vocab.id(&(b as u8 as char).to_string()))
                    .flatten()
            } else if is_spm {
                vocab.id(&hex).or_else(|| {
                    (b < 0x80)
                        .then(|| vocab.id(&(b as u8 as char).to_string()))
                        .flatten()
                })
            } else {
                vocab.id(&hex)
            };
        }

        let mut tokenizer = Tokenizer {
            vocab,
            model,
            model_name,
            pre_name,
            special_tokens,
            byte_tokens,
            add_space_prefix,
            escape_whitespaces,
            clean_spaces,
            add_bos,
            add_eos,
            bos: roles.get(&SpecialRole::Bos).copied(),
            eos: roles.get(&SpecialRole::Eos).copied(),
            eot: roles.get(&SpecialRole::Eot).copied(),
            eom: roles.get(&SpecialRole::Eom).copied(),
            unk: roles.get(&SpecialRole::Unk).copied(),
            pad: roles.get(&SpecialRole::Pad).copied(),
            eog,
            pieces: Vec::new(),
        };
        tokenizer.pieces = (0..n_vocab as u32)
            .map(|id| tokenizer.render_piece(id))
            .collect();
        Ok(tokenizer)
    }

    /// Open a GGUF file and build its tokenizer.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Tokenizer> {
        Tokenizer::from_gguf(&GgufFile::open(path)?)
    }

    // ---- properties ----

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }
    /// `tokenizer.ggml.model` ("llama", "gpt2", "gemma4").
    pub fn model_name(&self) -> &str {
        &self.model_name
    }
    /// `tokenizer.ggml.pre` ("" when the file has none).
    pub fn pre_name(&self) -> &str {
        &self.pre_name
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// End of turn (`<|eot_id|>`, `<|im_end|>`, ...): the file's, else recognized by text.
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    pub fn eom(&self) -> Option<u32> {
        self.eom
    }
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    /// Whether `encode(.., add_bos: None, ..)` starts with BOS (`tokenizer.ggml.add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether `encode(.., add_bos: None | Some(true), ..)` ends with EOS (`tokenizer.ggml.add_eos_token`).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// Whether `id` ends generation (EOS, EOT, EOM, `<|im_end|>`-like tokens).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }
    /// Whether `id` is a control token (rendered only with `special`).
    pub fn is_control(&self, id: u32) -> bool {
        (id as usize) < self.vocab.len()
            && self.vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0
    }

    // ---- encoding ----

    /// Token ids of `text`. `add_bos`: `None` follows the file (`add_bos_token`, and
    /// `add_eos_token` for EOS), `Some(true)` adds BOS (if the vocabulary has one) and EOS as the
    /// file says, `Some(false)` adds neither. `special`: text like `<|im_start|>` becomes its
    /// control token; otherwise it is tokenized as plain text.
    pub fn encode(&self, text: &str, add_bos: Option<bool>, special: bool) -> Vec<u32> {
        let (bos, eos) = match add_bos {
            None => (self.add_bos, self.add_eos),
            Some(true) => (true, self.add_eos),
            Some(false) => (false, false),
        };
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if bos {
            out.extend(self.bos);
        }
        let fragments = self.partition(text, special);
        match &self.model {
            Model::Spm => {
                let mut after_special = true;
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(t) => {
                            let mut escaped = String::with_capacity(t.len() + 3);
                            if self.add_space_prefix && after_special {
                                escaped.push_str(SPACE_ESCAPE);
                            }
                            escaped.push_str(&t.replace(' ', SPACE_ESCAPE));
                            spm::encode(
                                &escaped,
                                &self.vocab,
                                &|b| self.byte_token_or_unk(b),
                                &mut out,
                            );
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
            Model::Bpe { .. } => {
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(t) if self.escape_whitespaces => {
                            self.encode_bpe(&t.replace(' ', SPACE_ESCAPE), &mut out)
                        }
                        Fragment::Text(t) => self.encode_bpe(t, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if eos {
            out.extend(self.eos);
        }
        out
    }

    fn byte_token_or_unk(&self, b: u8) -> Option<u32> {
        self.byte_tokens[b as usize].or(self.unk)
    }

    fn encode_bpe(&self, text: &str, out: &mut Vec<u32>) {
        let Model::Bpe {
            merges,
            splits,
            byte_encode,
            ignore_merges,
            whole_newline_words,
        } = &self.model
        else {
            unreachable!("encode_bpe on a BPE model")
        };
        let byte_token = |b: u8| self.byte_tokens[b as usize];
        let mut encoded = String::new();
        for range in pretokenize::split_words(text, splits) {
            let mut word = &text[range];
            if *byte_encode {
                encoded.clear();
                encoded.extend(word.bytes().map(unicode::byte_to_char));
                word = &encoded;
            }
            let whole =
                *ignore_merges || (*whole_newline_words && word.bytes().all(|b| b == b'\n'));
            if let Some(id) = whole.then(|| self.vocab.id(word)).flatten() {
                out.push(id);
                continue;
            }
            merges.encode_word(word, &self.vocab, &byte_token, out);
        }
    }

    /// Split `text` around special tokens, longest first. Control and unknown tokens count only
    /// when `special`; user-defined tokens always.
    fn partition<'t>(&self, text: &'t str, special: bool) -> Vec<Fragment<'t>> {
        let mut fragments = if text.is_empty() {
            vec![]
        } else {
            vec![Fragment::Text(text)]
        };
        for &id in &self.special_tokens {
            let token_attr = self.vocab.attr(id);
            if !special && token_attr & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let token_text = self.vocab.text(id);
            if !fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(token_text)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut rest) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(at) = rest.find(token_text) {
                    let mut left = &rest[..at];
                    if token_attr & attr::LSTRIP != 0 {
                        left = left.trim_end_matches(is_c_space);
                    }
                    if !left.is_empty() {
                        next.push(Fragment::Text(left));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + token_text.len()..];
                    if token_attr & attr::RSTRIP != 0 {
                        rest = rest.trim_start_matches(is_c_space);
                    }
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }

    // ---- decoding ----

    /// The bytes of one token as detokenized (`special`: control tokens as their text,
    /// otherwise nothing). An id outside the vocabulary is `Error::InvalidArgument`.
    pub fn piece(&self, id: u32, special: bool) -> Result<&[u8]> {
        let piece = self.pieces.get(id as usize).ok_or_else(|| {
            Error::invalid(format!(
                "token id {id} is outside the vocabulary (0..{})",
                self.vocab.len()
            ))
        })?;
        if !special && self.vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0 {
            return Ok(&[]);
        }
        Ok(piece)
    }

    /// llama.cpp's `token_to_piece` with `special`, before any stripping.
    fn render_piece(&self, id: u32) -> Box<[u8]> {
        let (text, token_attr) = (self.vocab.text(id), self.vocab.attr(id));
        if token_attr & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            return text.as_bytes().into();
        }
        if token_attr & attr::NORMAL != 0 {
            return match &self.model {
                Model::Bpe {
                    byte_encode: true, ..
                } => decode_byte_level(text),
                _ => text.replace(SPACE_ESCAPE, " ").into_bytes().into(),
            };
        }
        if token_attr & attr::BYTE != 0 {
            // "<0xXX>"; a malformed byte token renders as nothing
            let byte = text
                .get(3..5)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            return byte.map(|b| vec![b]).unwrap_or_default().into();
        }
        Box::default()
    }

    /// Text of `ids`, control tokens rendered as their text (`decode_with(ids, true)`).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_with(ids, true)
    }

    /// Text of `ids` (`special`: control tokens as their text, else nothing), as llama.cpp's
    /// `llama_detokenize` gives it: SentencePiece's added leading space removed, and for some
    /// vocabularies spaces before punctuation cleaned. Bytes that are not valid UTF-8 become
    /// U+FFFD. An id outside the vocabulary is `Error::InvalidArgument`.
    pub fn decode_with(&self, ids: &[u32], special: bool) -> Result<String> {
        let mut stream = self.detokenizer(special);
        let mut text = String::new();
        for &id in ids {
            text.push_str(&stream.push(self, id)?);
        }
        text.push_str(&stream.finish());
        Ok(text)
    }

    /// A streaming detokenizer for one sequence (see `Detokenizer`).
    pub fn detokenizer(&self, special: bool) -> Detokenizer {
        Detokenizer::new(self, special)
    }
}

/// The token texts, scores and types (as attributes) of `tokenizer.ggml.*`.
fn read_vocab(gguf: &GgufFile) -> Result<Vocab> {
    let texts = meta_array(gguf, TOKENS_KEY, "strings", MetaValue::as_str)?.ok_or_else(|| {
        Error::gguf(format!(
            "{TOKENS_KEY} is missing: the file has no vocabulary"
        ))
    })?;
    let n_vocab = texts.len();
    if n_vocab == 0 {
        return Err(Error::gguf(format!("{TOKENS_KEY} is empty")));
    }
    if n_vocab > i32::MAX as usize {
        return Err(Error::gguf(format!(
            "{TOKENS_KEY}: {n_vocab} tokens is more than token ids can count"
        )));
    }
    let scores = meta_array(gguf, SCORES_KEY, "f32", |v| match v {
        MetaValue::F32(x) => Some(*x),
        _ => None,
    })?;
    let types = meta_array(gguf, TYPES_KEY, "i32", |v| match v {
        MetaValue::I32(x) => Some(*x),
        _ => None,
    })?;
    for (key, len) in [
        (SCORES_KEY, scores.as_ref().map(Vec::len)),
        (TYPES_KEY, types.as_ref().map(Vec::len)),
    ] {
        if let Some(len) = len.filter(|&len| len != n_vocab) {
            return Err(Error::gguf(format!(
                "{key} has {len} entries for {n_vocab} tokens in {TOKENS_KEY}"
            )));
        }
    }
    let mut vocab = Vocab {
        texts: Vec::with_capacity(n_vocab),
        scores: scores.unwrap_or_else(|| vec![0.0; n_vocab]),
        attrs: Vec::with_capacity(n_vocab),
        ids: FxHashMap::with_capacity_and_hasher(n_vocab, Default::default()),
    };
    for (i, text) in texts.iter().enumerate() {
        // llama.cpp renames empty tokens, so that every token has a text
        let text = if text.is_empty() {
            format!("[EMPTY_{i}]")
        } else {
            (*text).to_owned()
        };
        vocab.ids.insert(text.clone(), i as u32);
        vocab.texts.push(text);
        vocab.attrs.push(match types.as_ref().map(|t| t[i]) {
            None | Some(token_type::NORMAL) => attr::NORMAL,
            Some(token_type::UNKNOWN) => attr::UNKNOWN,
            Some(token_type::CONTROL) => attr::CONTROL,
            Some(token_type::USER_DEFINED) => attr::USER_DEFINED,
            Some(token_type::UNUSED) => attr::UNUSED,
            Some(token_type::BYTE) => attr::BYTE,
            Some(_) => attr::UNDEFINED,
        });
    }
    Ok(vocab)
}

/// The end-of-generation tokens (llama.cpp's rules): EOS, EOT, EOM, the FIM pad/repo/separator
/// tokens and tokens known by text; the latter become control tokens.
fn end_of_generation(vocab: &mut Vocab, roles: &HashMap<SpecialRole, u32>) -> BTreeSet<u32> {
    let mut eog: BTreeSet<u32> = BTreeSet::new();
    for role in [
        SpecialRole::FimPad,
        SpecialRole::FimRep,
        SpecialRole::FimSep,
    ] {
        eog.extend(roles.get(&role));
    }
    for text in EOG_TEXTS {
        if let Some(id) = vocab.id(text) {
            eog.insert(id);
            vocab.attrs[id as usize] |= attr::CONTROL;
        }
    }
    // gpt-oss: these are always rendered
    for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(id) = vocab.id(text) {
            vocab.attrs[id as usize] = attr::USER_DEFINED;
        }
    }
    for role in [SpecialRole::Eos, SpecialRole::Eot, SpecialRole::Eom] {
        eog.extend(roles.get(&role));
    }
    let has = |eog: &BTreeSet<u32>, vocab: &Vocab, text: &str| {
        eog.iter().any(|&id| vocab.text(id) == text)
    };
    // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation
    if (has(&eog, vocab, "<|return|>") && has(&eog, vocab, "<|call|>")
        || has(&eog, vocab, "<|calls|>") && has(&eog, vocab, "<|flush|>"))
        && has(&eog, vocab, "<|end|>")
    {
        let end: Vec<u32> = eog
            .iter()
            .copied()
            .filter(|&id| vocab.text(id) == "<|end|>")
            .collect();
        for id in end {
            eog.remove(&id);
            vocab.attrs[id as usize] = attr::USER_DEFINED;
        }
    }
    // gemma4 / plamo: "</s>" is a normal token there
    if has(&eog, vocab, "<|tool_response>") || has(&eog, vocab, "<|plamo:eos|>") {
        let ends: Vec<u32> = eog
            .iter()
            .copied()
            .filter(|&id| vocab.text(id) == "</s>")
            .collect();
        for id in ends {
            eog.remove(&id);
            vocab.attrs[id as usize] = attr::NORMAL;
        }
    }
    eog
}

/// C's `isspace` (the whitespace llama.cpp's lstrip/rstrip remove).
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}

/// A byte-level BPE token's bytes: each character of the 256-character alphabet is one byte.
/// A character outside it renders as llama.cpp renders it: `[UNK_BYTE_0x<hex>` + text + `]`.
fn decode_byte_level(text: &str) -> Box<[u8]> {
    let mut bytes = Vec::with_capacity(text.len());
    for c in text.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => bytes.push(b),
            None => {
                bytes.extend_from_slice(b"[UNK_BYTE_0x");
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    bytes.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                bytes.extend_from_slice(text.as_bytes());
                bytes.push(b']');
            }
        }
    }
    bytes.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GGUF metadata values for `gguf_bytes`.
    enum V {
        Str(&'static str),
        U32(u32),
        Bool(bool),
        Strs(Vec<String>),
        F32s(Vec<f32>),
        I32s(Vec<i32>),
    }

    /// A vocabulary-only GGUF file (version 3, no tensors) holding `kvs`.
    fn gguf_bytes(kvs: &[(&str, V)]) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend((kvs.len() as u64).to_le_bytes());
        for (key, value) in kvs {
            string(&mut out, key);
            match value {
                V::Str(s) => {
                    out.extend(8u32.to_le_bytes());
                    string(&mut out, s);
                }
                V::U32(x) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                V::Bool(b) => {
                    out.extend(7u32.to_le_bytes());
                    out.push(*b as u8);
                }
                V::Strs(items) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    items.iter().for_each(|s| string(&mut out, s));
                }
                V::F32s(items) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(6u32.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    items.iter().for_each(|x| out.extend(x.to_le_bytes()));
                }
                V::I32s(items) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(5u32.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    items.iter().for_each(|x| out.extend(x.to_le_bytes()));
                }
            }
        }
        out
    }

    fn tokenizer(kvs: &[(&str, V)]) -> Result<Tokenizer> {
        Tokenizer::from_gguf(&GgufFile::from_bytes(gguf_bytes(kvs))?)
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// SentencePiece: <unk> <s> </s>, the 256 byte tokens, then a few pieces with scores.
    fn tiny_spm() -> Tokenizer {
        let mut tokens = strings(&["<unk>", "<s>", "</s>"]);
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        let words = ["▁", "a", "b", "▁a", "ab", "▁ab"];
        tokens.extend(strings(&words));
        let mut scores = vec![0.0; 259];
        scores.extend([-3.0, -4.0, -4.0, -1.0, -2.0, -0.5]);
        let mut types = vec![2, 3, 3];
        types.extend([6; 256]);
        types.extend([1; 6]);
        tokenizer(&[
            ("tokenizer.ggml.model", V::Str("llama")),
            ("tokenizer.ggml.tokens", V::Strs(tokens)),
            ("tokenizer.ggml.scores", V::F32s(scores)),
            ("tokenizer.ggml.token_type", V::I32s(types)),
        ])
        .unwrap()
    }

    #[test]
    fn spm_merges_by_score_with_byte_fallback() {
        let tok = tiny_spm();
        let piece = |t: &str| tok.vocab().id(t).unwrap();
        // " ab ab" -> "▁ab▁ab": "▁a" (-1) merges first, then "▁ab" (-0.5), on both halves
        assert_eq!(
            tok.encode("ab ab", Some(false), false),
            [piece("▁ab"), piece("▁ab")]
        );
        // é is no token: its two UTF-8 bytes
        assert_eq!(
            tok.encode("é", Some(false), false),
            [piece("▁"), 3 + 0xC3, 3 + 0xA9]
        );
        assert_eq!(tok.encode("a", None, false), [1, piece("▁a")]);
        assert_eq!(
            tok.decode(&tok.encode("ab abé", Some(false), false))
                .unwrap(),
            "ab abé"
        );
        // after a special token the text gets its space prefix again
        assert_eq!(tok.encode("</s>a", Some(false), true), [2, piece("▁a")]);
        assert_eq!(tok.decode_with(&[2, piece("▁a")], false).unwrap(), " a");
        assert_eq!(
            (tok.bos(), tok.eos(), tok.unk()),
            (Some(1), Some(2), Some(0))
        );
        assert!(tok.is_eog(2) && !tok.is_eog(1));
        assert!(matches!(tok.decode(&[265]), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn bpe_merges_by_rank() {
        let tok = tokenizer(&[
            ("tokenizer.ggml.model", V::Str("gpt2")),
            ("tokenizer.ggml.pre", V::Str("qwen2")),
            (
                "tokenizer.ggml.tokens",
                V::Strs(strings(&[
                    "a",
                    "b",
                    "c",
                    "ab",
                    "bc",
                    "abc",
                    "Ġ",
                    "Ġa",
                    "<|im_end|>",
                ])),
            ),
            // "b c" ranks before "a b": "abc" -> a + bc, no merge makes "abc" from those
            (
                "tokenizer.ggml.merges",
                V::Strs(strings(&["b c", "a b", "ab c", "Ġ a"])),
            ),
            ("tokenizer.ggml.eos_token_id", V::U32(8)),
            ("tokenizer.ggml.add_bos_token", V::Bool(false)),
        ])
        .unwrap();
        assert_eq!(tok.encode("abc", None, true), [0, 4]);
        assert_eq!(tok.encode("ab a", None, true), [3, 7]);
        assert_eq!(tok.encode("ab<|im_end|>", None, true), [3, 8]);
        assert_eq!(tok.encode("ab<|im_end|>", None, false), [3]); // "<", "|", ... have no tokens
        assert!(tok.is_eog(8) && tok.eot() == Some(8) && tok.bos().is_none());
        assert_eq!(tok.decode(&[0, 4, 7]).unwrap(), "abc a");
    }

    #[test]
    fn malformed_metadata_names_the_key() {
        let base = || {
            vec![
                ("tokenizer.ggml.model", V::Str("gpt2")),
                ("tokenizer.ggml.tokens", V::Strs(strings(&["a", "b", "ab"]))),
                ("tokenizer.ggml.merges", V::Strs(strings(&["a b"]))),
            ]
        };
        assert!(tokenizer(&base()).is_ok());
        let cases: Vec<(&str, V)> = vec![
            ("tokenizer.ggml.scores", V::I32s(vec![1, 2, 3])),
            ("tokenizer.ggml.token_type", V::F32s(vec![1.0; 3])),
            ("tokenizer.ggml.bos_token_id", V::U32(3)),
            ("tokenizer.ggml.add_eos_token", V::U32(1)),
        ];
        for (key, value) in cases {
            let mut kvs = base();
            kvs.push((key, value));
            match tokenizer(&kvs) {
                Err(Error::Gguf(msg)) => assert!(msg.contains(key), "{msg}"),
                other => panic!("{key}: expected a GGUF error, got {:?}", other.map(|_| ())),
            }
        }
        let mut bad_merge = base();
        bad_merge[2] = ("tokenizer.ggml.merges", V::Strs(strings(&["ab"])));
        assert!(
            matches!(tokenizer(&bad_merge), Err(Error::Gguf(m)) if m.contains("tokenizer.ggml.merges[0]"))
        );
        let mut bad_pre = base();
        bad_pre.push(("tokenizer.ggml.pre", V::Str("nope")));
        assert!(matches!(tokenizer(&bad_pre), Err(Error::Unsupported(_))));
    }
}
