//! The CI compile gate: every kernel of the registry (`device::kernels::all()`, the names
//! the launchers use) must compile, with the runtime's own source assembly and flags, for each
//! target given, and be present in the output.
//!
//!   check_kernels [nvrtc ARCH...] [hipcc ARCH...] [clang ARCH...] [--hot PREFIX,...]
//!                 [--known PATTERN@ARCH+ARCH,...] [--docs FILE]
//!   e.g. check_kernels nvrtc sm_80 sm_90 hipcc gfx1030 clang gfx1100 gfx942 --hot matvec,rope
//!
//! Compilers:
//! - nvrtc: NVRTC, as the CUDA runtime compiles (libnvrtc on the loader path; no driver, no GPU).
//! - hipcc: the ROCm compiler driver with hipRTC's flags, device code only, unbundled code
//!   objects (as build.rs precompiles them).
//! - clang: a stock clang (CLANG, default clang-19) in hipRTC's dialect, for AMD targets the
//!   installed hipcc is too old to know: clang.rs says how the dialect is reproduced.
//!
//! AMD code objects hold the kernels of the registry that are on AMD for their target
//! (`Kernel::on_amd`: the tensor-core prefill matmuls only where the target has matrix cores,
//! and only their 64-row tile, and the matrix-core flash attention). On those targets the gate
//! also disassembles matmul.hip's and attention.hip's code objects (llvm-objdump) and fails
//! unless every such kernel holds `v_wmma` (RDNA3/4) or `v_mfma` (CDNA) instructions.
//!
//! For the clang targets the gate also reads each kernel's resources from the code objects
//! (VGPRs, SGPRs, LDS, scratch, spills, occupancy) and prints them as a table. The rule
//! (`resources::Rule`): a kernel whose name starts with one of the `--hot` prefixes, and that
//! an AMD launcher can take, must neither spill (SGPRs into VGPR lanes, VGPRs) nor use scratch
//! memory (a stack) on any of them, unless `--known` names it for that target (`*`
//! wildcards); other kernels' spills are warnings. `--docs FILE` writes the table as Markdown
//! into FILE between the lines `DOCS_BEGIN` and `DOCS_END`.
//!
//! The compilations of all targets run in one pool, one per core (each compiler call is
//! single-threaded), the largest sources first; each prints a line to stderr when it ends, and
//! the table is printed in target and file order at the end.
//! With CHECK_KERNELS_KEEP=DIR, each compiled image is also written to DIR. Exit status 1 on any
//! failure.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use rocmforge::device::kernels::FlashShape;
use rocmforge::device::{cuda, kernels, source, KvDtype};

mod clang;
mod resources;

use clang::Clang;
use resources::{Resources, Rule, Table, Verdict};

const USAGE: &str =
    "usage: check_kernels [nvrtc ARCH...] [hipcc ARCH...] [clang ARCH...] [--hot PREFIX,...] \
     [--known PATTERN@ARCH+ARCH,...] [--docs FILE]";

/// LDS one workgroup may have on every clang target (RDNA2 to RDNA4, CDNA2, CDNA3).
const AMD_LDS_BYTES: usize = 64 << 10;

/// Whether an AMD launcher can take kernel `name`: all of AMD's code objects, except the
/// flash-attention tiles that need more shared memory than an AMD workgroup has (the launcher,
/// `flash_plan`, takes the next smaller tile there).
fn launchable_on_amd(name: &str) -> bool {
    for dmax in FlashShape::DMAXES {
        for (rows_per_thread, cols_per_thread) in FlashShape::TILES {
            let shape = FlashShape {
                dmax,
                rows_per_thread,
                cols_per_thread,
            };
            for kv in [KvDtype::F32, KvDtype::F16] {
                if kernels::flash(shape, kv).name == name {
                    return shape.shared_bytes() <= AMD_LDS_BYTES;
                }
            }
        }
    }
    true
}

