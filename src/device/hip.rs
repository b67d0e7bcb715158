//! AMD: the HIP runtime through hip-runtime-sys (bindings generated from the building
//! machine's ROCm headers), and hipRTC, which hip-runtime-sys does not bind: the few functions
//! used are declared here and loaded at run time (libhiprtc on ROCm 6+, libamdhip64 on ROCm 5).
//!
//! All work goes, in order, to one non-blocking stream of the runtime's own, which can be
//! captured into a HIP graph.
//!
//! Kernels come from the code objects build.rs precompiled for `ROCMFORGE_GPU_TARGETS` when
//! one matches the device, else from hipRTC for the device's exact `gcnArchName`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use hip_runtime_sys as sys;

use super::runtime::{
    DeviceProps, DevicePtr, GpuRuntime, RawFunction, RawGraph, RawModule, RawReadSlot,
};
use super::source;
use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/precompiled.rs"));

#[cfg(not(rocm_r0600))]
use sys::{hipDeviceProp_t as HipDeviceProp, hipGetDeviceProperties as hip_get_device_properties};
#[cfg(rocm_r0600)]
use sys::{
    hipDeviceProp_tR0600 as HipDeviceProp, hipGetDevicePropertiesR0600 as hip_get_device_properties,
};

fn check(call: &str, e: sys::hipError_t) -> Result<()> {
    if e == sys::hipError_t::hipSuccess {
        return Ok(());
    }
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let (name, desc) = unsafe {
        (
            text(sys::hipGetErrorName(e)),
            text(sys::hipGetErrorString(e)),
        )
    };
    Err(Error::device(format!("{call} failed: {name} ({desc})")))
}

/// Number of HIP devices (0 when the runtime finds none).
pub fn device_count() -> usize {
    let mut n: c_int = 0;
    match unsafe { sys::hipGetDeviceCount(&mut n) } {
        sys::hipError_t::hipSuccess => n.max(0) as usize,
        _ => 0,
    }
}

// ----------------------------------------------------------------------------------- hipRTC

type HiprtcProgram = *mut c_void;
type HiprtcResult = c_int; // HIPRTC_SUCCESS = 0

type CreateFn = unsafe extern "C" fn(
    *mut HiprtcProgram,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> HiprtcResult;
type CompileFn = unsafe extern "C" fn(HiprtcProgram, c_int, *const *const c_char) -> HiprtcResult;
type SizeFn = unsafe extern "C" fn(HiprtcProgram, *mut usize) -> HiprtcResult;
type BytesFn = unsafe extern "C" fn(HiprtcProgram, *mut c_char) -> HiprtcResult;
type DestroyFn = unsafe extern "C" fn(*mut HiprtcProgram) -> HiprtcResult;

struct Hiprtc {
    _lib: libloading::Library,
    create: CreateFn,
    compile: CompileFn,
    log_size: SizeFn,
    log: BytesFn,
    code_size: SizeFn,
    code: BytesFn,
    destroy: DestroyFn,
}

/// A function of `lib` by name, typed by the caller.
unsafe fn symbol<T: Copy>(lib: &libloading::Library, name: &[u8]) -> Option<T> {
    lib.get::<T>(name).ok().map(|s| *s)
}

fn load_hiprtc(lib: libloading::Library) -> Option<Hiprtc> {
    unsafe {
        Some(Hiprtc {
            create: symbol(&lib, b"hiprtcCreateProgram")?,
            compile: symbol(&lib, b"hiprtcCompileProgram")?,
            log_size: symbol(&lib, b"hiprtcGetProgramLogSize")?,
            log: symbol(&lib, b"hiprtcGetProgramLog")?,
            code_size: symbol(&lib, b"hiprtcGetCodeSize")?,
            code: symbol(&lib, b"hiprtcGetCode")?,
            destroy: symbol(&lib, b"hiprtcDestroyProgram")?,
            _lib: lib,
        })
    }
}

fn hiprtc() -> Result<&'static Hiprtc> {
    static RTC: std::sync::OnceLock<std::result::Result<Hiprtc, String>> =
        std::sync::OnceLock::new();
    RTC.get_or_init(|| {
        // hipRTC has its own library from ROCm 6 on; ROCm 5 keeps it in libamdhip64.
        let names = [
            "libhiprtc.so",
            "libhiprtc.so.7",
            "libhiprtc.so.6",
            "libamdhip64.so",
            "libamdhip64.so.5",
        ];
        names
            .iter()
            .filter_map(|name| unsafe { libloading::Library::new(*name) }.ok())
            .find_map(load_hiprtc)
            .ok_or_else(|| {
                format!(
                    "hipRTC was not found (tried {names:?}); install ROCm's hiprtc, or build with \
                     ROCMFORGE_GPU_TARGETS set"
                )
            })
    })
    .as_ref()
    .map_err(|e| Error::device(e.clone()))
}

