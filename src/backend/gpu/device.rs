//! A GPU device as the ops see it: a runtime, its kernel modules (compiled at first use and
//! cached on disk), RAII device buffers, checked launches and a launch counter.

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::kernels::{Family, Kernel};
use super::runtime::{DevicePtr, GpuRuntime, RawFunction, RawModule};
use super::source;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// Dynamic shared memory a kernel gets without opting in.
const DEFAULT_DYNAMIC_SHARED: u32 = 48 * 1024;

/// Put the op's name in front of a runtime error.
pub fn in_op(err: Error, op: &str) -> Error {
    match err {
        Error::Device(m) => Error::Device(format!("{op}: {m}")),
        Error::OutOfMemory { what, needed, free } => Error::OutOfMemory {
            what: format!("{op} ({what})"),
            needed,
            free,
        },
        other => other,
    }
}

/// A kernel argument, passed by value.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(DevicePtr),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl Arg {
    /// The argument's bytes in the low end of a little-endian 8-byte slot.
    fn slot(self) -> u64 {
        match self {
            Arg::Ptr(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::I64(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
        }
    }
}

/// `usize` to a kernel `int`, or an error naming what overflowed.
pub fn to_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::invalid(format!(
            "{what} = {v} is too large for the GPU kernels (max {})",
            i32::MAX
        ))
    })
}

pub struct GpuDevice {
    pub index: usize,
    rt: Box<dyn GpuRuntime>,
    modules: Mutex<HashMap<Family, RawModule>>,
    /// name -> (function, dynamic shared memory it was opted in for)
    functions: Mutex<HashMap<String, (RawFunction, u32)>>,
    launches: AtomicU64,
    /// Bytes of device memory this library holds now, and the most it held at once (buffers
    /// and scratch; the runtime's own context memory is not counted).
    allocated: AtomicU64,
    peak_allocated: AtomicU64,
    last_kernel: Mutex<String>,
    /// Reusable device scratch (flash-attention partials): (ptr, bytes).
    scratch: Mutex<(DevicePtr, usize)>,
}

impl GpuDevice {
    pub fn new(index: usize, rt: Box<dyn GpuRuntime>) -> GpuDevice {
        GpuDevice {
            index,
            rt,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            launches: AtomicU64::new(0),
            allocated: AtomicU64::new(0),
            peak_allocated: AtomicU64::new(0),
            last_kernel: Mutex::new(String::new()),
            scratch: Mutex::new((0, 0)),
        }
    }

    pub fn runtime(&self) -> &dyn GpuRuntime {
        self.rt.as_ref()
    }

    pub fn name(&self) -> &str {
        &self.rt.props().name
    }

    /// Device bytes this library holds now.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// The most device bytes this library held at once since the last `reset_peak_allocated`.
    pub fn peak_allocated_bytes(&self) -> u64 {
        self.peak_allocated.load(Ordering::Relaxed)
    }

