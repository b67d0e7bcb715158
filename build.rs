//! Embeds every `kernels/*.hip` source (and `kernels/*.h` headers) into the crate as
//! `KERNEL_SOURCES`, so the runtime compilers (NVRTC / hipRTC) can build them at first use.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new("kernels");
    println!("cargo:rerun-if-changed=kernels");
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    let mut out = String::from("/// (file name, source) of every kernel source and header under kernels/.\npub const KERNEL_SOURCES: &[(&str, &str)] = &[\n");
    for p in entries {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext != "hip" && ext != "h" {
            continue;
        }
        println!("cargo:rerun-if-changed={}", p.display());
        let abs = std::fs::canonicalize(&p).expect("kernel path");
        let name = p.file_name().unwrap().to_str().unwrap();
        writeln!(out, "    ({name:?}, include_str!({:?})),", abs.display().to_string()).unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("kernel_sources.rs");
    std::fs::write(dest, out).unwrap();
}
