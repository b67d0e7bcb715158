//! Pre-tokenizers of byte-level BPE vocabularies: split text into words before BPE merges.
//!
//! Each `tokenizer.ggml.pre` names a list of regexes (from the model's `tokenizer.json`) that
//! llama.cpp applies one after the other, each one splitting every piece the previous one left
//! (matches and the gaps between them both become pieces). The regexes are written out here as
//! small hand-made scanners over code points rather than run by a regex engine, on purpose:
//! - the main patterns need look-ahead (`\s+(?!\S)`), which the `regex` crate lacks;
//! - token ids must equal llama.cpp's, which classifies characters with its own Unicode 15.1
//!   tables and `White_Space` for `\s`; a regex crate brings its own (newer) Unicode version;
//! - no dependency to compile: each scanner is a few lines, mirroring one regex alternative
//!   per block, with the regex quoted above it.

use std::ops::Range;

use super::unicode::{Category, CharClass};

/// One regex of a pre-tokenizer's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2Words,
    /// Llama 3 (`max_digits` 3), Qwen2 (`max_digits` 1), Qwen3.5 (`marks_in_words`):
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    /// where `marks_in_words` reads `\p{L}` as `[\p{L}\p{M}]` in the word alternatives.
    Llama3Words {
        max_digits: usize,
        marks_in_words: bool,
    },
    /// `\p{N}`: every number character on its own.
    EachNumber,
    /// `\p{N}+`
    NumberRuns,
    /// `[\p{P}\$\+<=>\^~\|]+`, with the backtick as well when `backtick` (Falcon).
    PunctuationRuns { backtick: bool },
    /// `[0-9][0-9][0-9]`
    AsciiDigitTriples,
    /// `[^\n]+|[\n]+`
    NewlineRuns,
    /// `[\r\n]`: every carriage return and line feed on its own.
    EachNewline,
    /// `\s?[set]+`: a run of the set, with the whitespace character before it.
    SpaceThenRun(CharSet),
    /// `[set]+`
    Runs(CharSet),
    /// `\s+$`: the whitespace ending the piece.
    TrailingWhitespace,
}

/// Character sets of the DeepSeek pre-tokenizers. The explicit ranges come from the models'
/// `tokenizer.json` regexes, which llama.cpp matches with whitespace masked out (its regex
/// engine sees every non-ASCII whitespace character as `\v`), so no set holds whitespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CharSet {
    /// `\p{L}`
    Letter,
    /// `\p{P}`
    Punctuation,
    /// DeepSeek LLM's letters of cased scripts: `[A-Za-zµÀ-ÖØ-öø-ƺ...]`
    CasedLetters,
    /// DeepSeek LLM's ASCII and full-width punctuation: `[!-/:-~！-／：-～‘-‟　-。]`
    AsciiFullWidthPunctuation,
    /// DeepSeek's CJK: `[一-龥ࠀ-一가-퟿]`
    Cjk,
}

/// `CharSet::CasedLetters` as inclusive code point ranges.
#[rustfmt::skip]
const CASED_LETTERS: &[(u32, u32)] = &[
    (0x41, 0x5A), (0x61, 0x7A), (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BA), (0x1BC, 0x1BF),
    (0x1C4, 0x293), (0x295, 0x2AF), (0x370, 0x373), (0x376, 0x377), (0x37B, 0x37D), (0x37F, 0x37F), (0x386, 0x386),
    (0x388, 0x38A), (0x38C, 0x38C), (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481), (0x48A, 0x52F), (0x531, 0x556),
    (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD), (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B),
    (0x1D6B, 0x1D77), (0x1D79, 0x1D9A), (0x1E00, 0x1F15), (0x1F18, 0x1F1D), (0x1F20, 0x1F45), (0x1F48, 0x1F4D),
    (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4),
    (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3), (0x1FD6, 0x1FDB),
    (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC), (0x2102, 0x2102), (0x2107, 0x2107), (0x210A, 0x2113),
    (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124), (0x2126, 0x2126), (0x2128, 0x2128), (0x212A, 0x212D),
    (0x212F, 0x2134), (0x2139, 0x2139), (0x213C, 0x213F), (0x2145, 0x2149), (0x214E, 0x214E), (0x2183, 0x2184),
    (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE), (0x2CF2, 0x2CF3), (0xA640, 0xA66D), (0xA680, 0xA69B),
    (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E), (0xAB70, 0xABBF), (0xFB00, 0xFB06), (0xFB13, 0xFB17),
    (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0x10400, 0x1044F), (0x104B0, 0x104D3), (0x104D8, 0x104FB),
    (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x118A0, 0x118DF), (0x1E900, 0x1E943),
];

