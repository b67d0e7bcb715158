//! The `clang` compiler of the gate: a stock clang (CLANG, default clang-19) compiling the kernel
//! files the way hipRTC compiles them at run time, for AMD targets the installed ROCm's hipcc
//! does not know (Debian 12's is ROCm 5.2: no gfx1100, gfx1201, gfx942).
//!
//! What hipRTC does with a program (ROCm's hipamd/clr sources, `RTCProgram`), and how it is
//! reproduced here:
//! - It compiles the source with `-O3 -D__HIPCC_RTC__ -include hiprtc_runtime.h -std=c++14
//!   -nogpuinc -Wno-gnu-line-marker -Wno-missing-prototypes`, `--hip-version=M.m.p` and
//!   `-DHIP_VERSION_{MAJOR,MINOR,PATCH}`, then the caller's options (ours:
//!   `source::hiprtc_options`, whose `-std=c++17` overrides the default). The same options are
//!   passed here, in the same order.
//! - `hiprtc_runtime.h` is built into hipRTC: the HIP headers (with clang's HIP wrapper header)
//!   preprocessed under `__HIPCC_RTC__`, then the few macros that must survive
//!   (`__global__`, `__shared__`, `__launch_bounds__`, ...). It is not an installed file, so it
//!   is read here from the installed hipRTC itself: the `__hipRTC_header` bytes that
//!   libhiprtc-builtins exports (`builtin_header`). A kernel therefore sees exactly the
//!   declarations and macros the installed hipRTC gives it, nothing from a HIP include path.
//! - With `-nogpuinc` (no HIP or clang wrapper headers) clang predefines only its own macros
//!   for the target (`__HIP__`, `__HIP_DEVICE_COMPILE__`, `__gfx1100__`, the wave size, ...), as
//!   in hipRTC.
//! - hipRTC then links the ROCm device libraries (ocml, ockl and the oclc control libraries for
//!   the target: `threadIdx` and the math functions of the header are calls into them) and
//!   generates code with `-O3 -mllvm -amdgpu-internalize-symbols`. Here the clang driver links
//!   the same libraries (`--rocm-device-lib-path`) and gets the same internalization.
//!   `-nogpulib` (no device libraries) cannot stand in for this: every kernel would end with
//!   unresolved calls to `__ockl_get_local_id` and the like, and lld rejects those.
//! - Code object version 5 (`-mcode-object-version=5`), as hipRTC of ROCm 6 and 7 produces.
//!   Said explicitly because clang-19's driver otherwise picks the version-4 ABI device library
//!   (`oclc_abi_version_400`) while its code generator emits version 5.
//! - ROCm 5.2's hipRTC also passed `-mcumode` (CU mode on RDNA) and `-mllvm -amdgpu-prelink`;
//!   current hipRTC passes `-mcumode` only when WGP mode is turned off (GPU_ENABLE_WGP_MODE=0)
//!   and no longer `-amdgpu-prelink`. Neither is passed here: the gate follows the hipRTC of
//!   ROCm 6 and 7, which docs/AMD.md tells users to install.
//!
//! Device libraries: Debian's ROCm 5.2 libraries have no `oclc_isa_version_<N>.bc` for gfx1100,
//! gfx1201 or gfx942, and clang refuses a target without one. That file defines a single
//! constant, `__oclc_ISA_version` (read by the libraries' feature tests), so `prepare` writes
//! the missing ones into a private folder (beside links to every installed library): one LLVM
//! IR constant each, with the data layout clang gives that target, assembled by llvm-as.
//!
//! Code objects are kept between runs in a cache folder (CHECK_KERNELS_CACHE, default
//! `~/.cache/rocmforge/check-kernels`; `off`: none), each under a hash of everything that went
//! into it: clang's version, hipRTC's header, the device libraries (names and sizes, and the
//! installed ones' times), the arguments, the target and the source. A run whose kernels did
//! not change then compiles nothing; entries unused for 14 days are removed.
//!
//! Resources come from the code object's AMDGPU metadata (`llvm-readobj --notes`); the
//! occupancy LLVM computes for each kernel (registers, LDS and launch bounds together) comes from
//! its `-Rpass-analysis=kernel-resource-usage` remarks, which change nothing in the code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rocmforge::device::source;

