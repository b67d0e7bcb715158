//! The crate's layers stay acyclic: `device` <- `ops` <- `backend` <- `model` and the rest,
//! with `error` and `gguf` below everything. Every Rust file under `src/<layer>/` may name only
//! its own layer and the ones below it; naming a higher one (`crate::<module>`,
//! `rocmforge::<module>`, or a `super::` chain that climbs to the crate root and down into
//! another module) fails this test with the file, the line and the rule.
//!
//! The scan reads code only: comments and string literals are blanked first, so prose that
//! mentions a higher layer is not an import. The top-level modules are read from `src/lib.rs`,
//! so a module added there counts as a higher layer until it is listed below.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// (layer, the top-level modules below it that it may name). A layer may always name itself;
/// `test_rng` (test and benchmark data) names nothing, so every layer may use it.
const LAYERS: &[(&str, &[&str])] = &[
    ("device", &["error", "gguf", "test_rng"]),
    ("ops", &["error", "gguf", "device", "test_rng"]),
    ("backend", &["error", "gguf", "device", "ops", "test_rng"]),
];

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Str(String),
    Punct(char),
}

/// Tokens of `src` with their 1-based line, comments dropped. Only what the path scan needs:
/// identifiers, `::`, string literals (their text, for `#[path = "..."]`) and single
/// punctuation characters; numbers and char literals are skipped.
fn tokenize(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if let Some((text, end)) = string_literal(&c, i) {
            out.push((Tok::Str(text.clone()), line));
            line += text.matches('\n').count();
            i = end;
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a): skip either.
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if is_ident(ch) {
            let start = i;
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            if !word.starts_with(|d: char| d.is_ascii_digit()) {
                out.push((Tok::Ident(word), line));
            }
        } else if ch == ':' && next == Some(':') {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// A string literal starting at `i` ("..", b"..", r#".."#, br".."): its text and the index
/// after it; `None` if none starts there.
fn string_literal(c: &[char], i: usize) -> Option<(String, usize)> {
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None; // inside an identifier such as `bar"`: not a literal's prefix
    }
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    let raw = c.get(j) == Some(&'r');
    if raw {
        j += 1;
    }
    let mut hashes = 0;
    while raw && c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    let start = j;
    while j < c.len() {
        if !raw && c[j] == '\\' {
            j += 2;
            continue;
        }
        if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
            let text = c[start..j].iter().collect();
            return Some((text, j + 1 + hashes));
        }
        j += 1;
    }
    Some((c[start..].iter().collect(), c.len()))
}

/// The top-level modules a path starting at `toks[i]` (just after `crate::` or the root reached
/// by `super::`) names: one identifier, the first segments of a `{...}` group, or `*`.
fn root_names(toks: &[(Tok, usize)], i: usize) -> Vec<String> {
    match toks.get(i).map(|t| &t.0) {
        Some(Tok::Ident(name)) => vec![name.clone()],
        Some(Tok::Punct('*')) => vec!["*".into()],
        Some(Tok::Punct('{')) => {
            let (mut names, mut depth, mut at_start) = (Vec::new(), 0, true);
            for (tok, _) in &toks[i..] {
                match tok {
                    Tok::Punct('{') => {
                        depth += 1;
                        at_start = depth == 1;
                    }
                    Tok::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Punct(',') => at_start = depth == 1,
                    Tok::Ident(name) if at_start => {
                        names.push(name.clone());
                        at_start = false;
                    }
                    Tok::Punct('*') if at_start => {
                        names.push("*".into());
                        at_start = false;
                    }
                    _ => at_start = false,
                }
            }
            names
        }
        _ => Vec::new(),
    }
}

