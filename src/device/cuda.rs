//! NVIDIA: the CUDA driver API and NVRTC through cudarc, both loaded at run time, so a build
//! without CUDA imports fine and simply finds no device.
//!
//! One primary context per device, made current on the calling thread at every entry (Python
//! may call from any thread); all work goes, in order, to one non-blocking stream of the
//! runtime's own, which can be captured into a CUDA graph.

use std::ffi::{c_void, CString};

use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::driver::DriverError;
use cudarc::nvrtc::result as rtc;
use cudarc::nvrtc::sys as rtc_sys;

use super::runtime::{
    DeviceProps, DevicePtr, GpuRuntime, RawFunction, RawGraph, RawModule, RawReadSlot,
};
use super::source;
use crate::error::{Error, Result};

fn driver_err(call: &str, e: DriverError) -> Error {
    let name = e
        .error_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    let text = e
        .error_string()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Error::device(format!("{call} failed: {name} ({text})"))
}

/// Run `f`, turning a panic of the dynamic loader (a missing library or symbol) into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Error::device(format!("{what}: {msg}")))
        }
    }
}

/// Whether the CUDA driver library can be loaded at all.
pub fn driver_present() -> bool {
    std::panic::catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false)
}

/// Number of CUDA devices (0 when there is no driver or no device).
pub fn device_count() -> usize {
    if !driver_present() {
        return 0;
    }
    guarded("CUDA driver", || {
        cu::init().map_err(|e| driver_err("cuInit", e))?;
        cu::device::get_count().map_err(|e| driver_err("cuDeviceGetCount", e))
    })
    .map(|n| n.max(0) as usize)
    .unwrap_or(0)
}

/// Make NVRTC loadable: it is often installed outside the loader path (a CUDA toolkit under
/// CUDA_HOME / CUDA_PATH / /usr/local/cuda). Loading it by full path first lets the later
/// load by name find it.
fn ensure_nvrtc() -> Result<()> {
    static LOADED: std::sync::OnceLock<std::result::Result<(), String>> =
        std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            if std::panic::catch_unwind(|| unsafe { rtc_sys::is_culib_present() }).unwrap_or(false)
            {
                return Ok(());
            }
            let mut roots: Vec<std::path::PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
                .iter()
                .filter_map(std::env::var_os)
                .map(Into::into)
                .collect();
            roots.push("/usr/local/cuda".into());
            for root in roots {
                for dir in ["lib64", "lib"] {
                    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                        continue;
                    };
                    let mut libs: Vec<_> = entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                                n.starts_with("libnvrtc.so") && !n.contains("builtins")
                            })
                        })
                        .collect();
                    libs.sort();
                    for lib in libs.iter().rev() {
                        // Kept loaded for the life of the process.
                        if let Ok(l) = unsafe { libloading::Library::new(lib) } {
                            std::mem::forget(l);
                            if std::panic::catch_unwind(|| unsafe { rtc_sys::is_culib_present() })
                                .unwrap_or(false)
                            {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            Err(
                "NVRTC (libnvrtc) was not found: install the CUDA toolkit, or the PyPI package \
                 nvidia-cuda-nvrtc-cu12 and put its lib directory on LD_LIBRARY_PATH"
                    .to_string(),
            )
        })
        .clone()
        .map_err(Error::device)
}