    /// Start the peak count again from what is held now.
    pub fn reset_peak_allocated(&self) {
        self.peak_allocated
            .store(self.allocated.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn count_alloc(&self, bytes: usize) {
        let now = self.allocated.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        self.peak_allocated.fetch_max(now, Ordering::Relaxed);
    }

    fn count_free(&self, bytes: usize) {
        self.allocated.fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    /// Kernels launched on this device so far.
    pub fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    fn context_of_async_error(&self, err: Error) -> Error {
        let last = self
            .last_kernel
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        match err {
            Error::Device(m) if !last.is_empty() => {
                Error::Device(format!("{m} (last kernel launched: {last})"))
            }
            other => other,
        }
    }

    pub fn synchronize(&self, op: &str) -> Result<()> {
        self.rt
            .synchronize()
            .map_err(|e| in_op(self.context_of_async_error(e), op))
    }

    /// Device time of the work `work` queues, in milliseconds (device events).
    pub fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f32> {
        self.rt.time_ms(work)
    }

    // ------------------------------------------------------------------------------ kernels

    fn module(&self, family: Family) -> Result<RawModule> {
        let mut modules = self
            .modules
            .lock()
            .map_err(|_| Error::runtime("GPU module table poisoned"))?;
        if let Some(m) = modules.get(&family) {
            return Ok(*m);
        }
        let m = self.build_module(family)?;
        modules.insert(family, m);
        Ok(m)
    }

    fn build_module(&self, family: Family) -> Result<RawModule> {
        if let Some(image) = self.rt.precompiled(family.file()) {
            if let Ok(m) = self.rt.load_module(image) {
                return Ok(m);
            }
        }
        let src = family.source()?;
        let props = self.rt.props();
        let compiler = self.rt.compiler_id()?;
        let key = source::fnv1a64(&[
            src.as_bytes(),
            props.arch.as_bytes(),
            compiler.as_bytes(),
            self.rt.backend().as_bytes(),
        ]);
        let stem = family.file().trim_end_matches(".hip");
        let cached = kernel_cache_dir()
            .filter(|_| self.rt.cacheable())
            .map(|d| d.join(format!("{stem}-{}-{key:016x}.bin", props.arch)));
        if let Some(path) = &cached {
            if let Ok(image) = std::fs::read(path) {
                if let Ok(m) = self.rt.load_module(&image) {
                    return Ok(m);
                }
            }
        }
        let image = self.rt.compile(family.file(), &src)?;
        if let Some(path) = &cached {
            store_atomically(path, &image);
        }
        self.rt
            .load_module(&image)
            .map_err(|e| in_op(e, family.file()))
    }

    fn function(&self, kernel: &Kernel, shared_bytes: u32) -> Result<RawFunction> {
        let mut functions = self
            .functions
            .lock()
            .map_err(|_| Error::runtime("GPU function table poisoned"))?;
        let entry = match functions.get(&kernel.name) {
            Some(e) => *e,
            None => {
                let module = self.module(kernel.family)?;
                let f = self.rt.get_function(module, &kernel.name)?;
                functions.insert(kernel.name.clone(), (f, DEFAULT_DYNAMIC_SHARED));
                (f, DEFAULT_DYNAMIC_SHARED)
            }
        };
        if shared_bytes > entry.1 {
            self.rt
                .set_max_dynamic_shared(entry.0, shared_bytes as usize)?;
            functions.insert(kernel.name.clone(), (entry.0, shared_bytes));
        }
        Ok(entry.0)
    }

    /// Compile and load every kernel of `family` now (instead of at first launch).
    pub fn prepare(&self, family: Family) -> Result<()> {
        self.module(family).map(|_| ())
    }

    /// Queue `kernel` on `grid` x `block` with `shared_bytes` of dynamic shared memory.
    /// Errors name the op, the kernel and the launch shape.
    pub fn launch(
        &self,
        op: &str,
        kernel: &Kernel,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        args: &[Arg],
    ) -> Result<()> {
        let shape = || {
            format!(
                "{} grid {:?} block {:?} shared {}",
                kernel.name, grid, block, shared_bytes
            )
        };
        if grid.iter().chain(block.iter()).any(|&d| d == 0)
            || grid[1] > 65535
            || grid[2] > 65535
            || grid[0] > i32::MAX as u32
        {
            return Err(Error::device(format!(
                "{op}: launch shape out of range ({})",
                shape()
            )));
        }
        let f = self
            .function(kernel, shared_bytes)
            .map_err(|e| in_op(e, op))?;
        let mut slots: Vec<u64> = args.iter().map(|a| a.slot()).collect();
        let mut ptrs: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        unsafe { self.rt.launch(f, grid, block, shared_bytes, &mut ptrs) }
            .map_err(|e| in_op(e, &format!("{op} ({})", shape())))?;
        self.launches.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_kernel.lock() {
            if *last != kernel.name {
                last.clone_from(&kernel.name);
            }
        }
        Ok(())
    }

    /// A scratch area of at least `bytes`, shared by the ops of this device. Hold the guard
    /// while queueing the launches that use it: work runs in queue order, so the next user's
    /// kernels start after this one's.
    pub fn scratch(&self, bytes: usize, op: &str) -> Result<ScratchGuard<'_>> {
        let mut guard = self
            .scratch
            .lock()
            .map_err(|_| Error::runtime("GPU scratch poisoned"))?;
        if guard.1 < bytes {
            if guard.1 > 0 {
                unsafe { self.rt.free(guard.0) }.map_err(|e| in_op(e, op))?;
                self.count_free(guard.1);
                *guard = (0, 0);
            }
            let want = bytes.next_power_of_two().max(1 << 20);
            let ptr = self.rt.alloc(want).map_err(|e| in_op(e, op))?;
            self.count_alloc(want);
            *guard = (ptr, want);
        }
        Ok(ScratchGuard { guard })
    }
}

pub struct ScratchGuard<'a> {
    guard: MutexGuard<'a, (DevicePtr, usize)>,
}

impl ScratchGuard<'_> {
    pub fn ptr(&self) -> DevicePtr {
        self.guard.0
    }
}