impl CharSet {
    fn contains(self, c: char, class: CharClass) -> bool {
        let in_ranges = |ranges: &[(u32, u32)]| {
            ranges
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&(c as u32)))
        };
        match self {
            CharSet::Letter => class.is_letter(),
            CharSet::Punctuation => class.category == Category::Punctuation,
            CharSet::CasedLetters => !class.whitespace && in_ranges(CASED_LETTERS),
            CharSet::AsciiFullWidthPunctuation => {
                !class.whitespace
                    && in_ranges(&[
                        (0x21, 0x2F),
                        (0x3A, 0x7E),
                        (0xFF01, 0xFF0F),
                        (0xFF1A, 0xFF5E),
                        (0x2018, 0x201F),
                        (0x3000, 0x3002),
                    ])
            }
            CharSet::Cjk => {
                !class.whitespace
                    && in_ranges(&[(0x4E00, 0x9FA5), (0x0800, 0x4E00), (0xAC00, 0xD7FF)])
            }
        }
    }
}

/// Split `text` into words (byte ranges of `text`) by applying `splits` in order.
pub fn split_words(text: &str, splits: &[Split]) -> Vec<Range<usize>> {
    let chars: Vec<char> = text.chars().collect();
    let classes: Vec<CharClass> = chars.iter().map(|&c| CharClass::of(c)).collect();
    // pieces: char-index ranges covering `chars` exactly, in order
    let mut pieces: Vec<Range<usize>> = Vec::new();
    if !chars.is_empty() {
        pieces.push(0..chars.len());
    }
    for split in splits {
        let mut next = Vec::with_capacity(pieces.len() * 2);
        for piece in &pieces {
            let scan = Scan {
                chars: &chars[piece.start..piece.end],
                classes: &classes[piece.start..piece.end],
            };
            let offset = piece.start;
            scan.split(*split, &mut |r: Range<usize>| {
                next.push(r.start + offset..r.end + offset)
            });
        }
        pieces = next;
    }
    // char ranges -> byte ranges
    let mut byte_at = Vec::with_capacity(chars.len() + 1);
    let mut b = 0;
    for c in &chars {
        byte_at.push(b);
        b += c.len_utf8();
    }
    byte_at.push(b);
    pieces
        .into_iter()
        .map(|r| byte_at[r.start]..byte_at[r.end])
        .collect()
}

/// One piece being split: its characters and their classes (indices are piece-local).
struct Scan<'a> {
    chars: &'a [char],
    classes: &'a [CharClass],
}

/// Emits the words of a piece: `cut(end)` ends the current word at `end`.
struct Cutter<'f> {
    word_start: usize,
    emit: &'f mut dyn FnMut(Range<usize>),
}

impl Cutter<'_> {
    fn cut(&mut self, end: usize) -> usize {
        if end > self.word_start {
            (self.emit)(self.word_start..end);
        }
        self.word_start = end;
        end
    }
}

