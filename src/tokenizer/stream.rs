//! Streaming detokenization: text that only ever holds complete UTF-8 characters, produced as
//! ids arrive. `Tokenizer::decode` is this run over all ids, so a stream concatenates to it.
//!
//! Pieces are bytes (a byte-fallback token is one byte of a multi-byte character), so the
//! stream holds back an unfinished character until its last byte arrives. Vocabularies with
//! llama.cpp's `clean_spaces` also drop spaces before `?!.,`, around a lone `'` and before
//! `'s 'm 're 've`; those rules look a few bytes ahead, so the stream holds back a short tail
//! ("a ?" must not emit "a " before it sees the "?").

use super::Tokenizer;
use crate::error::Result;

/// Incremental detokenizer of one sequence. Create it with `Tokenizer::detokenizer`.
pub struct Detokenizer {
    special: bool,
    /// SentencePiece vocabularies drop the space their prefix added, from the first piece only.
    strip_first_space: bool,
    seen_token: bool,
    clean: Option<CleanSpaces>,
    /// Bytes of a character not yet complete.
    partial_char: Vec<u8>,
}

impl Detokenizer {
    /// `special`: render control and unknown tokens (`<|im_end|>`, `<s>`) as their text.
    pub fn new(tokenizer: &Tokenizer, special: bool) -> Detokenizer {
        Detokenizer {
            special,
            strip_first_space: tokenizer.add_space_prefix,
            seen_token: false,
            clean: tokenizer.clean_spaces.then(CleanSpaces::default),
            partial_char: Vec::new(),
        }
    }

    /// Add one token; returns the text it completes (possibly empty). An id outside the
    /// vocabulary is `Error::InvalidArgument` and leaves the stream as it was.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        let mut piece = tokenizer.piece(id, self.special)?;
        if !self.seen_token {
            self.seen_token = true;
            if self.strip_first_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
        }
        match &mut self.clean {
            Some(clean) => clean.feed(piece, &mut self.partial_char),
            None => self.partial_char.extend_from_slice(piece),
        }
        Ok(take_complete_chars(&mut self.partial_char, false))
    }

    /// End of the sequence: whatever is held back (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        if let Some(clean) = &mut self.clean {
            clean.flush(&mut self.partial_char);
        }
        take_complete_chars(&mut self.partial_char, true)
    }
}

/// Take the longest prefix of `bytes` that decodes fully, as `String::from_utf8_lossy` would
/// decode it (each invalid sequence becomes one U+FFFD). A trailing sequence that may still be
/// completed stays in `bytes` unless `at_end`.
fn take_complete_chars(bytes: &mut Vec<u8>, at_end: bool) -> String {
    let mut text = String::new();
    let mut rest: &[u8] = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                text.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                text.push_str(std::str::from_utf8(valid).expect("checked valid"));
                match e.error_len() {
                    Some(bad) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[bad..];
                    }
                    None if at_end => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        rest = &[];
                        break;
                    }
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    let kept = rest.len();
    bytes.drain(..bytes.len() - kept);
    text
}

/// llama.cpp's three clean-up passes over the detokenized bytes, each as a streaming filter
/// that holds back at most the bytes its rule still has to look past. In order:
/// 1. drop a space before `?`, `!`, `.` or `,`;
/// 2. `" ' "` becomes `"'"` (both spaces dropped);
/// 3. drop the space of `" 's"`, `" 'm"`, `" 're"`, `" 've"` (not of `" 't"`, `" 'd"`, `" 'll"`).
#[derive(Default)]
struct CleanSpaces {
    space_before_punct: SpaceBeforePunct,
    quote_between_spaces: QuoteBetweenSpaces,
    space_before_contraction: SpaceBeforeContraction,
}

impl CleanSpaces {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for &x in bytes {
            self.space_before_punct.feed(x, &mut a);
        }
        for &x in &a {
            self.quote_between_spaces.feed(x, &mut b);
        }
        for &x in &b {
            self.space_before_contraction.feed(x, out);
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        self.space_before_punct.flush(&mut a);
        for &x in &a {
            self.quote_between_spaces.feed(x, &mut b);
        }
        self.quote_between_spaces.flush(&mut b);
        for &x in &b {
            self.space_before_contraction.feed(x, out);
        }
        self.space_before_contraction.flush(out);
    }
}

/// Pass 1: holds a space until the next byte shows whether it is dropped.
#[derive(Default)]
struct SpaceBeforePunct {
    held_space: bool,
}

impl SpaceBeforePunct {
    fn feed(&mut self, x: u8, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.held_space) && !matches!(x, b'?' | b'!' | b'.' | b',') {
            out.push(b' ');
        }
        if x == b' ' {
            self.held_space = true;
        } else {
            out.push(x);
        }
    }
    fn flush(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.held_space) {
            out.push(b' ');
        }
    }
}

/// Pass 2: holds `" "` or `" '"`.
#[derive(Default)]
struct QuoteBetweenSpaces {
    held: Vec<u8>,
}

