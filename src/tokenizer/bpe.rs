//! Byte-pair encoding of one pre-tokenized word with the GGUF merge list (`tokenizer.ggml.merges`).
//!
//! A small BPE over the vocabulary rather than the `tokenizers` crate: that crate is heavy to
//! build and would need llama.cpp's pre-tokenizer quirks re-expressed in its configuration
//! anyway, while the merge loop itself is a few dozen lines. The rule is the standard one, and
//! llama.cpp's: repeatedly merge the adjacent pair of lowest merge rank, the leftmost on ties.
//!
//! Strings are interned as "pieces": a vocabulary token's piece id is its token id; strings that
//! appear in merges but are not tokens get ids from `n_vocab` on. The merge table is then keyed
//! by piece ids, and the loop never allocates strings.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use super::Vocab;
use crate::error::{Error, Result};

/// Piece id of a character that no merge and no token knows.
const NO_PIECE: u32 = u32::MAX;

/// A queued merge of adjacent symbols `left` and `right`; ordered by rank, then leftmost.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u32,
    left: usize,
    right: usize,
    /// The pieces both symbols held when queued (a change means the candidate is stale).
    left_piece: u32,
    right_piece: u32,
    merged: u32,
}

pub struct BpeMerges {
    /// (left piece, right piece) -> (rank, merged piece). The first of duplicate merges wins.
    pairs: FxHashMap<(u32, u32), (u32, u32)>,
    /// Pieces that are not tokens: text -> id (>= n_vocab).
    extra_pieces: FxHashMap<String, u32>,
    n_vocab: u32,
}

impl BpeMerges {
    /// `merges`: "left right" strings, rank = position. `key` names the metadata in errors.
    pub fn new(merges: &[&str], vocab: &Vocab, key: &str) -> Result<BpeMerges> {
        let mut table = BpeMerges {
            pairs: FxHashMap::with_capacity_and_hasher(merges.len(), Default::default()),
            extra_pieces: FxHashMap::default(),
            n_vocab: vocab.len() as u32,
        };
        let mut merged = String::new();
        for (rank, merge) in merges.iter().enumerate() {
            // The separator is the first space after the first byte (a left part may be " ").
            let split = merge
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|i| i + 1);
            let Some(split) = split else {
                return Err(Error::gguf(format!(
                    "{key}[{rank}] = {merge:?}: a merge must be two tokens separated by a space"
                )));
            };
            let (left, right) = (&merge[..split], &merge[split + 1..]);
            merged.clear();
            merged.push_str(left);
            merged.push_str(right);
            let (l, r, m) = (
                table.intern(left, vocab),
                table.intern(right, vocab),
                table.intern(&merged, vocab),
            );
            table.pairs.entry((l, r)).or_insert((rank as u32, m));
        }
        Ok(table)
    }

    fn intern(&mut self, text: &str, vocab: &Vocab) -> u32 {
        if let Some(id) = vocab.id(text) {
            return id;
        }
        let next = self.n_vocab + self.extra_pieces.len() as u32;
        *self.extra_pieces.entry(text.to_owned()).or_insert(next)
    }

    fn piece(&self, text: &str, vocab: &Vocab) -> u32 {
        vocab
            .id(text)
            .or_else(|| self.extra_pieces.get(text).copied())
            .unwrap_or(NO_PIECE)
    }

    /// Merge `word` into tokens, appended to `out`. A final symbol that is not a token is
    /// spelled with `byte_token` for each of its bytes (bytes with no token are dropped, as
    /// llama.cpp drops them).
    pub fn encode_word(
        &self,
        word: &str,
        vocab: &Vocab,
        byte_token: &dyn Fn(u8) -> Option<u32>,
        out: &mut Vec<u32>,
    ) {
        // symbols: the word's characters, merged in place; `len == 0` marks a merged-away one
        struct Symbol {
            start: usize,
            len: usize,
            piece: u32,
            prev: Option<usize>,
            next: Option<usize>,
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
        for (start, c) in word.char_indices() {
            let i = symbols.len();
            let len = c.len_utf8();
            symbols.push(Symbol {
                start,
                len,
                piece: self.piece(&word[start..start + len], vocab),
                prev: i.checked_sub(1),
                next: (start + len < word.len()).then_some(i + 1),
            });
        }

        // candidate merges, lowest rank first, then leftmost
        let mut queue: BinaryHeap<Reverse<Candidate>> = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<_>,
                    symbols: &[Symbol],
                    left: Option<usize>,
                    right: Option<usize>| {
            let (Some(left), Some(right)) = (left, right) else {
                return;
            };
            let (left_piece, right_piece) = (symbols[left].piece, symbols[right].piece);
            if let Some(&(rank, merged)) = self.pairs.get(&(left_piece, right_piece)) {
                queue.push(Reverse(Candidate {
                    rank,
                    left,
                    right,
                    left_piece,
                    right_piece,
                    merged,
                }));
            }
        };
        for i in 1..symbols.len() {
            push(&mut queue, &symbols, Some(i - 1), Some(i));
        }
        while let Some(Reverse(candidate)) = queue.pop() {
            let (l, r) = (candidate.left, candidate.right);
            // stale: one side was merged away or has grown since the pair was queued
            if symbols[l].len == 0
                || symbols[r].len == 0
                || symbols[l].piece != candidate.left_piece
                || symbols[r].piece != candidate.right_piece
            {
                continue;
            }
            symbols[l].len += symbols[r].len;
            symbols[l].piece = candidate.merged;
            symbols[r].len = 0;
            let after = symbols[r].next;
            symbols[l].next = after;
            if let Some(a) = after {
                symbols[a].prev = Some(l);
            }
            push(&mut queue, &symbols, symbols[l].prev, Some(l));
            push(&mut queue, &symbols, Some(l), after);
        }

        let mut at = (!symbols.is_empty()).then_some(0);
        while let Some(i) = at {
            let s = &symbols[i];
            if s.piece < self.n_vocab {
                out.push(s.piece);
            } else {
                out.extend(
                    word.as_bytes()[s.start..s.start + s.len]
                        .iter()
                        .filter_map(|&b| byte_token(b)),
                );
            }
            at = s.next;
        }
    }
}
