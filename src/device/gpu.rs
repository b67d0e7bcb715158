//! A GPU device as the ops see it: a runtime, its kernel modules (compiled at first use and
//! cached on disk), RAII device buffers, checked launches, a launch counter and graphs
//! captured from the device's queue (`GpuGraph`).
//!
//! Capture and other threads: while one thread records the queue into a graph, work that
//! other threads queue on the same device would be recorded too. So every queue operation
//! passes a gate (`queue`): the capturing thread goes through, the others wait until the
//! capture is over.

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::kernels::{Family, Kernel};
use super::runtime::{DevicePtr, GpuRuntime, RawFunction, RawGraph, RawModule, RawReadSlot};
use super::source;
use super::tuning::Tuning;
use crate::error::{Error, Result};

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
    /// A `#[repr(C)]` struct (the kernel's parameter is a struct of the same layout, passed
    /// by value): its bytes (`Arg::from_struct`). The runtimes and the emulator take its
    /// address as the parameter's, as they take a scalar slot's.
    Struct(StructBytes),
}

/// The bytes of a struct argument, held inline (so that `Arg` stays `Copy`), 8-byte aligned.
#[derive(Clone, Copy, Debug)]
pub struct StructBytes {
    words: [u64; StructBytes::MAX_WORDS],
}

impl StructBytes {
    /// The largest struct argument: 256 bytes (CUDA allows 4 KiB of parameters).
    pub const MAX_WORDS: usize = 32;
}

impl Arg {
    /// A struct argument: `v`'s bytes (a plain-data `#[repr(C)]` struct without padding whose
    /// layout the kernel's struct mirrors; both sides check its size). At most 256 bytes.
    pub fn from_struct<T: bytemuck::Pod>(v: &T) -> Arg {
        let bytes = bytemuck::bytes_of(v);
        assert!(
            bytes.len() <= 8 * StructBytes::MAX_WORDS,
            "kernel struct argument too large"
        );
        let mut words = [0u64; StructBytes::MAX_WORDS];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Arg::Struct(StructBytes { words })
    }

    /// The argument's bytes in the low end of a little-endian 8-byte slot (a struct: none).
    fn slot(&self) -> u64 {
        match *self {
            Arg::Ptr(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::I64(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
            Arg::Struct(_) => 0,
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
    /// Held for writing while a graph is being captured; queue operations of other threads
    /// hold it for reading.
    capture_gate: RwLock<()>,
    /// `thread_token()` of the thread capturing now, 0 when none.
    capturing_thread: AtomicU64,
    /// The device's tuning record (a model may run with its own, see `Tuning`).
    tuning: Tuning,
}

/// A number for the calling thread, unique in the process, never 0.
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TOKEN.with(|t| *t)
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
            capture_gate: RwLock::new(()),
            capturing_thread: AtomicU64::new(0),
            tuning: Tuning::default(),
        }
    }

    /// This device with `tuning` as its record.
    pub fn with_tuning(mut self, tuning: Tuning) -> GpuDevice {
        self.tuning = tuning;
        self
    }

    /// The device's tuning record: what `rocmforge.ops` calls run with, and what a model
    /// starts from.
    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// Run `f`, which queues work (or allocates, frees, synchronizes), once no other thread
    /// is capturing a graph on this device.
    fn queue<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.capturing_thread.load(Ordering::Acquire) == thread_token() {
            return f(); // this thread is the one capturing: its work is what is recorded
        }
        let _gate = self
            .capture_gate
            .read()
            .map_err(|_| Error::runtime("GPU capture gate poisoned"))?;
        f()
    }

    pub fn runtime(&self) -> &dyn GpuRuntime {
        self.rt.as_ref()
    }