use super::resources::{parse_metadata, parse_occupancy, Resources};

/// Where ROCm installs its device bitcode libraries (after ROCM_PATH/amdgcn/bitcode): ROCm,
/// then Debian/Ubuntu packages.
const DEVICE_LIB_DIRS: [&str; 4] = [
    "/opt/rocm/amdgcn/bitcode",
    "/usr/lib/x86_64-linux-gnu/amdgcn/bitcode",
    "/usr/lib64/amdgcn/bitcode",
    "/usr/lib/amdgcn/bitcode",
];

/// Where hipRTC's built-in header library can be (ROCm, then Debian/Ubuntu packages).
const LIB_DIRS: [&str; 4] = [
    "/opt/rocm/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
];

pub struct Clang {
    pub clang: String,
    readobj: String,
    objdump: String,
    /// hipRTC's `hiprtc_runtime.h`, and the library it was read from.
    header: PathBuf,
    pub header_source: PathBuf,
    /// The HIP version of that hipRTC (major, minor, patch).
    hip_version: (u32, u32, u32),
    /// The installed device libraries, and the private folder clang reads them from.
    pub installed_libs: PathBuf,
    device_libs: PathBuf,
    /// The code object cache (see the module comment), the hash of what every compilation
    /// shares (tools, header, libraries), and how many compilations it answered.
    pub cache: Option<PathBuf>,
    shared_key: u64,
    pub cache_hits: AtomicUsize,
}

/// Entries of the code object cache unused for this long are removed.
const CACHE_KEEP: Duration = Duration::from_secs(14 * 24 * 3600);

/// CHECK_KERNELS_CACHE, else `$XDG_CACHE_HOME` or `~/.cache`, then `rocmforge/check-kernels`;
/// None for `off`.
fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("CHECK_KERNELS_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|base| base.join("rocmforge").join("check-kernels")),
    }
}

/// Runs `cmd`; its stdout, or its stderr as the error.
pub fn run(cmd: &mut Command, what: &str) -> Result<Vec<u8>, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// The ISA version number of `gfx<major><minor><stepping>` (minor and stepping one hex digit
/// each) as the device libraries spell it: gfx90a -> 9010, gfx942 -> 9402, gfx1100 -> 11000.
pub fn isa_version(arch: &str) -> Option<u32> {
    let digits = arch.split(':').next()?.strip_prefix("gfx")?;
    if digits.len() < 3 {
        return None;
    }
    let (major, rest) = digits.split_at(digits.len() - 2);
    let major: u32 = major.parse().ok()?;
    let mut hex = rest.chars().map(|c| c.to_digit(16));
    let (minor, stepping) = (hex.next()??, hex.next()??);
    Some(major * 1000 + minor * 100 + stepping)
}

/// The LLVM IR of `oclc_isa_version_<N>.bc` for ISA version `version` (`isa_version`): the one
/// constant the device libraries read, with the device libraries' linkage, in a module of
/// `data_layout` (the target's own, as clang writes it for a module of that target).
pub fn isa_version_ir(data_layout: &str, version: u32) -> String {
    format!(
        "target datalayout = \"{data_layout}\"\n\
         target triple = \"amdgcn-amd-amdhsa\"\n\n\
         @__oclc_ISA_version = linkonce_odr protected local_unnamed_addr addrspace(4) \
         constant i32 {version}, align 4\n"
    )
}

/// The `target datalayout` of an LLVM IR module's text.
pub fn data_layout_of(ir: &str) -> Option<&str> {
    ir.lines()
        .find_map(|l| l.strip_prefix("target datalayout = \""))
        .and_then(|rest| rest.strip_suffix('"'))
}