impl Drop for GpuDevice {
    fn drop(&mut self) {
        if let Ok(s) = self.scratch.lock() {
            if s.1 > 0 {
                unsafe {
                    let _ = self.rt.free(s.0);
                }
            }
        }
    }
}

/// Where compiled kernels are kept: `$ROCMFORGE_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/rocmforge/kernels`, else `~/.cache/rocmforge/kernels`.
pub fn kernel_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ROCMFORGE_KERNEL_CACHE") {
        return Some(dir.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("rocmforge").join("kernels"))
}

/// Write via a temporary file and a rename, so a reader never sees half a file. A cache that
/// cannot be written is only slower: errors are ignored.
fn store_atomically(path: &std::path::Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("k"),
        std::process::id()
    ));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

// ---------------------------------------------------------------------------------- buffers

/// Plain values that may be copied to and from the device byte for byte.
pub trait Plain: Copy + Default + 'static {}
impl Plain for f32 {}
impl Plain for u8 {}
impl Plain for u16 {}
impl Plain for i32 {}
impl Plain for u32 {}

fn as_bytes<T: Plain>(v: &[T]) -> &[u8] {
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}
fn as_bytes_mut<T: Plain>(v: &mut [T]) -> &mut [u8] {
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

/// Device memory, freed on drop.
pub struct DeviceBuffer {
    dev: Arc<GpuDevice>,
    ptr: DevicePtr,
    bytes: usize,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer({} bytes on GPU {})",
            self.bytes, self.dev.index
        )
    }
}

impl DeviceBuffer {
    /// Uninitialized device memory of `bytes` bytes (a zero-sized buffer allocates nothing).
    pub fn alloc(dev: &Arc<GpuDevice>, bytes: usize, op: &str) -> Result<DeviceBuffer> {
        let ptr = if bytes == 0 {
            0
        } else {
            let ptr = dev.rt.alloc(bytes).map_err(|e| in_op(e, op))?;
            dev.count_alloc(bytes);
            ptr
        };
        Ok(DeviceBuffer {
            dev: dev.clone(),
            ptr,
            bytes,
        })
    }

    pub fn zeros(dev: &Arc<GpuDevice>, bytes: usize, op: &str) -> Result<DeviceBuffer> {
        let buf = DeviceBuffer::alloc(dev, bytes, op)?;
        if bytes > 0 {
            unsafe { dev.rt.memset_zero(buf.ptr, bytes) }.map_err(|e| in_op(e, op))?;
        }
        Ok(buf)
    }

    pub fn from_slice<T: Plain>(
        dev: &Arc<GpuDevice>,
        data: &[T],
        op: &str,
    ) -> Result<DeviceBuffer> {
        let bytes = as_bytes(data);
        let buf = DeviceBuffer::alloc(dev, bytes.len(), op)?;
        if !bytes.is_empty() {
            unsafe { dev.rt.copy_htod(buf.ptr, bytes) }.map_err(|e| in_op(e, op))?;
        }
        Ok(buf)
    }

    /// Overwrite the first `size_of_val(data)` bytes.
    pub fn write<T: Plain>(&mut self, data: &[T], op: &str) -> Result<()> {
        let bytes = as_bytes(data);
        self.check_len(bytes.len(), op)?;
        if !bytes.is_empty() {
            unsafe { self.dev.rt.copy_htod(self.ptr, bytes) }.map_err(|e| in_op(e, op))?;
        }
        Ok(())
    }

    /// Copy the first `out.len()` elements to the host (waits for queued work).
    pub fn read<T: Plain>(&self, out: &mut [T], op: &str) -> Result<()> {
        let bytes = as_bytes_mut(out);
        self.check_len(bytes.len(), op)?;
        if !bytes.is_empty() {
            unsafe { self.dev.rt.copy_dtoh(bytes, self.ptr) }
                .map_err(|e| in_op(self.dev.context_of_async_error(e), op))?;
        }
        Ok(())
    }

    pub fn to_vec<T: Plain>(&self, n: usize, op: &str) -> Result<Vec<T>> {
        let mut out = vec![T::default(); n];
        self.read(&mut out, op)?;
        Ok(out)
    }