    /// Whether the tensor-core kernels run on AMD matrix cores here (an AMD GPU with them, or
    /// the emulation of one: its arch is the target it emulates; `kernels::amd_matrix_cores`).
    pub fn amd_matrix_cores(&self) -> bool {
        matches!(self.rt.backend(), "hip" | "emulator")
            && super::kernels::amd_matrix_cores(&self.rt.props().arch)
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

    /// The name of the kernel launched last (tests: which form a launcher chose).
    pub fn last_kernel_name(&self) -> String {
        self.last_kernel
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
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
        self.queue(|| self.rt.synchronize())
            .map_err(|e| in_op(self.context_of_async_error(e), op))
    }

    /// Device time of the work `work` queues, in milliseconds (device events).
    pub fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f32> {
        self.queue(|| self.rt.time_ms(work))
    }

    // ------------------------------------------------------------------------------- graphs

    /// Whether `capture` can record graphs on this device (not in the CPU emulation).
    pub fn supports_graphs(&self) -> bool {
        self.rt.supports_graphs()
    }

    /// Record the work `work` queues into a graph instead of running it; `None` where the
    /// runtime has no graphs. `work` must not allocate, free, synchronize or copy from or to
    /// the host (the runtime rejects that during a capture, and the capture then fails), and
    /// every buffer it uses must stay allocated and in place while the graph lives: so it
    /// takes temporaries from a `Workspace` of its owner, not from the shared scratch (which
    /// other work may move; asking for it while capturing is an error).
    pub fn capture(
        self: &Arc<Self>,
        op: &str,
        work: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<GpuGraph>> {
        if !self.rt.supports_graphs() {
            return Ok(None);
        }
        let _gate = self
            .capture_gate
            .write()
            .map_err(|_| Error::runtime("GPU capture gate poisoned"))?;
        self.rt.begin_capture().map_err(|e| in_op(e, op))?;
        self.capturing_thread
            .store(thread_token(), Ordering::Release);
        let recorded = work();
        self.capturing_thread.store(0, Ordering::Release);
        let ended = self.rt.end_capture(); // always ends the capture
        let raw = match (recorded, ended) {
            (Ok(()), Ok(raw)) => raw,
            (Err(e), Ok(raw)) => {
                unsafe {
                    let _ = self.rt.destroy_graph(raw);
                }
                return Err(in_op(e, op));
            }
            (Err(e), Err(_)) | (Ok(()), Err(e)) => return Err(in_op(e, op)),
        };
        Ok(Some(GpuGraph {
            dev: self.clone(),
            raw,
        }))
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
        // The device-wide `overlap` field decides (a launch attribute, not a kernel choice).
        let overlap = kernel.overlaps && self.tuning.overlap;
        let mut slots: Vec<u64> = args.iter().map(|a| a.slot()).collect();
        // (the runtime only reads through these pointers)
        let mut ptrs: Vec<*mut c_void> = slots
            .iter_mut()
            .zip(args)
            .map(|(s, a)| match a {
                Arg::Struct(bytes) => bytes.words.as_ptr() as *mut c_void,
                _ => s as *mut u64 as *mut c_void,
            })
            .collect();
        self.queue(|| unsafe {
            self.rt
                .launch(f, grid, block, shared_bytes, &mut ptrs, overlap)
        })
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
        if self.capturing_thread.load(Ordering::Acquire) == thread_token() {
            return Err(Error::runtime(format!(
                "{op}: the shared GPU scratch may not be recorded into a graph (use a Workspace)"
            )));
        }
        let mut guard = self
            .scratch
            .lock()
            .map_err(|_| Error::runtime("GPU scratch poisoned"))?;
        if guard.1 < bytes {
            if guard.1 > 0 {
                self.queue(|| unsafe { self.rt.free(guard.0) })
                    .map_err(|e| in_op(e, op))?;
                self.count_free(guard.1);
                *guard = (0, 0);
            }
            let want = bytes.next_power_of_two().max(1 << 20);
            let ptr = self
                .queue(|| self.rt.alloc(want))
                .map_err(|e| in_op(e, op))?;
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

/// Device memory of a launcher's temporaries (split-key partials, argmax partials) that one
/// owner keeps, instead of the device's shared scratch: a recorded graph then refers to memory
/// nobody else moves. It only grows (never while capturing), and counts each move.
pub struct Workspace {
    dev: Arc<GpuDevice>,
    buf: Mutex<Option<DeviceBuffer>>,
    moves: AtomicU64,
}

impl Workspace {
    /// An empty workspace on `dev` (nothing allocated yet).
    pub fn new(dev: &Arc<GpuDevice>) -> Workspace {
        Workspace {
            dev: dev.clone(),
            buf: Mutex::new(None),
            moves: AtomicU64::new(0),
        }
    }

    /// The address of at least `bytes` of it, growing it if needed (which moves it).
    pub fn ptr(&self, bytes: usize, op: &str) -> Result<DevicePtr> {
        let mut buf = self
            .buf
            .lock()
            .map_err(|_| Error::runtime("GPU workspace poisoned"))?;
        if buf.as_ref().is_none_or(|b| b.bytes() < bytes) {
            *buf = None; // free the old one first
            *buf = Some(DeviceBuffer::alloc(&self.dev, bytes.max(256), op)?);
            self.moves.fetch_add(1, Ordering::AcqRel);
        }
        Ok(buf.as_ref().map(|b| b.ptr()).unwrap_or(0))
    }

    /// How many times it moved (a graph recorded before a move is stale).
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Acquire)
    }
}

/// Where a launcher takes its temporary device memory from.
#[derive(Clone, Copy)]
pub enum Temp<'a> {
    /// The device's shared scratch.
    Shared,
    /// A workspace of the caller's own (needed for work recorded into a graph).
    Own(&'a Workspace),
}

impl Temp<'_> {
    /// Run `f` with the address of at least `bytes` of temporary memory.
    pub fn with<T>(
        self,
        dev: &GpuDevice,
        bytes: usize,
        op: &str,
        f: impl FnOnce(DevicePtr) -> Result<T>,
    ) -> Result<T> {
        match self {
            Temp::Shared => {
                let scratch = dev.scratch(bytes, op)?;
                f(scratch.ptr())
            }
            Temp::Own(w) => f(w.ptr(bytes, op)?),
        }
    }
}

/// An instantiated graph recorded by `GpuDevice::capture`, destroyed on drop. It replays
/// kernels with the buffer addresses and arguments they had when recorded: the owner keeps
/// those buffers alive and in place.
pub struct GpuGraph {
    dev: Arc<GpuDevice>,
    raw: RawGraph,
}

impl GpuGraph {
    /// Queue one replay.
    pub fn launch(&self, op: &str) -> Result<()> {
        self.dev
            .queue(|| unsafe { self.dev.rt.launch_graph(self.raw) })
            .map_err(|e| in_op(e, op))
    }
}

impl Drop for GpuGraph {
    fn drop(&mut self) {
        let _ = self
            .dev
            .queue(|| unsafe { self.dev.rt.destroy_graph(self.raw) });
    }
}

impl std::fmt::Debug for GpuGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuGraph(on GPU {})", self.dev.index)
    }
}

