//! The interface of a GPU runtime (CUDA driver API or HIP): one device, one in-order queue.
//! The queue is a stream of the runtime's own (non-blocking, not the legacy default stream):
//! every launch, copy, memset and timing event goes to it, so that the work of a decode step
//! can be captured from it as a graph and replayed.
//!
//! Implementations check every call and turn failures into `Error::Device` (naming the call)
//! or `Error::OutOfMemory`. Raw handles are plain integers; `gpu.rs` wraps them in RAII
//! types and names the op in every error.

use std::ffi::c_void;

use crate::error::Result;

/// A device address.
pub type DevicePtr = u64;

/// A loaded module (CUmodule / hipModule_t), as an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawModule(pub usize);

/// A kernel of a loaded module (CUfunction / hipFunction_t), as an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFunction(pub usize);

/// An instantiated graph (CUgraphExec / hipGraphExec_t), as an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawGraph(pub usize);

/// A page-locked host buffer and a device event (CUevent / hipEvent_t), as integers: the
/// target of reads that are queued without waiting (`GpuRuntime::queue_read`). A runtime with
/// no such memory (the default methods) uses ordinary host memory and no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawReadSlot {
    pub host: usize,
    pub bytes: usize,
    pub event: usize,
}

/// What a runtime knows about its device.
#[derive(Clone, Debug)]
pub struct DeviceProps {
    /// "NVIDIA H100 80GB HBM3", "AMD Instinct MI210", ...
    pub name: String,
    /// Compile target: "sm_90", "gfx90a", ...
    pub arch: String,
    pub warp_size: u32,
    pub multiprocessors: u32,
    /// Shared memory a block may use once opted in (bytes).
    pub max_shared_per_block: usize,
    pub total_memory: u64,
}

pub trait GpuRuntime: Send + Sync {
    /// "cuda" or "hip".
    fn backend(&self) -> &'static str;
    fn props(&self) -> &DeviceProps;
    /// Identifies the run-time compiler ("nvrtc 12.8"), part of the kernel cache key.
    fn compiler_id(&self) -> Result<String>;
    /// (free, total) device memory in bytes.
    fn mem_info(&self) -> Result<(u64, u64)>;

    /// `bytes` of device memory (bytes > 0). Out of memory is `Error::OutOfMemory`.
    fn alloc(&self, bytes: usize) -> Result<DevicePtr>;
    /// # Safety
    /// `ptr` came from `alloc` of this runtime and is not used afterwards.
    unsafe fn free(&self, ptr: DevicePtr) -> Result<()>;
    /// # Safety
    /// `dst .. dst + src.len()` lies inside one allocation of this runtime.
    unsafe fn copy_htod(&self, dst: DevicePtr, src: &[u8]) -> Result<()>;
    /// Waits for queued work, then copies.
    /// # Safety
    /// `src .. src + dst.len()` lies inside one allocation of this runtime.
    unsafe fn copy_dtoh(&self, dst: &mut [u8], src: DevicePtr) -> Result<()>;
    /// # Safety
    /// Both ranges lie inside allocations of this runtime.
    unsafe fn copy_dtod(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<()>;
    /// # Safety
    /// `dst .. dst + bytes` lies inside one allocation of this runtime.
    unsafe fn memset_zero(&self, dst: DevicePtr, bytes: usize) -> Result<()>;

    /// Compile one self-contained source for this device; returns the loadable image.
    fn compile(&self, name: &str, source: &str) -> Result<Vec<u8>>;
    /// Whether compiled images may be kept in the on-disk cache.
    fn cacheable(&self) -> bool {
        true
    }
    /// A precompiled image of kernel file `file` for this device, if the build made one.
    fn precompiled(&self, _file: &str) -> Option<&'static [u8]> {
        None
    }
    fn load_module(&self, image: &[u8]) -> Result<RawModule>;
    fn get_function(&self, module: RawModule, name: &str) -> Result<RawFunction>;
    /// Allow `f` to be launched with `bytes` of dynamic shared memory.
    fn set_max_dynamic_shared(&self, f: RawFunction, bytes: usize) -> Result<()>;
    /// Queue a kernel. With `overlap` (a kernel that calls `rf_grid_wait` before touching what
    /// earlier kernels write or read: `Kernel::overlaps`), a runtime that has programmatic
    /// dependent launch may start it while the kernel before it still runs (kernels/common.h).
    /// # Safety
    /// `args` point to values matching the kernel's parameters, and every device address
    /// among them is valid for what the kernel touches.
    unsafe fn launch(
        &self,
        f: RawFunction,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        args: &mut [*mut c_void],
        overlap: bool,
    ) -> Result<()>;
    /// Wait for all queued work.
    fn synchronize(&self) -> Result<()>;
    /// Milliseconds of device time taken by the work `work` queues (device events).
    fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f32>;