    /// Copy `bytes` bytes from `src` (offset `src_off`) to this buffer at `dst_off`.
    pub fn copy_from(
        &mut self,
        dst_off: usize,
        src: &DeviceBuffer,
        src_off: usize,
        bytes: usize,
        op: &str,
    ) -> Result<()> {
        if dst_off.checked_add(bytes).is_none_or(|e| e > self.bytes)
            || src_off.checked_add(bytes).is_none_or(|e| e > src.bytes)
        {
            return Err(Error::invalid(format!(
                "{op}: copy of {bytes} bytes out of range (dst {dst_off}/{}, src {src_off}/{})",
                self.bytes, src.bytes
            )));
        }
        if bytes > 0 {
            unsafe {
                self.dev
                    .rt
                    .copy_dtod(self.ptr + dst_off as u64, src.ptr + src_off as u64, bytes)
            }
            .map_err(|e| in_op(e, op))?;
        }
        Ok(())
    }

    fn check_len(&self, bytes: usize, op: &str) -> Result<()> {
        if bytes > self.bytes {
            return Err(Error::invalid(format!(
                "{op}: {bytes} bytes requested from a buffer of {}",
                self.bytes
            )));
        }
        Ok(())
    }

    pub fn ptr(&self) -> DevicePtr {
        self.ptr
    }
    pub fn arg(&self) -> Arg {
        Arg::Ptr(self.ptr)
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn device(&self) -> &Arc<GpuDevice> {
        &self.dev
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.bytes > 0 {
            unsafe {
                let _ = self.dev.rt.free(self.ptr);
            }
            self.dev.count_free(self.bytes);
        }
    }
}

// ------------------------------------------------------------------------- weight layout

/// A GGUF weight's bytes as the kernels read them (kernels/quants.h): Q4_0 and Q8_0 rows have
/// their blocks split, the quants of every block first and then the fp16 scales (the same
/// bytes per row), so that the decode kernels read quants as aligned 4-byte words; other types
/// keep the file's layout. `cols`: elements per row; `bytes` whole rows.
pub fn to_device_layout(ty: GgmlType, cols: usize, bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let (block_bytes, qs) = match ty {
        GgmlType::Q4_0 => (18, 16),
        GgmlType::Q8_0 => (34, 32),
        _ => return std::borrow::Cow::Borrowed(bytes),
    };
    let blocks = cols / 32;
    let row_bytes = blocks * block_bytes;
    if row_bytes == 0 || bytes.len() % row_bytes != 0 {
        return std::borrow::Cow::Borrowed(bytes); // not whole rows: the launchers reject it
    }
    let mut out = vec![0u8; bytes.len()];
    for (src, dst) in bytes
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        let (quants, scales) = dst.split_at_mut(blocks * qs);
        for (b, block) in src.chunks_exact(block_bytes).enumerate() {
            scales[2 * b..2 * b + 2].copy_from_slice(&block[..2]);
            quants[b * qs..(b + 1) * qs].copy_from_slice(&block[2..]);
        }
    }
    std::borrow::Cow::Owned(out)
}

// ------------------------------------------------------------------------- launcher helpers

/// Threads per block of the grid-stride kernels.
pub const FLAT_BLOCK: u32 = 256;

/// Grid of a grid-stride kernel over `n` elements (at least one block).
pub fn flat_grid(n: usize) -> [u32; 3] {
    let blocks = n.div_ceil(FLAT_BLOCK as usize).clamp(1, 1 << 16);
    [blocks as u32, 1, 1]
}

/// `InvalidArgument` unless `buf` holds at least `elems` elements of `elem_bytes` bytes.
pub fn need(
    op: &str,
    what: &str,
    buf: &DeviceBuffer,
    elems: usize,
    elem_bytes: usize,
) -> Result<()> {
    let bytes = elems.checked_mul(elem_bytes);
    if bytes.is_none_or(|b| b > buf.bytes()) {
        return Err(Error::invalid(format!(
            "{op}: {what} needs {elems} elements of {elem_bytes} bytes, the device buffer holds {} bytes",
            buf.bytes()
        )));
    }
    Ok(())
}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.rt.props();
        write!(
            f,
            "GpuDevice({}: {} {} {})",
            self.index,
            self.rt.backend(),
            p.name,
            p.arch
        )
    }
}
