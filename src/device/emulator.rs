//! Test-only: a `GpuRuntime` that runs the real kernel sources on the CPU, so that the kernels
//! and their launchers are checked against the CPU reference without a GPU, at wave size 32
//! and 64. The HIP dialect is emulated by `emulator_prelude.h`; each kernel file is compiled
//! by the host C++ compiler (g++) into a shared library, with one trampoline per kernel that
//! unpacks the launch's argument array. Device memory is host memory. Slow: small shapes only.

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use super::runtime::{DeviceProps, DevicePtr, GpuRuntime, RawFunction, RawModule};
use crate::error::{Error, Result};

type Trampoline = unsafe extern "C" fn(*mut *mut c_void);
type Launch = unsafe extern "C" fn(Trampoline, *const u32, *const u32, u32, *mut *mut c_void);

/// One block of emulated launches at a time: the emulation keeps its state in globals.
static LAUNCH_LOCK: Mutex<()> = Mutex::new(());

pub struct EmuRuntime {
    wave: u32,
    /// The AMD matrix-core form the kernels take (kernels/mma.h: `RF_MATRIX_WMMA11`, ...),
    /// whose builtins the prelude implements; None: no AMD target (the portable forms).
    matrix: Option<&'static str>,
    props: DeviceProps,
    dir: PathBuf,
    allocations: Mutex<HashMap<u64, Vec<u128>>>,
    libraries: Mutex<Vec<libloading::Library>>,
}

impl EmuRuntime {
    pub fn new(wave: u32, max_shared_per_block: usize) -> EmuRuntime {
        EmuRuntime::tagged(wave, max_shared_per_block, "")
    }