    /// Whether this runtime can capture its queue into a graph.
    fn supports_graphs(&self) -> bool {
        false
    }
    /// Start recording the queue instead of running it (thread-local mode: this thread may
    /// make no call that allocates, frees or synchronizes until `end_capture`). Launches,
    /// device-to-device copies and memsets are recorded; host copies are not allowed.
    fn begin_capture(&self) -> Result<()> {
        Err(crate::error::Error::unsupported(
            "this GPU runtime has no graph capture",
        ))
    }
    /// Stop recording and instantiate what was recorded. Always ends the capture, also when
    /// the recording failed (then the error comes back and nothing is kept).
    fn end_capture(&self) -> Result<RawGraph> {
        Err(crate::error::Error::unsupported(
            "this GPU runtime has no graph capture",
        ))
    }
    /// Queue one replay of `graph`.
    /// # Safety
    /// `graph` came from `end_capture` of this runtime and is not destroyed; every buffer it
    /// recorded is still allocated.
    unsafe fn launch_graph(&self, _graph: RawGraph) -> Result<()> {
        Err(crate::error::Error::unsupported(
            "this GPU runtime has no graph capture",
        ))
    }
    /// # Safety
    /// `graph` came from `end_capture` of this runtime and is not used afterwards.
    unsafe fn destroy_graph(&self, _graph: RawGraph) -> Result<()> {
        Ok(())
    }

    /// A host buffer of `bytes` (> 0) for `queue_read`. The default: ordinary host memory,
    /// for runtimes whose `queue_read` waits (it then is a `copy_dtoh`).
    fn new_read_slot(&self, bytes: usize) -> Result<RawReadSlot> {
        let host = Box::into_raw(vec![0u8; bytes].into_boxed_slice()) as *mut u8 as usize;
        Ok(RawReadSlot {
            host,
            bytes,
            event: 0,
        })
    }
    /// Queue a copy of `slot.bytes` bytes at `src` into the slot, after the work queued so
    /// far, and return without waiting for it: work queued later may run before
    /// `wait_read` waits for this copy only.
    /// # Safety
    /// `slot` came from `new_read_slot` of this runtime and no read into it is unfinished;
    /// `src .. src + slot.bytes` lies inside one allocation of this runtime.
    unsafe fn queue_read(&self, slot: RawReadSlot, src: DevicePtr) -> Result<()> {
        let dst = std::slice::from_raw_parts_mut(slot.host as *mut u8, slot.bytes);
        self.copy_dtoh(dst, src)
    }
    /// Wait for the slot's queued read (only it, not for work queued after it); its bytes are
    /// then at `slot.host`. The default: nothing to wait for (`queue_read` waited).
    /// # Safety
    /// `slot` came from `new_read_slot` of this runtime and has a read queued.
    unsafe fn wait_read(&self, _slot: RawReadSlot) -> Result<()> {
        Ok(())
    }
    /// # Safety
    /// `slot` came from `new_read_slot` of this runtime, has no unfinished read and is not
    /// used afterwards.
    unsafe fn free_read_slot(&self, slot: RawReadSlot) -> Result<()> {
        let p = std::ptr::slice_from_raw_parts_mut(slot.host as *mut u8, slot.bytes);
        drop(Box::from_raw(p));
        Ok(())
    }
}