/// The kernels written for matrix cores (kernels/mma.h): the tensor-core prefill matmuls and
/// the matrix-core flash attention.
fn on_matrix_cores(name: &str) -> bool {
    name.starts_with("matmul_mma_") || name.starts_with("flash_attn_mx_")
}

/// The lines of docs/AMD.md between which `--docs` writes the resource table.
const DOCS_BEGIN: &str =
    "<!-- resource table: scripts/check-kernels.sh --clang-only --write-docs -->";
const DOCS_END: &str = "<!-- end of resource table -->";

/// `\0name\0`: the symbol's entry in the object's string table.
fn has_symbol(image: &[u8], name: &str) -> bool {
    let needle: Vec<u8> = [&[0u8][..], name.as_bytes(), &[0u8][..]].concat();
    image.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// What one compilation gave: the image, and for clang the kernels' resources, its warnings
/// and (matmul.hip on a matrix-core target) each kernel's matrix-core instructions.
struct Compiled {
    image: Vec<u8>,
    resources: Vec<Resources>,
    warnings: String,
    matrix: BTreeMap<String, usize>,
}

fn compile(
    compiler: &str,
    arch: &str,
    family: kernels::Family,
    clang: Option<&Clang>,
    dir: &Path,
) -> Result<Compiled, String> {
    let src = family.source().map_err(|e| e.to_string())?;
    let stem = family.file().trim_end_matches(".hip");
    let plain = |image| Compiled {
        image,
        resources: Vec::new(),
        warnings: String::new(),
        matrix: BTreeMap::new(),
    };
    match compiler {
        "nvrtc" => cuda::nvrtc_compile(family.file(), &src, arch)
            .map(plain)
            .map_err(|e| e.to_string()),
        "hipcc" => {
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
            std::fs::read(&output).map(plain).map_err(|e| e.to_string())
        }
        "clang" => {
            let clang = clang.ok_or("clang is not prepared")?;
            let (image, resources, warnings) = clang.compile(arch, stem, &src, dir)?;
            let holds_matrix_kernels =
                matches!(family, kernels::Family::Matmul | kernels::Family::Attention);
            let matrix = if holds_matrix_kernels && kernels::amd_matrix_cores(arch) {
                clang.matrix_instructions(arch, &image, dir)?
            } else {
                BTreeMap::new()
            };
            Ok(Compiled {
                image,
                resources,
                warnings,
                matrix,
            })
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
    clang: Option<&Clang>,
    dir: &Path,
) -> Result<Compiled, String> {
    let compiled = compile(compiler, arch, family, clang, dir)?;
    if let Some(keep) = std::env::var_os("CHECK_KERNELS_KEEP") {
        // The compiled images, for inspection (registers, spills: cuobjdump, llvm-readobj).
        let stem = family.file().trim_end_matches(".hip");
        let path = Path::new(&keep).join(format!("{stem}-{arch}-{compiler}.bin"));
        std::fs::write(&path, &compiled.image).map_err(|e| e.to_string())?;
    }
    let suffix = if compiler == "nvrtc" { "" } else { ".kd" };
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !has_symbol(&compiled.image, &format!("{n}{suffix}")))
        .collect();
    // The tensor-core kernels on a matrix-core target: each must use the matrix cores.
    let scalar: Vec<&String> = names
        .iter()
        .filter(|n| {
            compiler == "clang"
                && on_matrix_cores(n)
                && compiled.matrix.get(n.as_str()).copied().unwrap_or(0) == 0
        })
        .collect();
    if !scalar.is_empty() {
        return Err(format!(
            "compiled, but these kernels hold no v_wmma / v_mfma instruction: {scalar:?}"
        ));
    }
    if missing.is_empty() {
        Ok(compiled)
    } else {
        Err(format!(
            "compiled, but these kernels are missing: {missing:?}"
        ))
    }
}

struct Options {
    targets: Vec<(String, String)>,
    rule: Rule,
    docs: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        targets: Vec::new(),
        rule: Rule::default(),
        docs: None,
    };
    let mut compiler = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--hot" => {
                let list = args.next().ok_or("--hot needs a list")?;
                opts.rule.hot = list
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
            }
            "--known" => {
                let list = args.next().ok_or("--known needs a list")?;
                opts.rule.known = Rule::parse_known(&list)?;
            }
            "--docs" => opts.docs = Some(args.next().ok_or("--docs needs a file")?),
            "nvrtc" | "hipcc" | "clang" => compiler = Some(a),
            _ if a.starts_with('-') => return Err(format!("unknown option {a}")),
            _ => match &compiler {
                Some(c) => opts.targets.push((c.clone(), a)),
                None => return Err(format!("{a}: which compiler?")),
            },
        }
    }
    if opts.targets.is_empty() {
        return Err("no targets".into());
    }
    if opts.docs.is_some() && !opts.targets.iter().any(|t| t.0 == "clang") {
        return Err("--docs needs clang targets".into());
    }
    Ok(opts)
}