/// The bytes of the `__hipRTC_header` symbol of an ELF64 little-endian library, as many as
/// the `unsigned` `__hipRTC_header_size` says: hipRTC's built-in `hiprtc_runtime.h`.
pub fn builtin_header(elf: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "not an ELF64 little-endian file with hipRTC's header".to_string();
    let at = |off: u64, len: u64| -> Result<&[u8], String> {
        let (start, end) = (off as usize, off.checked_add(len).ok_or_else(bad)? as usize);
        elf.get(start..end).ok_or_else(bad)
    };
    let u16_at = |off: u64| at(off, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u64);
    let u32_at = |off: u64| at(off, 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as u64);
    let u64_at = |off: u64| at(off, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    if at(0, 6)? != b"\x7fELF\x02\x01" {
        return Err(bad());
    }
    let (shoff, shentsize, shnum) = (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?);
    // (type, address, file offset, size, link) of each section.
    let sections: Vec<(u64, u64, u64, u64, u64)> = (0..shnum)
        .map(|i| {
            let s = shoff + i * shentsize;
            Ok((
                u32_at(s + 4)?,
                u64_at(s + 0x10)?,
                u64_at(s + 0x18)?,
                u64_at(s + 0x20)?,
                u32_at(s + 0x28)?,
            ))
        })
        .collect::<Result<_, String>>()?;
    const SHT_SYMTAB: u64 = 2;
    const SHT_DYNSYM: u64 = 11;
    let (mut data, mut size) = (None, None);
    for &(kind, _, offset, len, link) in &sections {
        if kind != SHT_DYNSYM && kind != SHT_SYMTAB {
            continue;
        }
        let strtab = sections.get(link as usize).ok_or_else(bad)?.2;
        for sym in (offset..offset + len).step_by(24) {
            let name_at = strtab + u32_at(sym)?;
            let name_len = elf
                .get(name_at as usize..)
                .and_then(|s| s.iter().position(|&b| b == 0))
                .ok_or_else(bad)?;
            let name = at(name_at, name_len as u64)?;
            if name != b"__hipRTC_header" && name != b"__hipRTC_header_size" {
                continue;
            }
            // A defined symbol's value is an address in its section; to a file offset.
            let (value, shndx) = (u64_at(sym + 8)?, u16_at(sym + 6)?);
            let &(_, addr, sec_offset, _, _) = sections.get(shndx as usize).ok_or_else(bad)?;
            let file_offset = value.checked_sub(addr).ok_or_else(bad)? + sec_offset;
            if name == b"__hipRTC_header" {
                data = Some(file_offset);
            } else {
                size = Some(u32_at(file_offset)?);
            }
        }
    }
    match (data, size) {
        (Some(data), Some(size)) if size > 0 => Ok(at(data, size)?.to_vec()),
        _ => Err("no __hipRTC_header / __hipRTC_header_size symbols".into()),
    }
}

/// The library hipRTC's header is read from: HIPRTC_BUILTINS, else the newest
/// `libhiprtc-builtins.so.M.m.p` of the first folder (ROCM_PATH/lib, then `LIB_DIRS`) with one.
/// Returns it with its HIP version (from the file name, as hipRTC's own version).
fn builtins_library() -> Result<(PathBuf, (u32, u32, u32)), String> {
    let version_of = |p: &Path| -> Option<(u32, u32, u32)> {
        let name = p.file_name()?.to_str()?;
        let mut v = name.strip_prefix("libhiprtc-builtins.so.")?.split('.');
        let mut next = || v.next()?.parse().ok();
        Some((next()?, next()?, next()?))
    };
    if let Some(p) = std::env::var_os("HIPRTC_BUILTINS") {
        let path = std::fs::canonicalize(&p)
            .map_err(|e| format!("HIPRTC_BUILTINS={}: {e}", Path::new(&p).display()))?;
        let version = version_of(&path).ok_or_else(|| {
            format!(
                "HIPRTC_BUILTINS: no version in the name {} (libhiprtc-builtins.so.M.m.p)",
                path.display()
            )
        })?;
        return Ok((path, version));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(root) = std::env::var_os("ROCM_PATH") {
        dirs.push(Path::new(&root).join("lib"));
    }
    dirs.extend(LIB_DIRS.iter().map(PathBuf::from));
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let newest = entries
            .filter_map(|e| std::fs::canonicalize(e.ok()?.path()).ok())
            .filter_map(|p| Some((version_of(&p)?, p)))
            .max();
        if let Some((version, path)) = newest {
            return Ok((path, version));
        }
    }
    Err(
        "hipRTC's header library libhiprtc-builtins.so.* not found (Debian/Ubuntu: \
         apt-get install libhiprtc-builtins5, which libamdhip64-dev brings; or set \
         HIPRTC_BUILTINS)"
            .into(),
    )
}

impl Clang {
    /// Finds the tools, reads hipRTC's header and lays out the device libraries for `archs`
    /// under `dir`.
    pub fn prepare(archs: &[String], dir: &Path) -> Result<Clang, String> {
        let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang-19".into());
        // The LLVM tools of the clang's own release (its bin folder: /usr/lib/llvm-19/bin).
        let tool = |name: &str| -> Result<String, String> {
            let out = run(
                Command::new(&clang).arg(format!("--print-prog-name={name}")),
                &clang,
            )?;
            Ok(String::from_utf8_lossy(&out).trim().to_string())
        };
        let (llvm_as, readobj) = (tool("llvm-as")?, tool("llvm-readobj")?);
        let objdump = tool("llvm-objdump")?;

        let (header_source, hip_version) = builtins_library()?;
        let elf = std::fs::read(&header_source)
            .map_err(|e| format!("{}: {e}", header_source.display()))?;
        let text = builtin_header(&elf).map_err(|e| format!("{}: {e}", header_source.display()))?;
        let header = dir.join("hiprtc_runtime.h");
        std::fs::write(&header, text).map_err(|e| e.to_string())?;

        let installed_libs = match std::env::var_os("ROCM_DEVICE_LIB_PATH") {
            Some(p) => PathBuf::from(p),
            None => std::env::var_os("ROCM_PATH")
                .map(|root| Path::new(&root).join("amdgcn/bitcode"))
                .into_iter()
                .chain(DEVICE_LIB_DIRS.iter().map(PathBuf::from))
                .find(|d| d.join("ocml.bc").exists())
                .ok_or(
                    "ROCm device libraries (ocml.bc) not found (Debian/Ubuntu: apt-get install \
                     rocm-device-libs, which hipcc brings; or set ROCM_DEVICE_LIB_PATH)",
                )?,
        };
        let device_libs = dir.join("device-libs");
        std::fs::create_dir_all(&device_libs).map_err(|e| e.to_string())?;
        for entry in std::fs::read_dir(&installed_libs).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".bc") {
                std::os::unix::fs::symlink(&path, device_libs.join(&name))
                    .map_err(|e| e.to_string())?;
            }
        }
        for arch in archs {
            let version = isa_version(arch).ok_or_else(|| format!("not an AMD target: {arch}"))?;
            let digits = &arch.split(':').next().unwrap()[3..];
            let wanted = device_libs.join(format!("oclc_isa_version_{digits}.bc"));
            if wanted.exists() {
                continue;
            }
            // The target's data layout: that of an empty module clang compiles for it.
            let empty = run(
                Command::new(&clang)
                    .args(["-x", "c", "-target", "amdgcn-amd-amdhsa", "-nogpulib"])
                    .arg(format!("-mcpu={arch}"))
                    .args(["-S", "-emit-llvm", "/dev/null", "-o", "-"]),
                &clang,
            )?;
            let empty = String::from_utf8_lossy(&empty);
            let layout = data_layout_of(&empty)
                .ok_or_else(|| format!("{clang} gave no data layout for {arch}"))?;
            let ll = device_libs.join(format!("oclc_isa_version_{digits}.ll"));
            std::fs::write(&ll, isa_version_ir(layout, version)).map_err(|e| e.to_string())?;
            run(
                Command::new(&llvm_as).arg(&ll).arg("-o").arg(&wanted),
                &llvm_as,
            )?;
        }
        // What every compilation shares, for the cache key: clang's full version, the header,
        // and each device library's name and size (the installed ones' times too).
        let clang_version = run(Command::new(&clang).arg("--version"), &clang)?;
        let header_text = std::fs::read(&header).map_err(|e| e.to_string())?;
        let mut libs: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&device_libs).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            let meta = std::fs::metadata(&path).map_err(|e| e.to_string())?;
            let installed = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink());
            let time = meta
                .modified()
                .ok()
                .filter(|_| installed)
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            libs.push(format!("{name} {} {time}", meta.len()));
        }
        libs.sort();
        let shared_key =
            source::fnv1a64(&[&clang_version, &header_text, libs.join("\n").as_bytes()]);
        let cache = cache_dir();
        if let Some(cache) = &cache {
            prune(cache);
        }
        Ok(Clang {
            clang,
            readobj,
            objdump,
            header,
            header_source,
            hip_version,
            installed_libs,
            device_libs,
            cache,
            shared_key,
            cache_hits: AtomicUsize::new(0),
        })
    }

    /// The first line of `clang --version`.
    pub fn version(&self) -> String {
        run(Command::new(&self.clang).arg("--version"), &self.clang)
            .map(|out| {
                let text = String::from_utf8_lossy(&out);
                text.lines().next().unwrap_or("").to_string()
            })
            .unwrap_or_default()
    }

    pub fn hip_version(&self) -> String {
        let (major, minor, patch) = self.hip_version;
        format!("{major}.{minor}.{patch}")
    }

    /// The clang arguments that compile `input` to the code object `output` for `arch`.
    pub fn args(&self, arch: &str, input: &Path, output: &Path) -> Vec<String> {
        let (major, minor, patch) = self.hip_version;
        let mut args: Vec<String> = [
            "-x",
            "hip",
            // Device code only, one unbundled code object: what hipRTC returns.
            "--cuda-device-only",
            "--no-gpu-bundle-output",
            // hipRTC's own compile options, in its order.
            "-O3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            format!("--hip-version={major}.{minor}.{patch}"),
            format!("-DHIP_VERSION_MAJOR={major}"),
            format!("-DHIP_VERSION_MINOR={minor}"),
            format!("-DHIP_VERSION_PATCH={patch}"),
            "-D__HIPCC_RTC__".into(),
            "-include".into(),
            self.header.display().to_string(),
            "-std=c++14".into(),
            "-nogpuinc".into(),
            "-Wno-gnu-line-marker".into(),
            "-Wno-missing-prototypes".into(),
            // hipRTC's code generation option (the driver internalizes the device libraries it
            // links; this internalizes the rest, as in hipRTC).
            "-mllvm".into(),
            "-amdgpu-internalize-symbols".into(),
            // The device libraries, and the code object version (see the module comment).
            format!("--rocm-device-lib-path={}", self.device_libs.display()),
            "-mcode-object-version=5".into(),
            // LLVM's occupancy per kernel, as remarks on stderr; no effect on the code.
            "-Rpass-analysis=kernel-resource-usage".into(),
            "-fno-caret-diagnostics".into(),
        ]);
        // The runtime's options, after hipRTC's, as hiprtcCompileProgram appends them.
        args.extend(source::hiprtc_options(arch));
        args.extend([
            "-c".into(),
            input.display().to_string(),
            "-o".into(),
            output.display().to_string(),
        ]);
        args
    }

    /// Compiles `src` (an assembled kernel file) for `arch`: the code object, the kernels'
    /// resources, and whatever clang printed besides the resource remarks (warnings).
    pub fn compile(
        &self,
        arch: &str,
        stem: &str,
        src: &str,
        dir: &Path,
    ) -> Result<(Vec<u8>, Vec<Resources>, String), String> {
        let input = dir.join(format!("{stem}-{arch}-clang.hip"));
        let output = dir.join(format!("{stem}-{arch}-clang.co"));
        // The arguments with the run's own folder taken out, for the cache key.
        let args = self.args(arch, &input, &output);
        let dir_text = dir.display().to_string();
        let key_args: Vec<String> = args.iter().map(|a| a.replace(&dir_text, "DIR")).collect();
        let key = source::fnv1a64(&[
            &self.shared_key.to_le_bytes(),
            key_args.join("\0").as_bytes(),
            src.as_bytes(),
        ]);
        let cached = self.cache.as_ref().map(|c| {
            let name = format!("{stem}-{arch}-{key:016x}");
            (
                c.join(format!("{name}.co")),
                c.join(format!("{name}.stderr")),
            )
        });
        let hit = cached.as_ref().and_then(|(co, err)| {
            let image = std::fs::read(co).ok()?;
            let stderr = std::fs::read_to_string(err).ok()?;
            std::fs::write(&output, &image).ok()?;
            // Used now: pruning keeps it.
            for path in [co, err] {
                let file = std::fs::File::options().append(true).open(path);
                let _ = file.and_then(|f| f.set_modified(SystemTime::now()));
            }
            Some(stderr)
        });
        let stderr = match hit {
            Some(stderr) => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                stderr
            }
            None => {
                std::fs::write(&input, src).map_err(|e| e.to_string())?;
                let out = Command::new(&self.clang)
                    .args(&args)
                    .output()
                    .map_err(|e| format!("cannot run {}: {e}", self.clang))?;
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                if !out.status.success() {
                    let errors: Vec<&str> = stderr
                        .lines()
                        .filter(|l| !l.contains("[-Rpass-analysis=kernel-resource-usage]"))
                        .collect();
                    return Err(errors.join("\n"));
                }
                if let Some((co, err)) = &cached {
                    // A cache that cannot be written only costs time next run.
                    if let Ok(image) = std::fs::read(&output) {
                        store(co, &image);
                        store(err, stderr.as_bytes());
                    }
                }
                stderr
            }
        };
        let image = std::fs::read(&output).map_err(|e| e.to_string())?;
        let notes = run(
            Command::new(&self.readobj).arg("--notes").arg(&output),
            &self.readobj,
        )?;
        let mut resources = parse_metadata(&String::from_utf8_lossy(&notes))?;
        let occupancy = parse_occupancy(&stderr);
        for r in &mut resources {
            r.occupancy = occupancy.get(&r.name).copied();
        }
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains("[-Rpass-analysis=kernel-resource-usage]"))
            .collect();
        Ok((image, resources, warnings.join("\n")))
    }
}