/// A host buffer that device bytes are copied into without waiting for later work: `queue`
/// puts the copy on the queue, `finish` waits for that copy only (page-locked memory and an
/// event where the runtime has them). Freed on drop.
pub struct ReadSlot {
    dev: Arc<GpuDevice>,
    raw: RawReadSlot,
}

impl ReadSlot {
    pub fn new(dev: &Arc<GpuDevice>, bytes: usize, op: &str) -> Result<ReadSlot> {
        let raw = dev
            .queue(|| dev.rt.new_read_slot(bytes.max(1)))
            .map_err(|e| in_op(e, op))?;
        Ok(ReadSlot {
            dev: dev.clone(),
            raw,
        })
    }

    /// Queue a copy of the slot's bytes from `src` at `byte_offset`, after the work queued so
    /// far. The caller does not queue another into this slot before `finish`.
    pub fn queue(&mut self, src: &DeviceBuffer, byte_offset: usize, op: &str) -> Result<()> {
        src.check_len(byte_offset.saturating_add(self.raw.bytes), op)?;
        let (dev, raw) = (&self.dev, self.raw);
        let at = src.ptr() + byte_offset as u64;
        dev.queue(|| unsafe { dev.rt.queue_read(raw, at) })
            .map_err(|e| in_op(dev.context_of_async_error(e), op))
    }