/// A compilation to do: the source's size (largest first), the (compiler, target), the file,
/// and the kernels its code object must hold.
type Job<'a> = (usize, &'a (String, String), kernels::Family, Vec<String>);

type Outcome = (
    String,
    String,
    kernels::Family,
    usize,
    f64,
    Result<Compiled, String>,
);

fn main() {
    let opts = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}\n{USAGE}");
        std::process::exit(2);
    });
    let targets = &opts.targets;
    // Per file, its kernels; NVIDIA's code objects hold those `on_nvidia`, an AMD target's
    // those that are on AMD for it (`Kernel::on_amd`).
    let mut by_family: BTreeMap<kernels::Family, Vec<kernels::Kernel>> = BTreeMap::new();
    let mut amd_order = Vec::new();
    for k in kernels::all() {
        if k.amd != kernels::OnAmd::Never {
            amd_order.push(k.name.clone());
        }
        by_family.entry(k.family).or_default().push(k);
    }
    let names_for = |compiler: &str, arch: &str, family: &kernels::Family| -> Vec<String> {
        by_family[family]
            .iter()
            .filter(|k| {
                if compiler == "nvrtc" {
                    k.on_nvidia
                } else {
                    k.on_amd(arch)
                }
            })
            .map(|k| k.name.clone())
            .collect()
    };
    if targets.iter().any(|t| t.0 == "nvrtc") {
        if let Ok(v) = cuda::nvrtc_version() {
            println!("{v}");
        }
    }
    let dir = std::env::temp_dir().join(format!("rocmforge-check-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let clang_archs: Vec<String> = targets
        .iter()
        .filter(|t| t.0 == "clang")
        .map(|t| t.1.clone())
        .collect();
    let clang = if clang_archs.is_empty() {
        None
    } else {
        match Clang::prepare(&clang_archs, &dir) {
            Ok(c) => {
                println!(
                    "{} in hipRTC's dialect: hiprtc_runtime.h of {} (HIP {}), device \
                     libraries of {}",
                    c.version(),
                    c.header_source.display(),
                    c.hip_version(),
                    c.installed_libs.display()
                );
                match &c.cache {
                    Some(dir) => println!("clang code object cache: {}", dir.display()),
                    None => println!("clang code object cache: off"),
                }
                Some(c)
            }
            Err(e) => {
                println!("clang: {e}");
                let _ = std::fs::remove_dir_all(&dir);
                std::process::exit(1);
            }
        }
    };
    // Every (target, file) job, the largest sources first so that the long ones start early.
    let mut jobs: Vec<Job> = Vec::new();
    for t in targets {
        for family in by_family.keys() {
            let size = family.source().map(|s| s.len()).unwrap_or(0);
            jobs.push((size, t, *family, names_for(&t.0, &t.1, family)));
        }
    }
    jobs.sort_by(|a, b| b.0.cmp(&a.0));
    let total_jobs = jobs.len();
    let queue = Mutex::new(jobs.into_iter());
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some((_, (compiler, arch), family, names)) = queue.lock().unwrap().next()
                else {
                    break;
                };
                let t = Instant::now();
                let result = check(compiler, arch, family, &names, clang.as_ref(), &dir);
                let seconds = t.elapsed().as_secs_f64();
                let mut results = results.lock().unwrap();
                // Progress (a full run takes minutes): one line per finished compilation.
                eprintln!(
                    "[{:>3}/{total_jobs} {:>5.0}s] {compiler} {arch} {} {seconds:.1}s {}",
                    results.len() + 1,
                    start.elapsed().as_secs_f64(),
                    family.file(),
                    if result.is_ok() { "ok" } else { "FAILED" }
                );
                results.push((
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
            Ok(c) if c.warnings.trim().is_empty() => "ok".to_string(),
            Ok(c) => format!("ok, with warnings:\n{}", c.warnings.trim_end()),
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
    for (compiler, arch) in targets {
        let mine: Vec<&Outcome> = results
            .iter()
            .filter(|r| &r.0 == compiler && &r.1 == arch)
            .collect();
        let files_ok = mine.iter().filter(|r| r.5.is_ok()).count();
        let kernels_ok: usize = mine.iter().filter(|r| r.5.is_ok()).map(|r| r.3).sum();
        let total: usize = mine.iter().map(|r| r.3).sum();
        println!(
            "{compiler} {arch}: {kernels_ok}/{total} kernels, {files_ok}/{} files compiled",
            mine.len()
        );
        for r in &mine {
            let Ok(c) = &r.5 else { continue };
            let tiles: Vec<usize> = c
                .matrix
                .iter()
                .filter(|(name, _)| on_matrix_cores(name))
                .map(|(_, &n)| n)
                .collect();
            if !tiles.is_empty() {
                let op = if arch.starts_with("gfx9") {
                    "v_mfma"
                } else {
                    "v_wmma"
                };
                println!(
                    "{compiler} {arch} {}: {}/{} matrix-core kernels use the matrix cores \
                     ({} {op} instructions)",
                    r.2.file(),
                    tiles.iter().filter(|&&n| n > 0).count(),
                    tiles.len(),
                    tiles.iter().sum::<usize>()
                );
            }
        }
    }
    if let Some(clang) = &clang {
        let n = results.iter().filter(|r| r.0 == "clang").count();
        let hits = clang.cache_hits.load(std::sync::atomic::Ordering::Relaxed);
        println!("clang: {hits} of {n} code objects from the cache");
    }
    let mut passed = failures == 0;
    if failures > 0 {
        println!("{failures} compilations failed");
    }
    if let Some(clang) = &clang {
        passed &= report_resources(&opts, &clang_archs, clang, &amd_order, &results);
    }
    if !passed {
        std::process::exit(1);
    }
    println!("every kernel compiled for {} targets", targets.len());
}

/// Prints the resource table of the clang targets, a line per kernel that spills or uses
/// scratch and a summary per target, and writes the summary and table into the docs when
/// asked; false when the rule fails (`resources::Rule`) or the docs could not be written.
fn report_resources(
    opts: &Options,
    archs: &[String],
    clang: &Clang,
    registry_order: &[String],
    results: &[Outcome],
) -> bool {
    let mut by_target: BTreeMap<String, Vec<Resources>> = BTreeMap::new();
    for (compiler, arch, _, _, _, result) in results {
        if let (true, Ok(c)) = (compiler == "clang", result) {
            let list = by_target.entry(arch.clone()).or_default();
            list.extend(c.resources.iter().cloned());
        }
    }
    let table = Table::new(archs, registry_order, &by_target);
    println!();
    print!("{}", table.text());

    // The verdicts: a line per kernel that spills or uses scratch somewhere, its worst verdict
    // first (FAILED, known, warning).
    let rule = &opts.rule;
    println!();
    for (name, cells) in &table.rows {
        let launched = launchable_on_amd(name);
        let judged: Vec<(Verdict, String)> = archs
            .iter()
            .zip(cells)
            .filter_map(|(arch, cell)| {
                let r = (*cell)?;
                let verdict = rule.verdict(r, arch, launched);
                (verdict != Verdict::Clean).then(|| (verdict, format!("{arch}: {}", r.problem())))
            })
            .collect();
        if judged.is_empty() {
            continue;
        }
        let has = |v: Verdict| judged.iter().any(|j| j.0 == v);
        let label = if has(Verdict::Fails) {
            "FAILED (hot, spills or scratch)"
        } else if has(Verdict::Known) {
            "known (hot, spills or scratch)"
        } else if launched {
            "warning"
        } else {
            "warning (no AMD launcher takes it: more LDS than a workgroup has)"
        };
        let problems: Vec<&str> = judged.iter().map(|j| j.1.as_str()).collect();
        println!("{label} {name}: {}", problems.join("; "));
    }
    // Known entries that match nothing that spills or uses scratch: to be removed from the list.
    for (pattern, known_targets) in &rule.known {
        for arch in known_targets.iter().filter(|a| archs.contains(a)) {
            let i = archs.iter().position(|a| a == arch).unwrap();
            let used = table.rows.iter().any(|(name, cells)| {
                resources::glob(pattern, name) && cells[i].is_some_and(|r| !r.problem().is_empty())
            });
            if !used {
                println!(
                    "note: the known entry {pattern}@{arch} neither spills nor uses scratch now"
                );
            }
        }
    }
    // Per target, the kernels of each verdict.
    let mut summary = String::from(
        "| target | kernels | hot, spills or scratch: fails | hot, spills or scratch: known \
         | others spilling |\n| --- | ---: | ---: | ---: | ---: |\n",
    );
    println!();
    let mut failing = 0;
    for (i, arch) in archs.iter().enumerate() {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for (name, cells) in &table.rows {
            let Some(r) = cells[i] else { continue };
            *count.entry("kernels").or_default() += 1;
            let key = match rule.verdict(r, arch, launchable_on_amd(name)) {
                Verdict::Clean => continue,
                Verdict::Fails => "fails",
                Verdict::Known => "known",
                Verdict::Other => "other",
            };
            *count.entry(key).or_default() += 1;
        }
        let n = |k: &str| count.get(k).copied().unwrap_or(0);
        failing += n("fails");
        println!(
            "{arch}: {} kernels; hot kernels spilling or using scratch: {} failing, {} known; \
             others spilling: {}",
            n("kernels"),
            n("fails"),
            n("known"),
            n("other")
        );
        summary.push_str(&format!(
            "| {arch} | {} | {} | {} | {} |\n",
            n("kernels"),
            n("fails"),
            n("known"),
            n("other")
        ));
    }
    let passed = if rule.hot.is_empty() {
        println!("no hot kernels named: spills are not judged");
        true
    } else {
        let hot = format!("hot kernels ({}*)", rule.hot.join("*, "));
        if failing == 0 {
            println!("no spills and no scratch in the {hot} on any target, beyond the known list");
        } else {
            println!("FAILED: {failing} (kernel, target) pairs of the {hot} spill or use scratch");
        }
        failing == 0
    };

    let Some(path) = &opts.docs else {
        return passed;
    };
    let complete = results.iter().all(|r| r.0 != "clang" || r.5.is_ok());
    let header = format!(
        "Generated by `scripts/check-kernels.sh --clang-only --write-docs`\n({}, \
         hiprtc_runtime.h of HIP {}).\n\n{summary}",
        clang.version(),
        clang.hip_version()
    );
    let written = if complete {
        std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|doc| resources::splice(&doc, DOCS_BEGIN, DOCS_END, &table.markdown(&header)))
            .and_then(|doc| std::fs::write(path, doc).map_err(|e| e.to_string()))
    } else {
        Err("a clang compilation failed, the table is incomplete".into())
    };
    match written {
        Ok(()) => {
            println!("{path}: resource table written");
            passed
        }
        Err(e) => {
            println!("{path}: resource table NOT written: {e}");
            false
        }
    }
}