/// What one file names at the crate root: (line, top-level module, how it was reached).
/// `module` is the file's module path (`["ops", "matmul", "gpu"]`); inline `mod x { .. }`
/// blocks deepen it for the `super::` chains inside them.
fn root_references(src: &str, module: &[String]) -> Vec<(usize, String, String)> {
    let toks = tokenize(src);
    let mut found = Vec::new();
    // (inline module, brace depth at which its block opened)
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    for i in 0..toks.len() {
        let prev = if i > 0 { Some(&toks[i - 1].0) } else { None };
        let starts_path = prev != Some(&Tok::PathSep);
        match &toks[i].0 {
            Tok::Punct('{') => {
                depth += 1;
                if let (Some((Tok::Ident(m), _)), Some((Tok::Ident(name), _))) = (
                    i.checked_sub(2).map(|k| &toks[k]),
                    i.checked_sub(1).map(|k| &toks[k]),
                ) {
                    if m == "mod" {
                        inline.push((name.clone(), depth));
                    }
                }
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(word)
                if starts_path
                    && (word == "crate" || word == "rocmforge")
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep) =>
            {
                for name in root_names(&toks, i + 2) {
                    found.push((toks[i].1, name, format!("{word}::")));
                }
            }
            Tok::Ident(word) if starts_path && word == "super" => {
                let mut climbs = 0;
                let mut k = i;
                while matches!(&toks.get(k).map(|t| &t.0), Some(Tok::Ident(w)) if w == "super")
                    && toks.get(k + 1).map(|t| &t.0) == Some(&Tok::PathSep)
                {
                    climbs += 1;
                    k += 2;
                }
                let here = module.len() + inline.len();
                if climbs > 0 && climbs >= here {
                    for name in root_names(&toks, k) {
                        found.push((toks[i].1, name, "super::".repeat(climbs)));
                    }
                }
            }
            _ => {}
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of `file` (relative to `src/`) by Rust's file layout: `a/b.rs` and
/// `a/b/mod.rs` are `a::b`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Module paths of files a `#[path = "..."] mod name;` puts elsewhere (`backend/cpu.rs`'s
/// tests in `backend/cpu_tests.rs` are `backend::cpu::tests`), keyed by file under `src/`.
fn path_attribute_modules(src: &Path, files: &[PathBuf]) -> HashMap<PathBuf, Vec<String>> {
    let mut moved = HashMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let toks = tokenize(&std::fs::read_to_string(file).unwrap());
        let at = |k: usize| toks.get(k).map(|t| &t.0);
        for i in 0..toks.len() {
            let path_attribute = [
                Tok::Punct('#'),
                Tok::Punct('['),
                Tok::Ident("path".into()),
                Tok::Punct('='),
            ];
            if !(0..4).all(|k| at(i + k) == Some(&path_attribute[k])) {
                continue;
            }
            let Some(Tok::Str(target)) = at(i + 4) else {
                continue;
            };
            // The `mod name` it is on, after any other attributes and a visibility.
            let name = toks[i + 5..].windows(2).take(12).find_map(|p| match p {
                [(Tok::Ident(m), _), (Tok::Ident(name), _)] if m == "mod" => Some(name.clone()),
                _ => None,
            });
            if let Some(name) = name {
                let target = rel.parent().unwrap_or(Path::new("")).join(target);
                let mut module = module_of(rel);
                module.push(name);
                moved.insert(target, module);
            }
        }
    }
    moved
}

/// The top-level modules `src/lib.rs` declares.
fn top_level_modules(lib_rs: &str) -> Vec<String> {
    let toks = tokenize(lib_rs);
    toks.windows(3)
        .filter_map(|w| match w {
            [(Tok::Ident(m), _), (Tok::Ident(name), _), (Tok::Punct(';'), _)] if m == "mod" => {
                Some(name.clone())
            }
            _ => None,
        })
        .collect()
}

/// Every violation of the layer rules under `src`, one line each.
fn violations(src: &Path) -> Vec<String> {
    let modules = top_level_modules(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut all_files = Vec::new();
    rust_files(src, &mut all_files);
    let moved = path_attribute_modules(src, &all_files);
    let mut out = Vec::new();
    for (layer, below) in LAYERS {
        assert!(
            modules.iter().any(|m| m == layer),
            "layer `{layer}` is not a module of src/lib.rs"
        );
        let allowed = |m: &str| m == *layer || below.contains(&m);
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        for file in files {
            let rel = file.strip_prefix(src).unwrap();
            let module = moved.get(rel).cloned().unwrap_or_else(|| module_of(rel));
            let text = std::fs::read_to_string(&file).unwrap();
            for (line, name, how) in root_references(&text, &module) {
                let forbidden = if name == "*" {
                    true // a glob of the crate root names every layer
                } else {
                    modules.contains(&name) && !allowed(&name)
                };
                if forbidden {
                    out.push(format!(
                        "src/{}:{line}: `{how}{name}`: the `{layer}` layer may name only itself \
                         and {} (layers: device <- ops <- backend <- model)",
                        rel.display(),
                        below.join(", ")
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn layers_name_only_themselves_and_the_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "{} import(s) climb the layers:\n{}",
        found.len(),
        found.join("\n")
    );
}

// The scan itself, on snippets: it must see through grouping, `super::` chains and inline
// modules, and not be fooled by comments, strings or lifetimes.

fn names(src: &str, module: &[&str]) -> Vec<String> {
    let module: Vec<String> = module.iter().map(|s| s.to_string()).collect();
    root_references(src, &module)
        .into_iter()
        .map(|(line, name, how)| format!("{line}:{how}{name}"))
        .collect()
}

#[test]
fn scan_finds_crate_and_grouped_paths() {
    let src = "use crate::device::Device;\nuse crate::{error::Result, backend::{self, Backend}};\n\
               fn f() { rocmforge::model::load(); }\n";
    assert_eq!(
        names(src, &["ops", "norm"]),
        [
            "1:crate::device",
            "2:crate::error",
            "2:crate::backend",
            "3:rocmforge::model"
        ]
    );
}

#[test]
fn scan_follows_super_chains_to_the_root_only() {
    let src = "use super::check_len;\nuse super::super::backend::Backend;\n\
               mod tests { use super::super::super::model; use super::super::rope; }\n\
               use super::super::*;\n";
    assert_eq!(
        names(src, &["ops", "norm"]),
        [
            "2:super::super::backend",
            "3:super::super::super::model",
            "4:super::super::*"
        ]
    );
}

#[test]
fn scan_ignores_comments_strings_and_lifetimes() {
    let src = "// use crate::backend;\n/* crate::model /* nested */ crate::python */\n\
               /// See `crate::backend::Backend`.\nconst S: &str = \"crate::model\";\n\
               const R: &str = r#\"crate::bench \" \"#;\nfn f<'a>(x: &'a u8) -> char { '\"' }\n\
               pub(crate) fn g() { h::crate_like::x(); }\nuse crate::gguf;\n";
    assert_eq!(names(src, &["device"]), ["8:crate::gguf"]);
}

#[test]
fn path_attribute_files_get_their_declared_module() {
    let dir = std::env::temp_dir().join(format!("rocmforge-layering-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("backend")).unwrap();
    let cpu = dir.join("backend/cpu.rs");
    std::fs::write(
        &cpu,
        "#[cfg(test)]\n#[path = \"cpu_tests.rs\"]\nmod tests;\n",
    )
    .unwrap();
    let moved = path_attribute_modules(&dir, &[cpu]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        moved.get(Path::new("backend/cpu_tests.rs")),
        Some(&vec!["backend".to_string(), "cpu".into(), "tests".into()])
    );
}
