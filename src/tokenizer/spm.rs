//! SentencePiece (BPE flavour) encoding with token scores, as llama.cpp's `llama` tokenizer
//! model does it: start from the text's characters, repeatedly merge the adjacent pair whose
//! concatenation is the vocabulary token of highest score (leftmost on ties), then spell any
//! character that is not a token with byte tokens (`<0xXX>`, "byte fallback").

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Vocab;

/// A candidate merge of symbols `left` and `right` (adjacent when queued) into a token of `score`.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Bytes the merged symbol spans; a mismatch when popped means the pair is stale.
    len: usize,
}

impl Ord for Bigram {
    /// Highest score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}

/// Encode `text` (spaces already escaped as U+2581) and append the ids to `out`.
/// `byte_token(b)` is the token spelling byte `b`, if the vocabulary has one.
pub fn encode(
    text: &str,
    vocab: &Vocab,
    byte_token: &dyn Fn(u8) -> Option<u32>,
    out: &mut Vec<u32>,
) {
    struct Symbol {
        start: usize,
        len: usize,
        prev: Option<usize>,
        next: Option<usize>,
    }
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (start, c) in text.char_indices() {
        let i = symbols.len();
        let len = c.len_utf8();
        symbols.push(Symbol {
            start,
            len,
            prev: i.checked_sub(1),
            next: (start + len < text.len()).then_some(i + 1),
        });
    }

    let mut queue = BinaryHeap::new();
    let push = |queue: &mut BinaryHeap<Bigram>,
                symbols: &[Symbol],
                left: Option<usize>,
                right: Option<usize>| {
        let (Some(l), Some(r)) = (left, right) else {
            return;
        };
        let (start, end) = (symbols[l].start, symbols[r].start + symbols[r].len);
        if let Some(id) = vocab.id(&text[start..end]) {
            queue.push(Bigram {
                score: vocab.score(id),
                left: l,
                right: r,
                len: end - start,
            });
        }
    };
    for i in 1..symbols.len() {
        push(&mut queue, &symbols, Some(i - 1), Some(i));
    }
    while let Some(bigram) = queue.pop() {
        let (l, r) = (bigram.left, bigram.right);
        if symbols[l].len == 0
            || symbols[r].len == 0
            || symbols[l].len + symbols[r].len != bigram.len
        {
            continue;
        }
        symbols[l].len += symbols[r].len;
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
        let piece = &text[s.start..s.start + s.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(byte_token)),
        }
        at = s.next;
    }
}