impl Clang {
    /// The matrix-core instructions (`v_wmma*`, `v_mfma*`) in each kernel of the code object
    /// `image` for `arch`, from its disassembly (llvm-objdump): kernel name -> count.
    pub fn matrix_instructions(
        &self,
        arch: &str,
        image: &[u8],
        dir: &Path,
    ) -> Result<BTreeMap<String, usize>, String> {
        let path = dir.join(format!("disassemble-{arch}-{}.co", std::process::id()));
        std::fs::write(&path, image).map_err(|e| e.to_string())?;
        let text = run(
            Command::new(&self.objdump)
                .arg("-d")
                .arg(format!("--mcpu={arch}"))
                .arg(&path),
            &self.objdump,
        );
        let _ = std::fs::remove_file(&path);
        Ok(count_matrix_instructions(&String::from_utf8_lossy(&text?)))
    }
}

/// Per function of an llvm-objdump disassembly (`<name>:` lines), its `v_wmma` / `v_mfma`
/// instructions.
pub fn count_matrix_instructions(disassembly: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in disassembly.lines() {
        let t = line.trim();
        if let (Some(open), true) = (t.find('<'), t.ends_with(">:")) {
            let name = t[open + 1..t.len() - 2].to_string();
            out.entry(name.clone()).or_insert(0);
            current = Some(name);
        } else if let Some(name) = &current {
            let op = t.split_whitespace().next().unwrap_or("");
            if op.starts_with("v_wmma") || op.starts_with("v_mfma") {
                *out.get_mut(name).unwrap() += 1;
            }
        }
    }
    out
}

