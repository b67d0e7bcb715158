//! The CI compile gate: every kernel of the registry (`device::kernels::all()`, the names
//! the launchers use) must compile, with the runtime's own source assembly and flags, for each
//! target given, and be present in the output.
//!
//!   check_kernels [nvrtc ARCH...] [hipcc ARCH...]
//!   e.g. check_kernels nvrtc sm_80 sm_90 hipcc gfx1030 gfx90a
//!
//! The compilations run in parallel, one per core (each compiler call is single-threaded),
//! the largest sources first; the table is printed in target and file order at the end.
//! With CHECK_KERNELS_KEEP=DIR, each compiled image is also written to DIR.
//! NVRTC needs libnvrtc on the loader path (no driver, no GPU); hipcc is the ROCm compiler
//! driver (device code only, unbundled code objects). Exit status 1 on any failure.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;
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
            // One input file per job: jobs of other targets run at the same time.
            let input = dir.join(format!("{stem}-{arch}.hip"));
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

/// Compile `family` for one target and check that every kernel of `names` is in the image.
fn check(
    compiler: &str,
    arch: &str,
    family: kernels::Family,
    names: &[String],
    dir: &std::path::Path,
) -> Result<(), String> {
    let image = compile(compiler, arch, family, dir)?;
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
    // Every (target, file) job, the largest sources first so that the long ones start early.
    let mut jobs: Vec<(usize, &(String, String), kernels::Family, &Vec<String>)> = Vec::new();
    for t in &targets {
        for (family, names) in &by_family {
            let size = family.source().map(|s| s.len()).unwrap_or(0);
            jobs.push((size, t, *family, names));
        }
    }
    jobs.sort_by(|a, b| b.0.cmp(&a.0));
    let queue = Mutex::new(jobs.into_iter());
    let results = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some((_, (compiler, arch), family, names)) = queue.lock().unwrap().next()
                else {
                    break;
                };
                let t = Instant::now();
                let result = check(compiler, arch, family, names, &dir);
                let seconds = t.elapsed().as_secs_f64();
                results.lock().unwrap().push((
                    compiler.clone(),
                    arch.clone(),
                    family,
                    names.len(),
                    seconds,
                    result,
                ));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    let order = |c: &String, a: &String| targets.iter().position(|t| &t.0 == c && &t.1 == a);
    results.sort_by_key(|r| (order(&r.0, &r.1), r.2));
    let mut failures = 0;
    println!(
        "{:<8} {:<8} {:<16} {:>8} {:>9}  result",
        "compiler", "target", "file", "kernels", "seconds"
    );
    for (compiler, arch, family, n, seconds, result) in &results {
        let status = match result {
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
            n,
            seconds,
            status
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let total: usize = by_family.values().map(|v| v.len()).sum();
    if failures > 0 {
        println!("{failures} compilations failed");
        std::process::exit(1);
    }
    println!("all {total} kernels compiled for {} targets", targets.len());
}