/// Compile one self-contained kernel source with NVRTC for a real architecture ("sm_90"):
/// the cubin. Needs only libnvrtc, no driver or device (the CI compile gate uses it too).
pub fn nvrtc_compile(name: &str, src: &str, arch: &str) -> Result<Vec<u8>> {
    ensure_nvrtc()?;
    guarded("NVRTC", || unsafe {
        let csrc =
            CString::new(src).map_err(|_| Error::runtime("kernel source holds a NUL byte"))?;
        let cname =
            CString::new(name).map_err(|_| Error::runtime("kernel name holds a NUL byte"))?;
        let prog = rtc::create_program(&csrc, Some(&cname))
            .map_err(|e| Error::device(format!("nvrtcCreateProgram({name}) failed: {e:?}")))?;
        let compiled = rtc::compile_program(prog, &source::nvrtc_options(arch));
        let log = rtc::get_program_log(prog)
            .map(|l| {
                let bytes: Vec<u8> = l
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .unwrap_or_default();
        if let Err(e) = compiled {
            let _ = rtc::destroy_program(prog);
            return Err(Error::device(format!(
                "NVRTC could not compile {name} for {arch} ({e:?}):\n{log}"
            )));
        }
        let mut size = 0usize;
        let got = rtc_sys::nvrtcGetCUBINSize(prog, &mut size).result();
        let mut image = vec![0u8; size];
        let got =
            got.and_then(|_| rtc_sys::nvrtcGetCUBIN(prog, image.as_mut_ptr() as *mut _).result());
        let _ = rtc::destroy_program(prog);
        got.map_err(|e| Error::device(format!("nvrtcGetCUBIN({name}, {arch}) failed: {e:?}")))?;
        Ok(image)
    })
}

/// The NVRTC version, "nvrtc 12.8".
pub fn nvrtc_version() -> Result<String> {
    ensure_nvrtc()?;
    guarded("NVRTC", || {
        let (mut major, mut minor) = (0, 0);
        unsafe { rtc_sys::nvrtcVersion(&mut major, &mut minor) }
            .result()
            .map_err(|e| Error::device(format!("nvrtcVersion failed: {e:?}")))?;
        Ok(format!("nvrtc {major}.{minor}"))
    })
}

pub struct CudaRuntime {
    device: sys::CUdevice,
    ctx: usize, // sys::CUcontext, kept as an integer so the struct is Send + Sync
    /// sys::CUstream: the queue of all work of this runtime.
    stream: usize,
    props: DeviceProps,
    /// Programmatic dependent launch for `overlap` launches: compute capability 9.0 and up.
    overlap_launches: bool,
}

// The context handle is usable from any thread once made current there (`bind`).
unsafe impl Send for CudaRuntime {}
unsafe impl Sync for CudaRuntime {}

impl CudaRuntime {
    pub fn new(ordinal: usize) -> Result<CudaRuntime> {
        if !driver_present() {
            return Err(Error::device("the CUDA driver (libcuda) is not installed"));
        }
        guarded("CUDA driver", || unsafe {
            cu::init().map_err(|e| driver_err("cuInit", e))?;
            let device =
                cu::device::get(ordinal as i32).map_err(|e| driver_err("cuDeviceGet", e))?;
            let ctx = cu::primary_ctx::retain(device)
                .map_err(|e| driver_err("cuDevicePrimaryCtxRetain", e))?;
            cu::ctx::set_current(ctx).map_err(|e| driver_err("cuCtxSetCurrent", e))?;
            let attr = |a: sys::CUdevice_attribute, what: &str| {
                cu::device::get_attribute(device, a)
                    .map_err(|e| driver_err(&format!("cuDeviceGetAttribute({what})"), e))
            };
            use sys::CUdevice_attribute::*;
            let major = attr(
                CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                "compute capability",
            )?;
            let minor = attr(
                CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                "compute capability",
            )?;
            let props = DeviceProps {
                name: cu::device::get_name(device).map_err(|e| driver_err("cuDeviceGetName", e))?,
                arch: format!("sm_{major}{minor}"),
                warp_size: attr(CU_DEVICE_ATTRIBUTE_WARP_SIZE, "warp size")? as u32,
                multiprocessors: attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "multiprocessors")?
                    as u32,
                max_shared_per_block: attr(
                    CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                    "shared memory",
                )? as usize,
                total_memory: cu::device::total_mem(device)
                    .map_err(|e| driver_err("cuDeviceTotalMem", e))?
                    as u64,
            };
            let stream = cu::stream::create(cu::stream::StreamKind::NonBlocking)
                .map_err(|e| driver_err("cuStreamCreate", e))?;
            Ok(CudaRuntime {
                device,
                ctx: ctx as usize,
                stream: stream as usize,
                props,
                overlap_launches: major >= 9,
            })
        })
    }

    fn bind(&self) -> Result<()> {
        unsafe { cu::ctx::set_current(self.ctx as sys::CUcontext) }
            .map_err(|e| driver_err("cuCtxSetCurrent", e))
    }

    fn stream(&self) -> sys::CUstream {
        self.stream as sys::CUstream
    }

    fn sync_stream(&self) -> Result<()> {
        unsafe { cu::stream::synchronize(self.stream()) }
            .map_err(|e| driver_err("cuStreamSynchronize", e))
    }
}

impl Drop for CudaRuntime {
    fn drop(&mut self) {
        unsafe {
            if self.bind().is_ok() {
                let _ = cu::stream::synchronize(self.stream());
                let _ = cu::stream::destroy(self.stream());
            }
            let _ = cu::primary_ctx::release(self.device);
        }
    }
}

impl GpuRuntime for CudaRuntime {
    fn backend(&self) -> &'static str {
        "cuda"
    }

    fn props(&self) -> &DeviceProps {
        &self.props
    }

    fn compiler_id(&self) -> Result<String> {
        nvrtc_version()
    }

    fn mem_info(&self) -> Result<(u64, u64)> {
        self.bind()?;
        let (free, total) = cu::mem_get_info().map_err(|e| driver_err("cuMemGetInfo", e))?;
        Ok((free as u64, total as u64))
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        self.bind()?;
        match unsafe { cu::malloc_sync(bytes) } {
            Ok(p) => Ok(p),
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                let free = self.mem_info().map(|m| m.0).unwrap_or(0);
                Err(Error::OutOfMemory {
                    what: "cuMemAlloc".into(),
                    needed: bytes as u64,
                    free,
                })
            }
            Err(e) => Err(driver_err(&format!("cuMemAlloc({bytes} bytes)"), e)),
        }
    }

    unsafe fn free(&self, ptr: DevicePtr) -> Result<()> {
        self.bind()?;
        cu::free_sync(ptr).map_err(|e| driver_err("cuMemFree", e))
    }

    // Host copies are queued on the stream and waited for: the host slice is only borrowed.
    unsafe fn copy_htod(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        self.bind()?;
        cu::memcpy_htod_async(dst, src, self.stream())
            .map_err(|e| driver_err(&format!("cuMemcpyHtoDAsync({} bytes)", src.len()), e))?;
        self.sync_stream()
    }

    unsafe fn copy_dtoh(&self, dst: &mut [u8], src: DevicePtr) -> Result<()> {
        self.bind()?;
        let n = dst.len();
        cu::memcpy_dtoh_async(dst, src, self.stream())
            .map_err(|e| driver_err(&format!("cuMemcpyDtoHAsync({n} bytes)"), e))?;
        self.sync_stream()
    }

    unsafe fn copy_dtod(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<()> {
        self.bind()?;
        cu::memcpy_dtod_async(dst, src, bytes, self.stream())
            .map_err(|e| driver_err(&format!("cuMemcpyDtoDAsync({bytes} bytes)"), e))
    }

    unsafe fn memset_zero(&self, dst: DevicePtr, bytes: usize) -> Result<()> {
        self.bind()?;
        cu::memset_d8_async(dst, 0, bytes, self.stream())
            .map_err(|e| driver_err(&format!("cuMemsetD8Async({bytes} bytes)"), e))
    }

    fn compile(&self, name: &str, src: &str) -> Result<Vec<u8>> {
        nvrtc_compile(name, src, &self.props.arch)
    }

    fn load_module(&self, image: &[u8]) -> Result<RawModule> {
        self.bind()?;
        let m = unsafe { cu::module::load_data(image.as_ptr() as *const c_void) }
            .map_err(|e| driver_err("cuModuleLoadData", e))?;
        Ok(RawModule(m as usize))
    }

    fn get_function(&self, module: RawModule, name: &str) -> Result<RawFunction> {
        self.bind()?;
        let cname =
            CString::new(name).map_err(|_| Error::runtime("kernel name holds a NUL byte"))?;
        let f = unsafe { cu::module::get_function(module.0 as sys::CUmodule, cname) }
            .map_err(|e| driver_err(&format!("cuModuleGetFunction({name})"), e))?;
        Ok(RawFunction(f as usize))
    }

    fn set_max_dynamic_shared(&self, f: RawFunction, bytes: usize) -> Result<()> {
        self.bind()?;
        unsafe {
            cu::function::set_function_attribute(
                f.0 as sys::CUfunction,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )
        }
        .map_err(|e| {
            driver_err(
                &format!("cuFuncSetAttribute(max dynamic shared = {bytes})"),
                e,
            )
        })
    }

    unsafe fn launch(
        &self,
        f: RawFunction,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        args: &mut [*mut c_void],
        overlap: bool,
    ) -> Result<()> {
        self.bind()?;
        if overlap && self.overlap_launches {
            // Programmatic dependent launch: the kernel may start (and load its weights) while
            // the one before it finishes; it waits for it in rf_grid_wait (kernels/common.h).
            let mut attr: sys::CUlaunchAttribute = std::mem::zeroed();
            attr.id =
                sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attr.value.programmaticStreamSerializationAllowed = 1;
            let config = sys::CUlaunchConfig {
                gridDimX: grid[0],
                gridDimY: grid[1],
                gridDimZ: grid[2],
                blockDimX: block[0],
                blockDimY: block[1],
                blockDimZ: block[2],
                sharedMemBytes: shared_bytes,
                hStream: self.stream(),
                attrs: &mut attr,
                numAttrs: 1,
            };
            return sys::cuLaunchKernelEx(
                &config,
                f.0 as sys::CUfunction,
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            )
            .result()
            .map_err(|e| driver_err("cuLaunchKernelEx", e));
        }
        cu::launch_kernel(
            f.0 as sys::CUfunction,
            (grid[0], grid[1], grid[2]),
            (block[0], block[1], block[2]),
            shared_bytes,
            self.stream(),
            args,
        )
        .map_err(|e| driver_err("cuLaunchKernel", e))
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.sync_stream()
    }

    fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f32> {
        self.bind()?;
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
        let start = cu::event::create(flags).map_err(|e| driver_err("cuEventCreate", e))?;
        let end = match cu::event::create(flags) {
            Ok(e) => e,
            Err(e) => {
                unsafe {
                    let _ = cu::event::destroy(start);
                }
                return Err(driver_err("cuEventCreate", e));
            }
        };
        let result = (|| unsafe {
            cu::event::record(start, self.stream()).map_err(|e| driver_err("cuEventRecord", e))?;
            work()?;
            cu::event::record(end, self.stream()).map_err(|e| driver_err("cuEventRecord", e))?;
            cu::event::synchronize(end).map_err(|e| driver_err("cuEventSynchronize", e))?;
            cu::event::elapsed(start, end).map_err(|e| driver_err("cuEventElapsedTime", e))
        })();
        unsafe {
            let _ = cu::event::destroy(start);
            let _ = cu::event::destroy(end);
        }
        result
    }

    fn supports_graphs(&self) -> bool {
        true
    }

    fn begin_capture(&self) -> Result<()> {
        self.bind()?;
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        unsafe { sys::cuStreamBeginCapture_v2(self.stream(), mode) }
            .result()
            .map_err(|e| driver_err("cuStreamBeginCapture", e))
    }

    fn end_capture(&self) -> Result<RawGraph> {
        self.bind()?;
        let mut graph: sys::CUgraph = std::ptr::null_mut();
        unsafe { sys::cuStreamEndCapture(self.stream(), &mut graph) }
            .result()
            .map_err(|e| driver_err("cuStreamEndCapture", e))?;
        if graph.is_null() {
            return Err(Error::device("cuStreamEndCapture returned no graph"));
        }
        let exec = unsafe { cu::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) }
            .map_err(|e| driver_err("cuGraphInstantiate", e));
        unsafe {
            let _ = cu::graph::destroy(graph); // the instance does not need its template
        }
        Ok(RawGraph(exec? as usize))
    }

    unsafe fn launch_graph(&self, graph: RawGraph) -> Result<()> {
        self.bind()?;
        cu::graph::launch(graph.0 as sys::CUgraphExec, self.stream())
            .map_err(|e| driver_err("cuGraphLaunch", e))
    }

    unsafe fn destroy_graph(&self, graph: RawGraph) -> Result<()> {
        self.bind()?;
        cu::graph::exec_destroy(graph.0 as sys::CUgraphExec)
            .map_err(|e| driver_err("cuGraphExecDestroy", e))
    }

    // Page-locked memory, so that the copy is a DMA the host does not take part in, and an
    // event without timing that the host waits on instead of the whole stream.
    fn new_read_slot(&self, bytes: usize) -> Result<RawReadSlot> {
        self.bind()?;
        let flags = sys::CUevent_flags::CU_EVENT_DISABLE_TIMING;
        let event = cu::event::create(flags).map_err(|e| driver_err("cuEventCreate", e))?;
        match unsafe { cu::malloc_host(bytes, 0) } {
            Ok(host) => Ok(RawReadSlot {
                host: host as usize,
                bytes,
                event: event as usize,
            }),
            Err(e) => {
                unsafe {
                    let _ = cu::event::destroy(event);
                }
                Err(driver_err(&format!("cuMemHostAlloc({bytes} bytes)"), e))
            }
        }
    }

    unsafe fn queue_read(&self, slot: RawReadSlot, src: DevicePtr) -> Result<()> {
        self.bind()?;
        let dst = std::slice::from_raw_parts_mut(slot.host as *mut u8, slot.bytes);
        cu::memcpy_dtoh_async(dst, src, self.stream())
            .map_err(|e| driver_err(&format!("cuMemcpyDtoHAsync({} bytes)", slot.bytes), e))?;
        cu::event::record(slot.event as sys::CUevent, self.stream())
            .map_err(|e| driver_err("cuEventRecord", e))
    }

    unsafe fn wait_read(&self, slot: RawReadSlot) -> Result<()> {
        self.bind()?;
        cu::event::synchronize(slot.event as sys::CUevent)
            .map_err(|e| driver_err("cuEventSynchronize", e))
    }

    unsafe fn free_read_slot(&self, slot: RawReadSlot) -> Result<()> {
        self.bind()?;
        let a = cu::event::destroy(slot.event as sys::CUevent)
            .map_err(|e| driver_err("cuEventDestroy", e));
        let b = cu::free_host(slot.host as *mut c_void).map_err(|e| driver_err("cuMemFreeHost", e));
        a.and(b)
    }
}