fn hiprtc_compile(name: &str, src: &str, arch: &str) -> Result<Vec<u8>> {
    let rtc = hiprtc()?;
    let csrc = CString::new(src).map_err(|_| Error::runtime("kernel source holds a NUL byte"))?;
    let cname = CString::new(name).map_err(|_| Error::runtime("kernel name holds a NUL byte"))?;
    let opts: Vec<CString> = source::hiprtc_options(arch)
        .into_iter()
        .map(|o| CString::new(o).unwrap())
        .collect();
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    unsafe {
        let mut prog: HiprtcProgram = std::ptr::null_mut();
        if (rtc.create)(
            &mut prog,
            csrc.as_ptr(),
            cname.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        ) != 0
        {
            return Err(Error::device(format!("hiprtcCreateProgram({name}) failed")));
        }
        let compiled = (rtc.compile)(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr());
        let mut log_len = 0usize;
        let mut log = String::new();
        if (rtc.log_size)(prog, &mut log_len) == 0 && log_len > 1 {
            let mut buf = vec![0u8; log_len];
            if (rtc.log)(prog, buf.as_mut_ptr() as *mut c_char) == 0 {
                log = String::from_utf8_lossy(&buf[..log_len - 1]).into_owned();
            }
        }
        let result = if compiled != 0 {
            Err(Error::device(format!(
                "hipRTC could not compile {name} for {arch} (error {compiled}):\n{log}"
            )))
        } else {
            let mut size = 0usize;
            if (rtc.code_size)(prog, &mut size) != 0 {
                Err(Error::device(format!("hiprtcGetCodeSize({name}) failed")))
            } else {
                let mut code = vec![0u8; size];
                if (rtc.code)(prog, code.as_mut_ptr() as *mut c_char) != 0 {
                    Err(Error::device(format!("hiprtcGetCode({name}) failed")))
                } else {
                    Ok(code)
                }
            }
        };
        (rtc.destroy)(&mut prog);
        result
    }
}

// ---------------------------------------------------------------------------------- runtime

pub struct HipRuntime {
    ordinal: c_int,
    /// hipStream_t: the queue of all work of this runtime.
    stream: usize,
    props: DeviceProps,
}