    /// Wait for the copy `queue` put on the queue (not for work queued after it) and return
    /// its first `out` bytes. Only after a `queue`.
    pub fn finish<T: Plain>(&mut self, out: &mut [T], op: &str) -> Result<()> {
        let bytes = as_bytes_mut(out);
        if bytes.len() > self.raw.bytes {
            return Err(Error::invalid(format!(
                "{op}: {} bytes asked of a {}-byte read",
                bytes.len(),
                self.raw.bytes
            )));
        }
        let (dev, raw) = (&self.dev, self.raw);
        dev.queue(|| unsafe { dev.rt.wait_read(raw) })
            .map_err(|e| in_op(dev.context_of_async_error(e), op))?;
        // SAFETY: the slot holds raw.bytes >= bytes.len() bytes, written by the finished copy.
        let host = unsafe { std::slice::from_raw_parts(raw.host as *const u8, bytes.len()) };
        bytes.copy_from_slice(host);
        Ok(())
    }
}

impl Drop for ReadSlot {
    fn drop(&mut self) {
        // A queued copy still writing into the slot would outlive it: wait for all work first.
        let _ = self.dev.queue(|| {
            self.dev.rt.synchronize()?;
            unsafe { self.dev.rt.free_read_slot(self.raw) }
        });
    }
}

impl std::fmt::Debug for ReadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ReadSlot({} bytes on GPU {})",
            self.raw.bytes, self.dev.index
        )
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
            let ptr = dev
                .queue(|| dev.rt.alloc(bytes))
                .map_err(|e| in_op(e, op))?;
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
            dev.queue(|| unsafe { dev.rt.memset_zero(buf.ptr, bytes) })
                .map_err(|e| in_op(e, op))?;
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
            dev.queue(|| unsafe { dev.rt.copy_htod(buf.ptr, bytes) })
                .map_err(|e| in_op(e, op))?;
        }
        Ok(buf)
    }

    /// Overwrite the first `size_of_val(data)` bytes.
    pub fn write<T: Plain>(&mut self, data: &[T], op: &str) -> Result<()> {
        let bytes = as_bytes(data);
        self.check_len(bytes.len(), op)?;
        if !bytes.is_empty() {
            let dev = &self.dev;
            dev.queue(|| unsafe { dev.rt.copy_htod(self.ptr, bytes) })
                .map_err(|e| in_op(e, op))?;
        }
        Ok(())
    }

    /// Copy the first `out.len()` elements to the host (waits for queued work).
    pub fn read<T: Plain>(&self, out: &mut [T], op: &str) -> Result<()> {
        self.read_at(0, out, op)
    }

    /// Copy `out.len()` elements starting `byte_offset` bytes into the buffer to the host
    /// (waits for queued work).
    pub fn read_at<T: Plain>(&self, byte_offset: usize, out: &mut [T], op: &str) -> Result<()> {
        let bytes = as_bytes_mut(out);
        self.check_len(byte_offset.saturating_add(bytes.len()), op)?;
        if !bytes.is_empty() {
            let (dev, src) = (&self.dev, self.ptr + byte_offset as u64);
            dev.queue(|| unsafe { dev.rt.copy_dtoh(bytes, src) })
                .map_err(|e| in_op(dev.context_of_async_error(e), op))?;
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
            let (dev, dst) = (&self.dev, self.ptr + dst_off as u64);
            dev.queue(|| unsafe { dev.rt.copy_dtod(dst, src.ptr + src_off as u64, bytes) })
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
            let dev = &self.dev;
            let _ = dev.queue(|| unsafe { dev.rt.free(self.ptr) });
            dev.count_free(self.bytes);
        }
    }
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
