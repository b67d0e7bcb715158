//! The CI compile gate: every kernel of the registry (`device::kernels::all()`, the names
//! the launchers use) must compile, with the runtime's own source assembly and flags, for each
//! target given, and be present in the output.
//!
//!   check_kernels [nvrtc ARCH...] [hipcc ARCH...]
//!   e.g. check_kernels nvrtc sm_80 sm_90 hipcc gfx1030 gfx90a
//!
//! With CHECK_KERNELS_KEEP=DIR, each compiled image is also written to DIR.
//! NVRTC needs libnvrtc on the loader path (no driver, no GPU); hipcc is the ROCm compiler
//! driver (device code only, unbundled code objects). Exit status 1 on any failure.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use rocmforge::device::{cuda, kernels, source};

/// `\0name\0`: the symbol's entry in the object's string table.
fn has_symbol(image: &[u8], name: &str) -> bool {
    let needle: Vec<u8> = [&[0u8][..], name.as_bytes(), &[0u8][..]].concat();
    image.windows(needle.len()).any(|w| w == needle.as_slice())
}

fn compile(
    compiler: &str,
    arch: &str,
    family: kernels::Family,
    dir: &std::path::Path,
) -> Result<Vec<u8>, String> {
    let src = family.source().map_err(|e| e.to_string())?;
    match compiler {
        "nvrtc" => cuda::nvrtc_compile(family.file(), &src, arch).map_err(|e| e.to_string()),
        "hipcc" => {
            let stem = family.file().trim_end_matches(".hip");
            let input = dir.join(format!("{stem}.hip"));
            let output = dir.join(format!("{stem}-{arch}.co"));
            std::fs::write(&input, &src).map_err(|e| e.to_string())?;
            let hipcc = std::env::var("HIPCC").unwrap_or_else(|_| "hipcc".into());
            let out = Command::new(&hipcc)
                .args(source::hipcc_args(
                    arch,
                    input.to_str().unwrap(),
                    output.to_str().unwrap(),
                ))
                .output()
                .map_err(|e| format!("cannot run {hipcc}: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            std::fs::read(&output).map_err(|e| e.to_string())
        }
        other => Err(format!("unknown compiler {other}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut targets: Vec<(String, String)> = Vec::new();
    let mut compiler = None;
    for a in args {
        if a == "nvrtc" || a == "hipcc" {
            compiler = Some(a);
        } else if let Some(c) = &compiler {
            targets.push((c.clone(), a));
        } else {
            eprintln!("usage: check_kernels [nvrtc ARCH...] [hipcc ARCH...]");
            std::process::exit(2);
        }
    }
    if targets.is_empty() {
        eprintln!("usage: check_kernels [nvrtc ARCH...] [hipcc ARCH...]");
        std::process::exit(2);
    }
    let mut by_family: BTreeMap<kernels::Family, Vec<String>> = BTreeMap::new();
    for k in kernels::all() {
        by_family.entry(k.family).or_default().push(k.name);
    }
    if let Ok(v) = cuda::nvrtc_version() {
        println!("{v}");
    }
    let dir = std::env::temp_dir().join(format!("rocmforge-check-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let mut failures = 0;
    println!(
        "{:<8} {:<8} {:<16} {:>8} {:>9}  result",
        "compiler", "target", "file", "kernels", "seconds"
    );
    for (compiler, arch) in &targets {
        for (family, names) in &by_family {
            let t = Instant::now();
            let result = compile(compiler, arch, *family, &dir).and_then(|image| {
                if let Some(keep) = std::env::var_os("CHECK_KERNELS_KEEP") {
                    // The compiled images, for inspection (registers, spills: e.g. cuobjdump).
                    let stem = family.file().trim_end_matches(".hip");
                    let path = std::path::Path::new(&keep).join(format!("{stem}-{arch}.bin"));
                    std::fs::write(&path, &image).map_err(|e| e.to_string())?;
                }
                let suffix = if compiler == "hipcc" { ".kd" } else { "" };
                let missing: Vec<&String> = names
                    .iter()
                    .filter(|n| !has_symbol(&image, &format!("{n}{suffix}")))
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "compiled, but these kernels are missing: {missing:?}"
                    ))
                }
            });
            let status = match &result {
                Ok(()) => "ok".to_string(),
                Err(e) => {
                    failures += 1;
                    format!("FAILED\n{e}")
                }
            };
            println!(
                "{:<8} {:<8} {:<16} {:>8} {:>9.1}  {}",
                compiler,
                arch,
                family.file(),
                names.len(),
                t.elapsed().as_secs_f64(),
                status
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let total: usize = by_family.values().map(|v| v.len()).sum();
    if failures > 0 {
        println!("{failures} compilations failed");
        std::process::exit(1);
    }
    println!("all {total} kernels compiled for {} targets", targets.len());
}
