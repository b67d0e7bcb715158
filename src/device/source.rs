//! Kernel source assembly and compiler options: one definition shared by the runtime compilers
//! (NVRTC, hipRTC), build.rs (hipcc precompile) and the CI compile gate, so every path builds
//! exactly the same text with the same flags.
//!
//! Pure std: build.rs includes this file with `#[path]`.

/// The text of kernel file `file` with every `#include "x.h"` of a file in `sources` replaced by
/// that header's (recursively assembled) text, each header once. The result needs no include
/// path. `sources` is `(file name, text)` of every file under `kernels/`.
pub fn assemble(file: &str, sources: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::new();
    let mut seen: Vec<String> = Vec::new();
    append(file, sources, &mut seen, &mut out, 0)?;
    Ok(out)
}

fn append(
    file: &str,
    sources: &[(&str, &str)],
    seen: &mut Vec<String>,
    out: &mut String,
    depth: usize,
) -> Result<(), String> {
    if depth > 8 {
        return Err(format!("kernel includes nest too deep at {file}"));
    }
    let text = sources
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, text)| *text)
        .ok_or_else(|| format!("kernel source {file} is not embedded"))?;
    out.push_str(&format!("// ---- {file}\n"));
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("#include \"") {
            let header = rest.split('"').next().unwrap_or("");
            if !seen.iter().any(|s| s == header) {
                seen.push(header.to_string());
                append(header, sources, seen, out, depth + 1)?;
            }
            continue;
        }
        if trimmed.starts_with("#pragma once") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(())
}

/// NVRTC options for a real architecture such as `sm_90` (the output is a cubin).
pub fn nvrtc_options(arch: &str) -> Vec<String> {
    vec![format!("--gpu-architecture={arch}"), "-std=c++17".into()]
}

/// hipRTC options for an AMD architecture such as `gfx90a` (the output is a code object).
pub fn hiprtc_options(arch: &str) -> Vec<String> {
    vec![
        format!("--offload-arch={arch}"),
        "-O3".into(),
        "-std=c++17".into(),
    ]
}

/// hipcc arguments that compile one assembled source file `input` to a code object `output`
/// for `arch` (the same flags as hipRTC, device code only, unbundled).
pub fn hipcc_args(arch: &str, input: &str, output: &str) -> Vec<String> {
    let mut args = hiprtc_options(arch);
    args.extend(
        [
            "--cuda-device-only",
            "--no-gpu-bundle-output",
            "-x",
            "hip",
            "-c",
            input,
            "-o",
            output,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args
}

/// 64-bit FNV-1a over several byte strings (stable across builds; used for cache keys).
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