/// Writes `bytes` to `path` through a temporary file and a rename (a reader never sees half a
/// file); errors are ignored.
fn store(path: &Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Removes the cache entries unused for `CACHE_KEEP`.
fn prune(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > CACHE_KEEP);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_instructions_are_counted_per_function() {
        let text = "\nDisassembly of section .text:\n\n\
            0000000000001900 <matmul_mma_f16_m64>:\n\
            \tv_mov_b32_e32 v1, 0 // 000000001900: 7E020280\n\
            \tv_wmma_f32_16x16x16_f16 v[0:7], v[8:15], v[16:23], v[0:7] // 000000001904: CC404000 1C021108\n\
            \tv_wmma_f32_16x16x16_f16 v[0:7], v[8:15], v[16:23], v[0:7]\n\
            \ts_endpgm\n\n\
            0000000000002000 <mma_prep_x>:\n\
            \ts_load_b64 s[0:1], s[0:1], 0x0\n\
            0000000000002100 <matmul_mma_q4_0_m64>:\n\
            \tv_mfma_f32_16x16x16_f16 v[0:3], v[4:5], v[6:7], v[0:3]\n";
        let counts = count_matrix_instructions(text);
        assert_eq!(counts["matmul_mma_f16_m64"], 2);
        assert_eq!(counts["mma_prep_x"], 0);
        assert_eq!(counts["matmul_mma_q4_0_m64"], 1);
        assert_eq!(counts.len(), 3);
    }

    #[test]
    fn isa_versions_as_the_device_libraries_spell_them() {
        assert_eq!(isa_version("gfx90a"), Some(9010));
        assert_eq!(isa_version("gfx90a:sramecc+:xnack-"), Some(9010));
        assert_eq!(isa_version("gfx942"), Some(9402));
        assert_eq!(isa_version("gfx1030"), Some(10300));
        assert_eq!(isa_version("gfx1100"), Some(11000));
        assert_eq!(isa_version("gfx1201"), Some(12001));
        assert_eq!(isa_version("sm_90"), None);
    }

    #[test]
    fn isa_version_module_is_one_constant_in_the_targets_layout() {
        let empty = "; ModuleID = '/dev/null'\nsource_filename = \"/dev/null\"\n\
                     target datalayout = \"e-p:64:64-p1:64:64-n32:64-S32-A5-G1\"\n\
                     target triple = \"amdgcn-amd-amdhsa\"\n";
        let layout = data_layout_of(empty).unwrap();
        assert_eq!(layout, "e-p:64:64-p1:64:64-n32:64-S32-A5-G1");
        let ir = isa_version_ir(layout, 11000);
        assert!(ir.starts_with("target datalayout = \"e-p:64:64-p1:64:64-n32:64-S32-A5-G1\"\n"));
        assert!(ir.contains(
            "@__oclc_ISA_version = linkonce_odr protected local_unnamed_addr addrspace(4) \
             constant i32 11000, align 4\n"
        ));
        assert_eq!(data_layout_of("target triple = \"x\"\n"), None);
    }

    /// A minimal ELF64 image with a .dynsym naming the two symbols (in a data section at
    /// address 0x1000, file offset 0x100) finds the header's bytes.
    #[test]
    fn header_bytes_from_the_library_symbols() {
        let text = b"#define __global__ __attribute__((global))\n";
        let mut elf = vec![0u8; 0x400];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let put = |elf: &mut Vec<u8>, off: usize, bytes: &[u8]| {
            elf[off..off + bytes.len()].copy_from_slice(bytes)
        };
        // Section headers at 0x200: [0] null, [1] data, [2] dynsym, [3] dynstr.
        put(&mut elf, 0x28, &0x200u64.to_le_bytes());
        put(&mut elf, 0x3a, &64u16.to_le_bytes());
        put(&mut elf, 0x3c, &4u16.to_le_bytes());
        let section =
            |elf: &mut Vec<u8>, i: usize, kind: u32, addr: u64, off: u64, size: u64, link: u32| {
                let s = 0x200 + 64 * i;
                put(elf, s + 4, &kind.to_le_bytes());
                put(elf, s + 0x10, &addr.to_le_bytes());
                put(elf, s + 0x18, &off.to_le_bytes());
                put(elf, s + 0x20, &size.to_le_bytes());
                put(elf, s + 0x28, &link.to_le_bytes());
            };
        section(&mut elf, 1, 1, 0x1000, 0x100, 0x80, 0);
        section(&mut elf, 2, 11, 0, 0x300, 72, 3);
        section(&mut elf, 3, 3, 0, 0x380, 0x40, 0);
        put(&mut elf, 0x100, text);
        put(&mut elf, 0x100 + 0x60, &(text.len() as u32).to_le_bytes());
        let names = b"\0__hipRTC_header\0__hipRTC_header_size\0";
        put(&mut elf, 0x380, names);
        // Symbols 1 and 2 (symbol 0 is the null one): name, section 1, value.
        for (i, name_off, value) in [(1usize, 1u32, 0x1000u64), (2, 17, 0x1060)] {
            let s = 0x300 + 24 * i;
            put(&mut elf, s, &name_off.to_le_bytes());
            put(&mut elf, s + 6, &1u16.to_le_bytes());
            put(&mut elf, s + 8, &value.to_le_bytes());
        }
        assert_eq!(builtin_header(&elf).unwrap(), text.to_vec());
        elf[0] = 0;
        assert!(builtin_header(&elf).is_err());
    }
}