impl QuoteBetweenSpaces {
    fn feed(&mut self, x: u8, out: &mut Vec<u8>) {
        match (self.held.as_slice(), x) {
            ([], b' ') => self.held.push(x),
            ([], _) => out.push(x),
            ([b' '], b'\'') => self.held.push(x),
            ([b' '], b' ') => out.push(b' '),
            ([b' ', b'\''], b' ') => {
                out.push(b'\'');
                self.held.clear();
            }
            _ => {
                // no match: release what was held; `x` is not a space here, so it passes too
                out.append(&mut self.held);
                out.push(x);
            }
        }
    }
    fn flush(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
    }
}

/// Pass 3: holds `" "`, `" '"`, `" 'r"` or `" 'v"`.
#[derive(Default)]
struct SpaceBeforeContraction {
    held: Vec<u8>,
}

impl SpaceBeforeContraction {
    fn feed(&mut self, x: u8, out: &mut Vec<u8>) {
        match (self.held.as_slice(), x) {
            ([], b' ') => self.held.push(x),
            ([], _) => out.push(x),
            ([b' '], b'\'') => self.held.push(x),
            ([b' '], b' ') => out.push(b' '),
            ([b' ', b'\''], b's' | b'm') => {
                out.extend_from_slice(&[b'\'', x]);
                self.held.clear();
            }
            ([b' ', b'\''], b'r' | b'v') => self.held.push(x),
            ([b' ', b'\'', r], b'e') => {
                out.extend_from_slice(&[b'\'', *r, b'e']);
                self.held.clear();
            }
            _ => {
                // no match: release what was held, then `x` starts afresh (it may be a space)
                out.append(&mut self.held);
                self.feed(x, out);
            }
        }
    }
    fn flush(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three rules written as whole-string passes, straight from their definitions.
    fn clean_whole(text: &[u8]) -> Vec<u8> {
        // 1. a space directly before ? ! . , goes
        let mut p1 = Vec::new();
        for (i, &x) in text.iter().enumerate() {
            if x == b' ' && matches!(text.get(i + 1), Some(b'?' | b'!' | b'.' | b',')) {
                continue;
            }
            p1.push(x);
        }
        // 2. " ' " -> "'": scanning left to right; a space consumed by a match is gone
        let mut p2 = Vec::new();
        let mut i = 0;
        while i < p1.len() {
            if p1[i] == b' ' && p1.get(i + 1) == Some(&b'\'') && p1.get(i + 2) == Some(&b' ') {
                p2.push(b'\'');
                i += 3;
            } else {
                p2.push(p1[i]);
                i += 1;
            }
        }
        // 3. the space of " 's", " 'm", " 're", " 've" goes
        let mut p3 = Vec::new();
        for (i, &x) in p2.iter().enumerate() {
            let after = &p2[i + 1..];
            if x == b' '
                && (after.starts_with(b"'s")
                    || after.starts_with(b"'m")
                    || after.starts_with(b"'re")
                    || after.starts_with(b"'ve"))
            {
                continue;
            }
            p3.push(x);
        }
        p3
    }

    fn clean_streamed(chunks: &[&[u8]]) -> Vec<u8> {
        let mut clean = CleanSpaces::default();
        let mut out = Vec::new();
        for c in chunks {
            clean.feed(c, &mut out);
        }
        clean.flush(&mut out);
        out
    }

    #[test]
    fn clean_spaces_examples() {
        assert_eq!(clean_streamed(&[b"Hello , world !"]), b"Hello, world!");
        assert_eq!(clean_streamed(&[b"a ' b"]), b"a'b");
        assert_eq!(
            clean_streamed(&[b"he 's", b" we 're they 'll I 'd"]),
            b"he's we're they 'll I 'd"
        );
        assert_eq!(clean_streamed(&[b" ' ' "]), b"'' ");
    }

    #[test]
    fn streamed_clean_matches_whole_text_clean() {
        // every string over a small alphabet up to length 5, fed in two chunks at every cut
        let alphabet = b" '.smrevlx";
        let mut text = Vec::new();
        fn all(alphabet: &[u8], text: &mut Vec<u8>, depth: usize, check: &mut dyn FnMut(&[u8])) {
            check(text);
            if depth == 0 {
                return;
            }
            for &c in alphabet {
                text.push(c);
                all(alphabet, text, depth - 1, check);
                text.pop();
            }
        }
        all(alphabet, &mut text, 5, &mut |t| {
            let want = clean_whole(t);
            for cut in 0..=t.len() {
                let (a, b) = t.split_at(cut);
                assert_eq!(
                    clean_streamed(&[a, b]),
                    want,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(t)
                );
            }
        });
    }

    #[test]
    fn incomplete_characters_are_held_back() {
        let mut held = "é".as_bytes()[..1].to_vec();
        assert_eq!(take_complete_chars(&mut held, false), "");
        held.push("é".as_bytes()[1]);
        held.push(b'!');
        assert_eq!(take_complete_chars(&mut held, false), "é!");
        let mut bad = vec![b'a', 0xFF, b'b', 0xE4, 0xB8];
        assert_eq!(take_complete_chars(&mut bad, false), "a\u{FFFD}b");
        assert_eq!(take_complete_chars(&mut bad, true), "\u{FFFD}");
    }
}