impl HipRuntime {
    pub fn new(ordinal: usize) -> Result<HipRuntime> {
        let ordinal = ordinal as c_int;
        unsafe {
            check("hipSetDevice", sys::hipSetDevice(ordinal))?;
            let mut p: HipDeviceProp = std::mem::zeroed();
            check(
                "hipGetDeviceProperties",
                hip_get_device_properties(&mut p, ordinal),
            )?;
            let cstr = |a: &[c_char]| {
                let bytes: Vec<u8> = a
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            };
            // "gfx90a:sramecc+:xnack-" -> "gfx90a"
            let arch = cstr(&p.gcnArchName)
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            let mut optin: c_int = 0;
            let optin_ok = sys::hipDeviceGetAttribute(
                &mut optin,
                sys::hipDeviceAttribute_t::hipDeviceAttributeSharedMemPerBlockOptin,
                ordinal,
            ) == sys::hipError_t::hipSuccess;
            let props = DeviceProps {
                name: cstr(&p.name),
                arch,
                warp_size: p.warpSize as u32,
                multiprocessors: p.multiProcessorCount as u32,
                max_shared_per_block: if optin_ok && optin > 0 {
                    optin as usize
                } else {
                    p.sharedMemPerBlock
                },
                total_memory: p.totalGlobalMem as u64,
            };
            let mut stream: sys::hipStream_t = std::ptr::null_mut();
            check(
                "hipStreamCreateWithFlags",
                sys::hipStreamCreateWithFlags(&mut stream, sys::hipStreamNonBlocking),
            )?;
            Ok(HipRuntime {
                ordinal,
                stream: stream as usize,
                props,
            })
        }
    }

    fn bind(&self) -> Result<()> {
        check("hipSetDevice", unsafe { sys::hipSetDevice(self.ordinal) })
    }

    fn stream(&self) -> sys::hipStream_t {
        self.stream as sys::hipStream_t
    }

    fn sync_stream(&self) -> Result<()> {
        check("hipStreamSynchronize", unsafe {
            sys::hipStreamSynchronize(self.stream())
        })
    }

    /// A copy queued on the stream.
    unsafe fn copy_async(
        &self,
        what: &str,
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        kind: sys::hipMemcpyKind,
    ) -> Result<()> {
        self.bind()?;
        check(
            &format!("hipMemcpyAsync({what}, {bytes} bytes)"),
            sys::hipMemcpyAsync(dst, src, bytes, kind, self.stream()),
        )
    }
}

impl Drop for HipRuntime {
    fn drop(&mut self) {
        unsafe {
            if self.bind().is_ok() {
                sys::hipStreamSynchronize(self.stream());
                sys::hipStreamDestroy(self.stream());
            }
        }
    }
}