    /// An emulated device with a build directory of its own (`tag` tells it apart from the
    /// others of this process), for a test that counts its launches without other tests'
    /// launches on the same device.
    pub fn tagged(wave: u32, max_shared_per_block: usize, tag: &str) -> EmuRuntime {
        let dir =
            std::env::temp_dir().join(format!("rocmforge-emu-{}-w{wave}{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("emulator build directory");
        EmuRuntime {
            wave,
            matrix: None,
            props: DeviceProps {
                name: format!("CPU emulation, wave {wave}"),
                arch: format!("emu{wave}"),
                warp_size: wave,
                multiprocessors: 4,
                max_shared_per_block,
                total_memory: 1 << 30,
            },
            dir,
            allocations: Mutex::new(HashMap::new()),
            libraries: Mutex::new(Vec::new()),
        }
    }
}

impl EmuRuntime {
    /// An emulated AMD target with matrix cores: gfx1100 (RDNA3 WMMA, wave 32), gfx1201
    /// (RDNA4 WMMA, wave 32) or gfx942 (CDNA3 MFMA, wave 64), with AMD's 64 KiB of shared
    /// memory. Its arch is the target's name, so the launchers choose as they would there; the
    /// kernels take that target's matrix-core form, whose builtins the prelude implements with
    /// the instructions' lane layouts.
    pub fn amd_matrix(target: &str) -> EmuRuntime {
        let (wave, matrix) = match target {
            "gfx1100" => (32, "RF_MATRIX_WMMA11"),
            "gfx1201" => (32, "RF_MATRIX_WMMA12"),
            "gfx942" => (64, "RF_MATRIX_MFMA"),
            other => panic!("no emulated matrix cores for {other}"),
        };
        let mut rt = EmuRuntime::tagged(wave, 64 * 1024, &format!("-{target}"));
        rt.matrix = Some(matrix);
        rt.props.arch = target.to_string();
        rt.props.name = format!("CPU emulation of {target}, wave {wave}");
        rt
    }
}

/// The C++ translation unit the emulator builds from a kernel file's assembled source: the
/// prelude, then the source with dynamic shared memory (`extern __shared__ T name[];`) turned
/// into a pointer to the launch's area. `matrix` names the AMD matrix-core form to take.
fn translation_unit(wave: u32, matrix: Option<&str>, source: &str) -> String {
    let prelude = include_str!("emulator_prelude.h");
    let mut body = String::new();
    for line in source.lines() {
        let t = line.trim();
        if let Some(decl) = t.strip_prefix("extern __shared__ ") {
            let decl = decl
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .trim_end_matches("[]");
            let (ty, var) = decl.rsplit_once(' ').unwrap();
            body.push_str(&format!("{ty}* {var} = ({ty}*)rf_emu_dynamic_shared;\n"));
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    let matrix = matrix
        .map(|m| format!("#define {m} 1\n"))
        .unwrap_or_default();
    format!("#define RF_EMU_WAVE {wave}\n{matrix}{prelude}\nvoid rf_emu_kernels_begin();\n{body}")
}

/// The file at `path` through the C preprocessor (g++ -E).
fn preprocess(path: &std::path::Path) -> Result<String> {
    let pre = Command::new("g++")
        .args(["-std=c++20", "-E", "-P"])
        .arg(path)
        .output()
        .map_err(|e| Error::device(format!("g++: {e}")))?;
    if !pre.status.success() {
        return Err(Error::device(
            String::from_utf8_lossy(&pre.stderr).into_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&pre.stdout).into_owned())
}

/// `extern "C" void name(params)` of every kernel in preprocessed source.
fn kernel_signatures(pre: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let flat = pre.split_whitespace().collect::<Vec<_>>().join(" ");
    let marker = "rf_emu_kernels_begin();";
    let mut rest = &flat[flat.find(marker).map(|i| i + marker.len()).unwrap_or(0)..];
    while let Some(at) = rest.find("extern \"C\" void ") {
        rest = &rest[at + "extern \"C\" void ".len()..];
        let Some(open) = rest.find('(') else { break };
        let name = rest[..open].trim().to_string();
        let Some(close) = rest[open..].find(')') else {
            break;
        };
        let params = &rest[open + 1..open + close];
        if name.starts_with("rf_emu") || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let types = params
            .split(',')
            .map(|p| {
                let p = p.trim();
                let cut = p
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map(|i| i + 1)
                    .unwrap_or(0);
                p[..cut].trim().to_string()
            })
            .filter(|t| !t.is_empty())
            .collect();
        out.push((name, types));
    }
    out
}

impl GpuRuntime for EmuRuntime {
    fn backend(&self) -> &'static str {
        "emulator"
    }
    fn props(&self) -> &DeviceProps {
        &self.props
    }
    fn compiler_id(&self) -> Result<String> {
        Ok("g++".into())
    }
    fn cacheable(&self) -> bool {
        false
    }
    fn mem_info(&self) -> Result<(u64, u64)> {
        Ok((1 << 30, 1 << 30))
    }
    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        let mut v = vec![0u128; bytes.div_ceil(16)]; // 16-byte aligned
                                                     // Poison: kernels must write every output element.
        for w in v.iter_mut() {
            *w = u128::from_le_bytes([0xff; 16]);
        }
        let ptr = v.as_mut_ptr() as u64;
        self.allocations.lock().unwrap().insert(ptr, v);
        Ok(ptr)
    }
    unsafe fn free(&self, ptr: DevicePtr) -> Result<()> {
        self.allocations.lock().unwrap().remove(&ptr);
        Ok(())
    }
    unsafe fn copy_htod(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len());
        Ok(())
    }
    unsafe fn copy_dtoh(&self, dst: &mut [u8], src: DevicePtr) -> Result<()> {
        std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len());
        Ok(())
    }
    unsafe fn copy_dtod(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<()> {
        std::ptr::copy(src as *const u8, dst as *mut u8, bytes);
        Ok(())
    }
    unsafe fn memset_zero(&self, dst: DevicePtr, bytes: usize) -> Result<()> {
        std::ptr::write_bytes(dst as *mut u8, 0, bytes);
        Ok(())
    }

    fn compile(&self, name: &str, source: &str) -> Result<Vec<u8>> {
        // Built once a process for each wave and source (tests make many devices), and the
        // slot held while building, so that devices asking at once wait for one build.
        let slot = built_slot(self.wave, self.matrix, name, source);
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(image) = slot.as_ref() {
            return Ok(image.clone());
        }
        let stem = name.trim_end_matches(".hip");
        let tu = translation_unit(self.wave, self.matrix, source);
        let src_path = self.dir.join(format!("{stem}.cpp"));
        std::fs::write(&src_path, &tu).map_err(|e| Error::runtime(e.to_string()))?;
        let mut tramps = String::new();
        for (kname, types) in kernel_signatures(&preprocess(&src_path)?) {
            let args: Vec<String> = types
                .iter()
                .enumerate()
                .map(|(i, t)| format!("*({t}*)a[{i}]"))
                .collect();
            tramps.push_str(&format!(
                "extern \"C\" void rf_emu_tramp_{kname}(void** a) {{ {kname}({}); }}\n",
                args.join(", ")
            ));
        }
        std::fs::write(&src_path, format!("{tu}\n{tramps}"))
            .map_err(|e| Error::runtime(e.to_string()))?;
        let lib = self.dir.join(format!("lib{stem}.so"));
        let out = Command::new("g++")
            .args([
                "-std=c++20",
                "-O1",
                "-shared",
                "-fPIC",
                "-pthread",
                "-w",
                "-o",
            ])
            .arg(&lib)
            .arg(&src_path)
            .output()
            .map_err(|e| Error::device(format!("g++: {e}")))?;
        if !out.status.success() {
            return Err(Error::device(format!(
                "g++ could not build {name}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let image = lib.to_string_lossy().into_owned().into_bytes();
        *slot = Some(image.clone());
        Ok(image)
    }

    fn load_module(&self, image: &[u8]) -> Result<RawModule> {
        let path = String::from_utf8_lossy(image).into_owned();
        let lib =
            unsafe { libloading::Library::new(&path) }.map_err(|e| Error::device(e.to_string()))?;
        let mut libs = self.libraries.lock().unwrap();
        libs.push(lib);
        Ok(RawModule(libs.len() - 1))
    }

    fn get_function(&self, module: RawModule, name: &str) -> Result<RawFunction> {
        let libs = self.libraries.lock().unwrap();
        let sym: libloading::Symbol<Trampoline> =
            unsafe { libs[module.0].get(format!("rf_emu_tramp_{name}").as_bytes()) }
                .map_err(|e| Error::device(format!("kernel {name}: {e}")))?;
        let launch: libloading::Symbol<Launch> = unsafe { libs[module.0].get(b"rf_emu_launch") }
            .map_err(|e| Error::device(e.to_string()))?;
        // Keep both: a function handle is an index into this table.
        let mut f = FUNCTIONS.lock().unwrap();
        f.push((*sym, *launch));
        Ok(RawFunction(f.len() - 1))
    }

    fn set_max_dynamic_shared(&self, _f: RawFunction, bytes: usize) -> Result<()> {
        if bytes > self.props.max_shared_per_block {
            return Err(Error::device(format!(
                "{bytes} bytes of shared memory requested, {} allowed",
                self.props.max_shared_per_block
            )));
        }
        Ok(())
    }

    unsafe fn launch(
        &self,
        f: RawFunction,
        grid: [u32; 3],
        block: [u32; 3],
        shared: u32,
        args: &mut [*mut c_void],
        _overlap: bool, // kernels run one after another here
    ) -> Result<()> {
        let threads = block[0] * block[1] * block[2];
        if !threads.is_multiple_of(self.wave) || threads > 1024 {
            return Err(Error::device(format!(
                "block of {threads} threads is not a multiple of the wave ({})",
                self.wave
            )));
        }
        if shared as usize > self.props.max_shared_per_block {
            return Err(Error::device(format!(
                "{shared} bytes of dynamic shared memory over the limit"
            )));
        }
        let (tramp, launch) = FUNCTIONS.lock().unwrap()[f.0];
        let _one_at_a_time = LAUNCH_LOCK.lock().unwrap();
        launch(
            tramp,
            grid.as_ptr(),
            block.as_ptr(),
            shared,
            args.as_mut_ptr(),
        );
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f32> {
        let t = std::time::Instant::now();
        work()?;
        Ok(t.elapsed().as_secs_f32() * 1e3)
    }
}

static FUNCTIONS: Mutex<Vec<(Trampoline, Launch)>> = Mutex::new(Vec::new());

/// A built library's slot: its image (the library's path) once built.
type BuiltSlot = std::sync::Arc<Mutex<Option<Vec<u8>>>>;

/// The slot of kernel file `name` with `source` at wave `wave` and matrix form `matrix` (the
/// libraries built in this process: the emulated devices of one kind share them; launches run
/// one at a time anyway).
fn built_slot(wave: u32, matrix: Option<&str>, name: &str, source: &str) -> BuiltSlot {
    type Key = (u32, Option<String>, String, u64);
    static BUILT: Mutex<Vec<(Key, BuiltSlot)>> = Mutex::new(Vec::new());
    let key = (
        wave,
        matrix.map(str::to_string),
        name.to_string(),
        super::source::fnv1a64(&[source.as_bytes()]),
    );
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, slot)) = built.iter().find(|(k, _)| *k == key) {
        return slot.clone();
    }
    let slot = BuiltSlot::default();
    built.push((key, slot.clone()));
    slot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::kernels::{self, Family};

    /// Every kernel of the registry is a kernel of its file as the compilers see it (after
    /// the preprocessor: macro-made and generated definitions included), so a name the
    /// launchers use and the source disagree on fails here, before any GPU or compile gate.
    #[test]
    fn every_registered_kernel_is_a_kernel_of_its_preprocessed_source() {
        if Command::new("g++").arg("--version").output().is_err() {
            println!("g++ not found: skipped");
            return;
        }
        let dir =
            std::env::temp_dir().join(format!("rocmforge-kernel-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let all = kernels::all();
        for family in Family::ALL {
            let path = dir.join(family.file().replace(".hip", ".cpp"));
            // As for an emulated gfx1100: its translation units hold every kernel (the AMD
            // matrix-core ones too).
            let tu = translation_unit(32, Some("RF_MATRIX_WMMA11"), &family.source().unwrap());
            std::fs::write(&path, tu).unwrap();
            let defined: Vec<String> = kernel_signatures(&preprocess(&path).unwrap())
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            for k in all.iter().filter(|k| k.family == family) {
                assert!(
                    defined.contains(&k.name),
                    "{} is registered but {} defines no such kernel",
                    k.name,
                    family.file()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