impl Scan<'_> {
    fn len(&self) -> usize {
        self.chars.len()
    }
    /// The class at `pos`, `None` past the piece's end (nothing matches there).
    fn class(&self, pos: usize) -> Option<CharClass> {
        self.classes.get(pos).copied()
    }
    fn is(&self, pos: usize, pred: impl Fn(CharClass) -> bool) -> bool {
        self.class(pos).is_some_and(pred)
    }
    fn char_at(&self, pos: usize) -> Option<char> {
        self.chars.get(pos).copied()
    }

    fn split(&self, split: Split, emit: &mut dyn FnMut(Range<usize>)) {
        match split {
            Split::Gpt2Words => self.gpt2_words(emit),
            Split::Llama3Words {
                max_digits,
                marks_in_words,
            } => self.llama3_words(max_digits, marks_in_words, emit),
            Split::EachNumber => {
                self.matches(emit, |s, pos| s.is(pos, |c| c.is_number()).then_some(1))
            }
            Split::NumberRuns => self.matches(emit, |s, pos| s.run(pos, |c| c.is_number())),
            Split::PunctuationRuns { backtick } => self.matches(emit, |s, pos| {
                let mut end = pos;
                while end < s.len()
                    && is_punctuation_or_listed(s.chars[end], s.classes[end], backtick)
                {
                    end += 1;
                }
                (end > pos).then_some(end - pos)
            }),
            Split::AsciiDigitTriples => self.matches(emit, |s, pos| {
                (pos + 3 <= s.len() && s.chars[pos..pos + 3].iter().all(|c| c.is_ascii_digit()))
                    .then_some(3)
            }),
            Split::EachNewline => self.matches(emit, |s, pos| {
                matches!(s.chars[pos], '\r' | '\n').then_some(1)
            }),
            Split::SpaceThenRun(set) => self.matches(emit, |s, pos| {
                let in_set = |p: usize| p < s.len() && set.contains(s.chars[p], s.classes[p]);
                let body = if s.classes[pos].whitespace && in_set(pos + 1) {
                    pos + 1
                } else {
                    pos
                };
                let mut end = body;
                while in_set(end) {
                    end += 1;
                }
                (end > body).then_some(end - pos)
            }),
            Split::Runs(set) => self.matches(emit, |s, pos| {
                let mut end = pos;
                while end < s.len() && set.contains(s.chars[end], s.classes[end]) {
                    end += 1;
                }
                (end > pos).then_some(end - pos)
            }),
            Split::TrailingWhitespace => self.matches(emit, |s, pos| {
                (pos + s.whitespace_run(pos) == s.len() && s.classes[pos].whitespace)
                    .then(|| s.len() - pos)
            }),
            Split::NewlineRuns => {
                let newline_run = |s: &Scan, pos: usize, newline: bool| {
                    let mut end = pos;
                    while end < s.len() && (s.chars[end] == '\n') == newline {
                        end += 1;
                    }
                    end - pos
                };
                self.matches(emit, |s, pos| {
                    Some(newline_run(s, pos, s.chars[pos] == '\n'))
                })
            }
        }
    }

    /// Length of the run of characters satisfying `pred` from `pos` (`None` if empty).
    fn run(&self, pos: usize, pred: impl Fn(CharClass) -> bool) -> Option<usize> {
        let mut end = pos;
        while self.is(end, &pred) {
            end += 1;
        }
        (end > pos).then_some(end - pos)
    }

    /// A regex used as a splitter: left to right, each match is a word and so is each gap
    /// between matches. `match_at(scan, pos)` is the length of the match starting at `pos`.
    fn matches(
        &self,
        emit: &mut dyn FnMut(Range<usize>),
        match_at: impl Fn(&Self, usize) -> Option<usize>,
    ) {
        let mut words = Cutter {
            word_start: 0,
            emit,
        };
        let mut pos = 0;
        while pos < self.len() {
            match match_at(self, pos) {
                Some(len) => {
                    words.cut(pos); // the gap before the match
                    pos = words.cut(pos + len);
                }
                None => pos += 1,
            }
        }
        words.cut(self.len());
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` (ASCII case-insensitive when `any_case`): the match length.
    fn contraction(&self, pos: usize, any_case: bool) -> Option<usize> {
        if self.char_at(pos) != Some('\'') {
            return None;
        }
        let lower = |c: Option<char>| c.map(|c| if any_case { c.to_ascii_lowercase() } else { c });
        let (c1, c2) = (lower(self.char_at(pos + 1)), lower(self.char_at(pos + 2)));
        match (c1?, c2) {
            ('s' | 't' | 'm' | 'd', _) => Some(2),
            ('r', Some('e')) | ('v', Some('e')) | ('l', Some('l')) => Some(3),
            _ => None,
        }
    }

    /// Number of whitespace characters from `pos` (`\s+` greedy).
    fn whitespace_run(&self, pos: usize) -> usize {
        self.run(pos, |c| c.whitespace).unwrap_or(0)
    }

    fn gpt2_words(&self, emit: &mut dyn FnMut(Range<usize>)) {
        let mut words = Cutter {
            word_start: 0,
            emit,
        };
        let other = |c: CharClass| !(c.whitespace || c.is_letter() || c.is_number());
        let mut pos = 0;
        while pos < self.len() {
            // 's|'t|'re|'ve|'m|'ll|'d
            if let Some(len) = self.contraction(pos, false) {
                pos = words.cut(pos + len);
                continue;
            }
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class
            let body = pos + usize::from(self.chars[pos] == ' ');
            let classes: [&dyn Fn(CharClass) -> bool; 3] =
                [&|c| c.is_letter(), &|c| c.is_number(), &other];
            if let Some(class) = classes.iter().find(|class| self.is(body, class)) {
                pos = words.cut(body + self.run(body, class).unwrap_or(0));
                continue;
            }
            // `\s+(?!\S)`: a run of spaces followed by a non-space gives its last space to the next word
            let spaces = self.whitespace_run(pos);
            if spaces > 1 && pos + spaces < self.len() {
                pos = words.cut(pos + spaces - 1);
                continue;
            }
            // `\s+`, or a single character no alternative matches
            pos = words.cut(pos + spaces.max(1));
        }
    }

    fn llama3_words(
        &self,
        max_digits: usize,
        marks_in_words: bool,
        emit: &mut dyn FnMut(Range<usize>),
    ) {
        let mut words = Cutter {
            word_start: 0,
            emit,
        };
        let wordish = |c: CharClass| c.is_letter() || (marks_in_words && c.is_mark());
        let other = |c: CharClass| !(c.whitespace || c.is_number() || wordish(c));
        let is_newline = |c: char| c == '\r' || c == '\n';
        let mut pos = 0;
        while pos < self.len() {
            let (c, class) = (self.chars[pos], self.classes[pos]);
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if let Some(len) = self.contraction(pos, true) {
                pos = words.cut(pos + len);
                continue;
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+ : one optional leading character, then letters
            if !is_newline(c) && !class.is_number() && (wordish(class) || self.is(pos + 1, wordish))
            {
                pos = words.cut(pos + 1 + self.run(pos + 1, wordish).unwrap_or(0));
                continue;
            }
            // \p{N}{1,max_digits}
            if class.is_number() {
                let run = self.run(pos, |c| c.is_number()).unwrap_or(0);
                for _ in 0..run / max_digits {
                    pos = words.cut(pos + max_digits);
                }
                pos = words.cut(pos + run % max_digits);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let body = pos + usize::from(c == ' ');
            if self.is(body, other) {
                let mut end = body + self.run(body, other).unwrap_or(0);
                while self.char_at(end).is_some_and(is_newline) {
                    end += 1;
                }
                pos = words.cut(end);
                continue;
            }
            // `\s*[\r\n]+`: whitespace up to and including the run's last \r or \n
            let spaces = self.whitespace_run(pos);
            if let Some(last_newline) = (pos..pos + spaces)
                .rev()
                .find(|&p| is_newline(self.chars[p]))
            {
                pos = words.cut(last_newline + 1);
                continue;
            }
            // `\s+(?!\S)`
            if spaces > 1 && pos + spaces < self.len() {
                pos = words.cut(pos + spaces - 1);
                continue;
            }
            // `\s+`, or a single character no alternative matches
            pos = words.cut(pos + spaces.max(1));
        }
    }
}

/// `[\p{P}\$\+<=>\^~\|]` (and `` ` `` when `backtick`).
fn is_punctuation_or_listed(c: char, class: CharClass, backtick: bool) -> bool {
    class.category == Category::Punctuation
        || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
        || (backtick && c == '`')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words<'t>(text: &'t str, splits: &[Split]) -> Vec<&'t str> {
        split_words(text, splits)
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    const LLAMA3: Split = Split::Llama3Words {
        max_digits: 3,
        marks_in_words: false,
    };
    const QWEN2: Split = Split::Llama3Words {
        max_digits: 1,
        marks_in_words: false,
    };

    #[test]
    fn gpt2_words() {
        let w = |t| words(t, &[Split::Gpt2Words]);
        assert_eq!(w("Hello world"), ["Hello", " world"]);
        assert_eq!(w("I'll   go!!"), ["I", "'ll", "  ", " go", "!!"]);
        assert_eq!(w("a  \n"), ["a", "  \n"]);
        assert_eq!(w(" 12ab"), [" 12", "ab"]);
        assert_eq!(w("x\t y"), ["x", "\t", " y"]);
        assert_eq!(w("'S"), ["'", "S"]);
        assert_eq!(w(""), Vec::<&str>::new());
    }

    #[test]
    fn llama3_words() {
        let w = |t| words(t, &[LLAMA3]);
        assert_eq!(w("Hello, World!"), ["Hello", ",", " World", "!"]);
        assert_eq!(w("1234567"), ["123", "456", "7"]);
        assert_eq!(w("'S (normal)"), ["'S", " (", "normal", ")"]);
        assert_eq!(w("a \n\n  b"), ["a", " \n\n", " ", " b"]);
        assert_eq!(w("x...\n\ny"), ["x", "...\n\n", "y"]);
        assert_eq!(w("   "), ["   "]);
        assert_eq!(words("1234", &[QWEN2]), ["1", "2", "3", "4"]);
    }

    #[test]
    fn staged_splits() {
        // starcoder/smollm: digits first, then GPT-2 words inside each piece
        assert_eq!(
            words("a 12", &[Split::EachNumber, Split::Gpt2Words]),
            ["a", " ", "1", "2"]
        );
        // default: punctuation runs, GPT-2 words, number runs, ASCII digit triples
        let default = [
            Split::PunctuationRuns { backtick: false },
            Split::Gpt2Words,
            Split::NumberRuns,
            Split::AsciiDigitTriples,
        ];
        assert_eq!(
            words("Hi, 12345!", &default),
            ["Hi", ",", " ", "123", "45", "!"]
        );
        assert_eq!(
            words("ab\n\ncd\n", &[Split::NewlineRuns]),
            ["ab", "\n\n", "cd", "\n"]
        );
        let deepseek_coder = [
            Split::EachNewline,
            Split::SpaceThenRun(CharSet::Letter),
            Split::SpaceThenRun(CharSet::Punctuation),
            Split::Runs(CharSet::Cjk),
            Split::EachNumber,
        ];
        assert_eq!(
            words("Hi, you\r\n 12中文", &deepseek_coder),
            ["Hi", ",", " you", "\r", "\n", " ", "1", "2", "中文"]
        );
        assert_eq!(
            words("a b  \t", &[Split::TrailingWhitespace]),
            ["a b", "  \t"]
        );
    }
}
