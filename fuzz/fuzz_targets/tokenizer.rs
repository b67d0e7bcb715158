//! Coverage-guided fuzzing of the tokenizer: arbitrary bytes become text (lossy UTF-8) that is
//! encoded and decoded again on small vocabularies (fuzz/vocab/*.gguf, written by
//! fuzz/vocab.py), and become token ids that are decoded, whole and streamed. Nothing panics;
//! ids stay inside the vocabulary; byte-level BPE without space cleaning gives back exactly the
//! text it was given; streamed decoding equals decoding at once.
//! Run with `scripts/fuzz.sh [seconds] tokenizer`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rocmforge::gguf::GgufFile;
use rocmforge::tokenizer::Tokenizer;
use rocmforge::Error;

/// Byte-level BPE with the GPT-2 pre-tokenizer (its decoding cleans spaces before punctuation,
/// as llama.cpp's does), the same with Qwen2's (no cleaning), SentencePiece with byte fallback.
const VOCABS: [&[u8]; 3] = [
    include_bytes!("../vocab/bpe.gguf"),
    include_bytes!("../vocab/bpe-qwen2.gguf"),
    include_bytes!("../vocab/spm.gguf"),
];

fn tokenizers() -> &'static [Tokenizer; 3] {
    static TOKENIZERS: OnceLock<[Tokenizer; 3]> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        VOCABS.map(|bytes| {
            let file = GgufFile::from_bytes(bytes.to_vec()).expect("fuzz/vocab files parse");
            Tokenizer::from_gguf(&file).expect("fuzz/vocab files are tokenizers")
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    // flags: bits 0-1 the vocabulary, bit 2 special, bits 3-4 add_bos
    let which = (flags & 3).min(2) as usize;
    let tok = &tokenizers()[which];
    let special = flags & 4 != 0;
    let add_bos = match (flags >> 3) & 3 {
        0 => None,
        1 => Some(true),
        _ => Some(false),
    };
    let n_vocab = tok.vocab_size();

    // bytes -> text -> ids -> text
    let text = String::from_utf8_lossy(rest);
    let ids = tok.encode(&text, add_bos, special);
    assert!(ids.iter().all(|&id| (id as usize) < n_vocab), "an id outside the vocabulary");
    if !text.is_empty() && !special {
        assert!(ids.iter().any(|&id| Some(id) != tok.bos() && Some(id) != tok.eos()), "text lost");
    }
    let decoded = tok.decode_with(&ids, special).expect("ids from encode decode");
    if which == 1 && !special && add_bos == Some(false) {
        // byte-level BPE keeps every byte; special-token text is plain text here (the GPT-2
        // vocabulary's decoding drops spaces before punctuation: it is not checked)
        assert_eq!(decoded, text, "BPE round trip");
    }

    // bytes -> ids (some outside the vocabulary) -> text, whole and streamed
    let raw: Vec<u32> = rest
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32 % (n_vocab as u32 + 4))
        .collect();
    let whole = tok.decode_with(&raw, special);
    let mut stream = tok.detokenizer(special);
    let mut streamed = String::new();
    let mut failed = false;
    for &id in &raw {
        match stream.push(tok, id) {
            Ok(piece) => streamed.push_str(&piece),
            Err(Error::InvalidArgument(_)) => {
                assert!(id as usize >= n_vocab);
                failed = true;
            }
            Err(other) => panic!("decoding id {id}: {other:?}"),
        }
    }
    streamed.push_str(&stream.finish());
    match whole {
        Ok(text) => {
            assert!(!failed);
            assert_eq!(text, streamed, "streamed and whole decoding differ");
        }
        Err(Error::InvalidArgument(_)) => assert!(failed),
        Err(other) => panic!("decode: {other:?}"),
    }
});