impl GpuRuntime for HipRuntime {
    fn backend(&self) -> &'static str {
        "hip"
    }

    fn props(&self) -> &DeviceProps {
        &self.props
    }

    fn compiler_id(&self) -> Result<String> {
        let mut v: c_int = 0;
        check("hipRuntimeGetVersion", unsafe {
            sys::hipRuntimeGetVersion(&mut v)
        })?;
        Ok(format!("hiprtc (HIP runtime {v})"))
    }

    fn mem_info(&self) -> Result<(u64, u64)> {
        self.bind()?;
        let (mut free, mut total) = (0usize, 0usize);
        check("hipMemGetInfo", unsafe {
            sys::hipMemGetInfo(&mut free, &mut total)
        })?;
        Ok((free as u64, total as u64))
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        self.bind()?;
        let mut p: *mut c_void = std::ptr::null_mut();
        match unsafe { sys::hipMalloc(&mut p, bytes) } {
            sys::hipError_t::hipSuccess => Ok(p as DevicePtr),
            sys::hipError_t::hipErrorOutOfMemory => {
                let free = self.mem_info().map(|m| m.0).unwrap_or(0);
                Err(Error::OutOfMemory {
                    what: "hipMalloc".into(),
                    needed: bytes as u64,
                    free,
                })
            }
            e => check(&format!("hipMalloc({bytes} bytes)"), e).map(|_| 0),
        }
    }

    unsafe fn free(&self, ptr: DevicePtr) -> Result<()> {
        self.bind()?;
        check("hipFree", sys::hipFree(ptr as *mut c_void))
    }

    // Host copies are queued on the stream and waited for: the host slice is only borrowed.
    unsafe fn copy_htod(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        let kind = sys::hipMemcpyKind::hipMemcpyHostToDevice;
        let (d, s) = (dst as *mut c_void, src.as_ptr() as *const c_void);
        self.copy_async("host to device", d, s, src.len(), kind)?;
        self.sync_stream()
    }

    unsafe fn copy_dtoh(&self, dst: &mut [u8], src: DevicePtr) -> Result<()> {
        let kind = sys::hipMemcpyKind::hipMemcpyDeviceToHost;
        let (d, s) = (dst.as_mut_ptr() as *mut c_void, src as *const c_void);
        self.copy_async("device to host", d, s, dst.len(), kind)?;
        self.sync_stream()
    }

    unsafe fn copy_dtod(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<()> {
        let kind = sys::hipMemcpyKind::hipMemcpyDeviceToDevice;
        let (d, s) = (dst as *mut c_void, src as *const c_void);
        self.copy_async("device to device", d, s, bytes, kind)
    }

    unsafe fn memset_zero(&self, dst: DevicePtr, bytes: usize) -> Result<()> {
        self.bind()?;
        check(
            &format!("hipMemsetAsync({bytes} bytes)"),
            sys::hipMemsetAsync(dst as *mut c_void, 0, bytes, self.stream()),
        )
    }

    fn compile(&self, name: &str, src: &str) -> Result<Vec<u8>> {
        hiprtc_compile(name, src, &self.props.arch)
    }

    fn precompiled(&self, file: &str) -> Option<&'static [u8]> {
        PRECOMPILED
            .iter()
            .find(|(f, arch, _)| *f == file && *arch == self.props.arch)
            .map(|(_, _, image)| *image)
    }

    fn load_module(&self, image: &[u8]) -> Result<RawModule> {
        self.bind()?;
        let mut m: sys::hipModule_t = std::ptr::null_mut();
        check("hipModuleLoadData", unsafe {
            sys::hipModuleLoadData(&mut m, image.as_ptr() as *const c_void)
        })?;
        Ok(RawModule(m as usize))
    }

    fn get_function(&self, module: RawModule, name: &str) -> Result<RawFunction> {
        self.bind()?;
        let cname =
            CString::new(name).map_err(|_| Error::runtime("kernel name holds a NUL byte"))?;
        let mut f: sys::hipFunction_t = std::ptr::null_mut();
        check(&format!("hipModuleGetFunction({name})"), unsafe {
            sys::hipModuleGetFunction(&mut f, module.0 as sys::hipModule_t, cname.as_ptr())
        })?;
        Ok(RawFunction(f as usize))
    }

    fn set_max_dynamic_shared(&self, _f: RawFunction, bytes: usize) -> Result<()> {
        // AMD needs no opt-in: a block may use up to the LDS size.
        if bytes > self.props.max_shared_per_block {
            return Err(Error::device(format!(
                "{bytes} bytes of shared memory requested, the device allows {}",
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
        shared_bytes: u32,
        args: &mut [*mut c_void],
        _overlap: bool, // no programmatic dependent launch on HIP: kernels run one after another
    ) -> Result<()> {
        self.bind()?;
        check(
            "hipModuleLaunchKernel",
            sys::hipModuleLaunchKernel(
                f.0 as sys::hipFunction_t,
                grid[0],
                grid[1],
                grid[2],
                block[0],
                block[1],
                block[2],
                shared_bytes,
                self.stream(),
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
        )
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.sync_stream()
    }

    fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f32> {
        self.bind()?;
        unsafe {
            let (mut start, mut end): (sys::hipEvent_t, sys::hipEvent_t) =
                (std::ptr::null_mut(), std::ptr::null_mut());
            check("hipEventCreate", sys::hipEventCreate(&mut start))?;
            if let Err(e) = check("hipEventCreate", sys::hipEventCreate(&mut end)) {
                sys::hipEventDestroy(start);
                return Err(e);
            }
            let result = (|| {
                check("hipEventRecord", sys::hipEventRecord(start, self.stream()))?;
                work()?;
                check("hipEventRecord", sys::hipEventRecord(end, self.stream()))?;
                check("hipEventSynchronize", sys::hipEventSynchronize(end))?;
                let mut ms = 0f32;
                check(
                    "hipEventElapsedTime",
                    sys::hipEventElapsedTime(&mut ms, start, end),
                )?;
                Ok(ms)
            })();
            sys::hipEventDestroy(start);
            sys::hipEventDestroy(end);
            result
        }
    }

    fn supports_graphs(&self) -> bool {
        true
    }

    fn begin_capture(&self) -> Result<()> {
        self.bind()?;
        let mode = sys::hipStreamCaptureMode::hipStreamCaptureModeThreadLocal;
        check("hipStreamBeginCapture", unsafe {
            sys::hipStreamBeginCapture(self.stream(), mode)
        })
    }

    fn end_capture(&self) -> Result<RawGraph> {
        self.bind()?;
        let mut graph: sys::hipGraph_t = std::ptr::null_mut();
        check("hipStreamEndCapture", unsafe {
            sys::hipStreamEndCapture(self.stream(), &mut graph)
        })?;
        if graph.is_null() {
            return Err(Error::device("hipStreamEndCapture returned no graph"));
        }
        let mut exec: sys::hipGraphExec_t = std::ptr::null_mut();
        let instantiated = check("hipGraphInstantiate", unsafe {
            sys::hipGraphInstantiate(
                &mut exec,
                graph,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        });
        unsafe {
            sys::hipGraphDestroy(graph); // the instance does not need its template
        }
        instantiated.map(|_| RawGraph(exec as usize))
    }

    unsafe fn launch_graph(&self, graph: RawGraph) -> Result<()> {
        self.bind()?;
        check(
            "hipGraphLaunch",
            sys::hipGraphLaunch(graph.0 as sys::hipGraphExec_t, self.stream()),
        )
    }

    unsafe fn destroy_graph(&self, graph: RawGraph) -> Result<()> {
        self.bind()?;
        check(
            "hipGraphExecDestroy",
            sys::hipGraphExecDestroy(graph.0 as sys::hipGraphExec_t),
        )
    }

    // Page-locked memory, so that the copy is a DMA the host does not take part in, and an
    // event without timing that the host waits on instead of the whole stream.
    fn new_read_slot(&self, bytes: usize) -> Result<RawReadSlot> {
        self.bind()?;
        unsafe {
            let mut event: sys::hipEvent_t = std::ptr::null_mut();
            check(
                "hipEventCreateWithFlags",
                sys::hipEventCreateWithFlags(&mut event, sys::hipEventDisableTiming),
            )?;
            let mut host: *mut c_void = std::ptr::null_mut();
            if let Err(e) = check(
                &format!("hipHostMalloc({bytes} bytes)"),
                sys::hipHostMalloc(&mut host, bytes, 0),
            ) {
                sys::hipEventDestroy(event);
                return Err(e);
            }
            Ok(RawReadSlot {
                host: host as usize,
                bytes,
                event: event as usize,
            })
        }
    }

    unsafe fn queue_read(&self, slot: RawReadSlot, src: DevicePtr) -> Result<()> {
        let kind = sys::hipMemcpyKind::hipMemcpyDeviceToHost;
        let (d, s) = (slot.host as *mut c_void, src as *const c_void);
        self.copy_async("device to host", d, s, slot.bytes, kind)?;
        check(
            "hipEventRecord",
            sys::hipEventRecord(slot.event as sys::hipEvent_t, self.stream()),
        )
    }

    unsafe fn wait_read(&self, slot: RawReadSlot) -> Result<()> {
        self.bind()?;
        check(
            "hipEventSynchronize",
            sys::hipEventSynchronize(slot.event as sys::hipEvent_t),
        )
    }

    unsafe fn free_read_slot(&self, slot: RawReadSlot) -> Result<()> {
        self.bind()?;
        let a = check(
            "hipEventDestroy",
            sys::hipEventDestroy(slot.event as sys::hipEvent_t),
        );
        let b = check("hipHostFree", sys::hipHostFree(slot.host as *mut c_void));
        a.and(b)
    }
}
