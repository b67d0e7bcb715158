//! 1. Embeds every `kernels/*.hip` source (and `kernels/*.h` header) into the crate as
//!    `KERNEL_SOURCES`, so the runtime compilers (NVRTC / hipRTC) can build them at first use,
//!    with the generated header `matvec_instances.h`: the decode matvec kernels of the table in
//!    src/device/matvec_table.rs.
//! 2. With feature `rocm`: precompiles AMD code objects of every kernel file for the targets in
//!    `ROCMFORGE_GPU_TARGETS` (e.g. "gfx1100;gfx90a") when hipcc is there (`PRECOMPILED`);
//!    a target the local compiler cannot build is skipped with a warning, never a failed
//!    build. And tells the HIP bindings which names this ROCm's headers give the device
//!    properties (ROCm 6 renamed them `*R0600`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/device/source.rs"]
#[allow(dead_code)]
mod source;

#[path = "src/device/matvec_table.rs"]
#[allow(dead_code)]
mod matvec_table;

fn main() {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let sources = embed_kernel_sources(&out_dir);

    println!("cargo::rustc-check-cfg=cfg(rocm_r0600)");
    println!("cargo:rerun-if-env-changed=ROCMFORGE_GPU_TARGETS");
    println!("cargo:rerun-if-env-changed=HIP_PATH");
    println!("cargo:rerun-if-env-changed=ROCM_PATH");
    let mut precompiled = String::from(
        "/// (kernel file, AMD target, code object) built by build.rs for ROCMFORGE_GPU_TARGETS.\n\
         pub const PRECOMPILED: &[(&str, &str, &[u8])] = &[\n",
    );
    if std::env::var_os("CARGO_FEATURE_ROCM").is_some() {
        if let Some(root) = hip_root() {
            let api = std::fs::read_to_string(root.join("include/hip/hip_runtime_api.h"))
                .unwrap_or_default();
            if api.contains("hipGetDevicePropertiesR0600") {
                println!("cargo:rustc-cfg=rocm_r0600");
            }
        }
        precompile(&out_dir, &sources, &mut precompiled);
    }
    precompiled.push_str("];\n");
    std::fs::write(out_dir.join("precompiled.rs"), precompiled).unwrap();
}

/// Writes `kernel_sources.rs`; returns (file name, text) of every kernel file and header.
fn embed_kernel_sources(out_dir: &Path) -> Vec<(String, String)> {
    let dir = Path::new("kernels");
    println!("cargo:rerun-if-changed=kernels");
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    let mut out = String::from("/// (file name, source) of every kernel source and header under kernels/.\npub const KERNEL_SOURCES: &[(&str, &str)] = &[\n");
    let mut sources = Vec::new();
    for p in entries {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext != "hip" && ext != "h" {
            continue;
        }
        println!("cargo:rerun-if-changed={}", p.display());
        let abs = std::fs::canonicalize(&p).expect("kernel path");
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            abs.display().to_string()
        )
        .unwrap();
        sources.push((name, std::fs::read_to_string(&p).expect("kernel source")));
    }
    // The generated header (the decode matvec instances), embedded like the others.
    println!("cargo:rerun-if-changed=src/device/matvec_table.rs");
    let name = "matvec_instances.h".to_string();
    let text = matvec_table::instances_header();
    let path = out_dir.join(&name);
    std::fs::write(&path, &text).unwrap();
    writeln!(
        out,
        "    ({name:?}, include_str!({:?})),",
        path.display().to_string()
    )
    .unwrap();
    sources.push((name, text));
    out.push_str("];\n");
    std::fs::write(out_dir.join("kernel_sources.rs"), out).unwrap();
    sources
}

/// The ROCm/HIP install root (where `include/hip/hip_runtime_api.h` is).
fn hip_root() -> Option<PathBuf> {
    let mut roots: Vec<PathBuf> = ["HIP_PATH", "ROCM_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(Into::into)
        .collect();
    roots.extend(["/opt/rocm", "/usr"].iter().map(PathBuf::from));
    roots
        .into_iter()
        .find(|r| r.join("include/hip/hip_runtime_api.h").is_file())
}

fn precompile(out_dir: &Path, sources: &[(String, String)], table: &mut String) {
    let Ok(targets) = std::env::var("ROCMFORGE_GPU_TARGETS") else {
        return;
    };
    let hipcc = std::env::var("HIPCC").unwrap_or_else(|_| "hipcc".into());
    if Command::new(&hipcc)
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        println!("cargo:warning=ROCMFORGE_GPU_TARGETS is set but {hipcc} was not found: kernels will be compiled by hipRTC at first use");
        return;
    }
    let refs: Vec<(&str, &str)> = sources
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let work = out_dir.join("precompiled");
    std::fs::create_dir_all(&work).unwrap();
    let files: Vec<&String> = sources
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.ends_with(".hip"))
        .collect();
    for target in targets
        .split([';', ',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        // One hipcc per kernel file at a time on each core: each is single-threaded.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<std::sync::Mutex<Option<Result<PathBuf, String>>>> =
            files.iter().map(|_| std::sync::Mutex::new(None)).collect();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| {
            for _ in 0..workers.min(files.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    let r = precompile_file(&hipcc, target, file, &refs, &work);
                    *results[i].lock().unwrap() = Some(r);
                });
            }
        });
        let results: Vec<Result<PathBuf, String>> = results
            .into_iter()
            .map(|r| r.into_inner().unwrap().expect("every file was compiled"))
            .collect();
        if let Some(err) = results.iter().find_map(|r| r.as_ref().err()) {
            println!("cargo:warning=skipping AMD target {target}: {err}");
            continue;
        }
        for (file, output) in files.iter().zip(&results) {
            let output = output.as_ref().expect("checked above");
            writeln!(
                table,
                "    ({file:?}, {target:?}, include_bytes!({:?})),",
                output.display().to_string()
            )
            .unwrap();
        }
    }
}

/// Compile one kernel file for `target`: its code object's path, or why not.
fn precompile_file(
    hipcc: &str,
    target: &str,
    file: &str,
    refs: &[(&str, &str)],
    work: &Path,
) -> Result<PathBuf, String> {
    let stem = file.trim_end_matches(".hip");
    let src = match source::assemble(file, refs) {
        Ok(s) => s,
        Err(e) => panic!("kernel source {file}: {e}"),
    };
    let input = work.join(format!("{stem}-{target}.hip"));
    let output = work.join(format!("{stem}-{target}.co"));
    std::fs::write(&input, src).unwrap();
    let args = source::hipcc_args(target, input.to_str().unwrap(), output.to_str().unwrap());
    match Command::new(hipcc).args(&args).output() {
        Ok(o) if o.status.success() => Ok(output),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let first = err.lines().find(|l| l.contains("error")).unwrap_or("");
            Err(format!("hipcc failed on {file} ({first})"))
        }
        Err(e) => Err(e.to_string()),
    }
}
