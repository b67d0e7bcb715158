//! A TEST FIXTURE: the HIP runtime and hipRTC entry points rocmforge's `src/device/hip.rs`
//! calls, with AMD's C signatures and struct layouts (hip-runtime-sys, bindgen on the same
//! ROCm headers as the `rocm` build), implemented on the CUDA driver API and NVRTC (cudarc,
//! loaded at run time). Put first on LD_LIBRARY_PATH as libamdhip64.so.5 (and libhiprtc.so),
//! it lets the `rocm` build of rocmforge run its GPU tests on an NVIDIA GPU with no ROCm.
//!
//! What it reports: the device's CUDA name and sizes, warpSize 32, and `gcnArchName` =
//! "sm_XY" (the CUDA compute capability): no AMD-specific path (matrix cores, precompiled
//! gfx code objects) matches it, and hipRTC (here NVRTC) compiles the kernel sources as the
//! NVIDIA sources they are (kernels/common.h takes its RF_CUDA branch: no `__HIP__`).
//!
//! Every entry point catches panics (cudarc panics on a missing symbol) and runs on the
//! thread's current CUDA context, making the current device's primary context current when
//! the thread has none (HIP calls work from any host thread).

#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

use cudarc::driver::sys as cu;
use cudarc::nvrtc::sys as nv;
use hip_runtime_sys as hip;

use cu::CUdevice_attribute as A;
use hip::hipError_t as E;

#[cfg(not(rocm_r0600))]
use hip::hipDeviceProp_t as HipDeviceProp;
#[cfg(rocm_r0600)]
use hip::hipDeviceProp_tR0600 as HipDeviceProp;

type HipResult = Result<(), E>;

// ------------------------------------------------------------------------------- plumbing

thread_local! {
    /// The device of this thread (hipSetDevice), 0 until set, as in HIP.
    static DEVICE: Cell<c_int> = const { Cell::new(0) };
    /// The last CUDA failure on this thread, told by hipGetErrorString.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
    static MESSAGE: RefCell<CString> = RefCell::new(CString::default());
}

/// Runs `f`, turning a panic into hipErrorUnknown (a panic may not cross `extern "C"`).
fn guard(what: &str, f: impl FnOnce() -> HipResult) -> E {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => E::hipSuccess,
        Ok(Err(e)) => e,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            LAST.with(|l| *l.borrow_mut() = Some(format!("{what} panicked: {msg}")));
            E::hipErrorUnknown
        }
    }
}

/// The nearest hipError_t of a CUDA result (most codes share their numbers).
fn map_cu(r: cu::CUresult) -> E {
    match r as u32 {
        0 => E::hipSuccess,
        1 => E::hipErrorInvalidValue,
        2 => E::hipErrorOutOfMemory,
        3 => E::hipErrorNotInitialized,
        4 => E::hipErrorDeinitialized,
        100 => E::hipErrorNoDevice,
        101 => E::hipErrorInvalidDevice,
        200 => E::hipErrorInvalidImage,
        201 => E::hipErrorInvalidContext,
        202 => E::hipErrorContextAlreadyCurrent,
        209 => E::hipErrorNoBinaryForGpu,
        214 => E::hipErrorECCNotCorrectable,
        215 => E::hipErrorUnsupportedLimit,
        216 => E::hipErrorContextAlreadyInUse,
        217 => E::hipErrorPeerAccessUnsupported,
        218 | 222 => E::hipErrorInvalidKernelFile, // invalid PTX, unsupported PTX version
        300 => E::hipErrorInvalidSource,
        301 => E::hipErrorFileNotFound,
        302 => E::hipErrorSharedObjectSymbolNotFound,
        303 => E::hipErrorSharedObjectInitFailed,
        304 => E::hipErrorOperatingSystem,
        400 => E::hipErrorInvalidHandle,
        401 => E::hipErrorIllegalState,
        500 => E::hipErrorNotFound,
        600 => E::hipErrorNotReady,
        700 => E::hipErrorIllegalAddress,
        701 => E::hipErrorLaunchOutOfResources,
        702 => E::hipErrorLaunchTimeOut,
        704 => E::hipErrorPeerAccessAlreadyEnabled,
        705 => E::hipErrorPeerAccessNotEnabled,
        708 => E::hipErrorSetOnActiveProcess,
        709 => E::hipErrorContextIsDestroyed,
        710 => E::hipErrorAssert,
        712 => E::hipErrorHostMemoryAlreadyRegistered,
        713 => E::hipErrorHostMemoryNotRegistered,
        714..=719 => E::hipErrorLaunchFailure, // hardware stack error .. launch failed
        720 => E::hipErrorCooperativeLaunchTooLarge,
        801 => E::hipErrorNotSupported,
        35 | 803 | 804 => E::hipErrorInsufficientDriver, // stub library, driver mismatch, compat
        900 => E::hipErrorStreamCaptureUnsupported,
        901 => E::hipErrorStreamCaptureInvalidated,
        902 => E::hipErrorStreamCaptureMerge,
        903 => E::hipErrorStreamCaptureUnmatched,
        904 => E::hipErrorStreamCaptureUnjoined,
        905 => E::hipErrorStreamCaptureIsolation,
        906 => E::hipErrorStreamCaptureImplicit,
        907 => E::hipErrorCapturedEvent,
        908 => E::hipErrorStreamCaptureWrongThread,
        910 => E::hipErrorGraphExecUpdateFailure,
        _ => E::hipErrorUnknown,
    }
}

/// A CUDA call's result as a HIP one, remembering the CUDA failure for hipGetErrorString.
fn ck(call: &str, r: cu::CUresult) -> HipResult {
    if r == cu::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    LAST.with(|l| *l.borrow_mut() = Some(format!("{call}: {r:?}")));
    Err(map_cu(r))
}

/// cuInit once (Err when libcuda is missing or finds no device).
fn init() -> HipResult {
    static INIT: OnceLock<Result<(), (E, String)>> = OnceLock::new();
    let r = INIT.get_or_init(|| {
        let present = std::panic::catch_unwind(|| unsafe { cu::is_culib_present() }).unwrap_or(false);
        if !present {
            return Err((E::hipErrorNoDevice, "the CUDA driver (libcuda) was not found".into()));
        }
        match std::panic::catch_unwind(|| unsafe { cu::cuInit(0) }) {
            Ok(cu::CUresult::CUDA_SUCCESS) => Ok(()),
            Ok(r) => Err((map_cu(r), format!("cuInit: {r:?}"))),
            Err(_) => Err((E::hipErrorNotInitialized, "cuInit could not be loaded".into())),
        }
    });
    r.clone().map_err(|(e, why)| {
        LAST.with(|l| *l.borrow_mut() = Some(why));
        e
    })
}

fn device_count() -> Result<c_int, E> {
    init()?;
    let mut n = 0;
    ck("cuDeviceGetCount", unsafe { cu::cuDeviceGetCount(&mut n) })?;
    Ok(n)
}

/// (CUdevice, primary context) of every ordinal retained so far.
fn primary(ordinal: c_int) -> Result<(cu::CUdevice, cu::CUcontext), E> {
    static CTXS: Mutex<Vec<(c_int, cu::CUdevice, usize)>> = Mutex::new(Vec::new());
    init()?;
    let mut ctxs = CTXS.lock().map_err(|_| E::hipErrorUnknown)?;
    if let Some(&(_, dev, ctx)) = ctxs.iter().find(|(o, _, _)| *o == ordinal) {
        return Ok((dev, ctx as cu::CUcontext));
    }
    if ordinal < 0 || ordinal >= device_count()? {
        return Err(E::hipErrorInvalidDevice);
    }
    let mut dev: cu::CUdevice = 0;
    ck("cuDeviceGet", unsafe { cu::cuDeviceGet(&mut dev, ordinal) })?;
    let mut ctx: cu::CUcontext = std::ptr::null_mut();
    ck("cuDevicePrimaryCtxRetain", unsafe {
        cu::cuDevicePrimaryCtxRetain(&mut ctx, dev)
    })?;
    ctxs.push((ordinal, dev, ctx as usize));
    Ok((dev, ctx))
}

/// Makes `ordinal`'s primary context current on this thread (a no-op when it already is:
/// hip.rs calls hipSetDevice before every call, stream capture included).
fn make_current(ordinal: c_int) -> HipResult {
    let (_, ctx) = primary(ordinal)?;
    let mut cur: cu::CUcontext = std::ptr::null_mut();
    ck("cuCtxGetCurrent", unsafe { cu::cuCtxGetCurrent(&mut cur) })?;
    if cur != ctx {
        ck("cuCtxSetCurrent", unsafe { cu::cuCtxSetCurrent(ctx) })?;
    }
    Ok(())
}

/// Every entry point that needs a context: the thread's device's primary context, made
/// current if the thread has none.
fn ctx() -> HipResult {
    init()?;
    let mut cur: cu::CUcontext = std::ptr::null_mut();
    ck("cuCtxGetCurrent", unsafe { cu::cuCtxGetCurrent(&mut cur) })?;
    if cur.is_null() {
        make_current(DEVICE.with(|d| d.get()))?;
    }
    Ok(())
}

fn attr(a: A, dev: cu::CUdevice) -> Result<c_int, E> {
    let mut v = 0;
    ck(&format!("cuDeviceGetAttribute({a:?})"), unsafe {
        cu::cuDeviceGetAttribute(&mut v, a, dev)
    })?;
    Ok(v)
}

fn out<T>(p: *mut T, v: T) -> HipResult {
    if p.is_null() {
        return Err(E::hipErrorInvalidValue);
    }
    unsafe { p.write(v) };
    Ok(())
}

// ------------------------------------------------------------------------- errors, version

macro_rules! error_names {
    ($e:expr; $($v:ident),* $(,)?) => {
        match $e {
            $(E::$v => concat!(stringify!($v), "\0"),)*
            _ => "hipErrorUnknown\0",
        }
    };
}

fn error_name(e: E) -> &'static str {
    error_names!(e;
        hipSuccess, hipErrorInvalidValue, hipErrorOutOfMemory, hipErrorNotInitialized,
        hipErrorDeinitialized, hipErrorInvalidConfiguration, hipErrorInvalidSymbol,
        hipErrorInvalidDevicePointer, hipErrorInvalidMemcpyDirection, hipErrorInsufficientDriver,
        hipErrorInvalidDeviceFunction, hipErrorNoDevice, hipErrorInvalidDevice,
        hipErrorInvalidImage, hipErrorInvalidContext, hipErrorContextAlreadyCurrent,
        hipErrorNoBinaryForGpu, hipErrorECCNotCorrectable, hipErrorUnsupportedLimit,
        hipErrorContextAlreadyInUse, hipErrorPeerAccessUnsupported, hipErrorInvalidKernelFile,
        hipErrorInvalidSource, hipErrorFileNotFound, hipErrorSharedObjectSymbolNotFound,
        hipErrorSharedObjectInitFailed, hipErrorOperatingSystem, hipErrorInvalidHandle,
        hipErrorIllegalState, hipErrorNotFound, hipErrorNotReady, hipErrorIllegalAddress,
        hipErrorLaunchOutOfResources, hipErrorLaunchTimeOut, hipErrorPeerAccessAlreadyEnabled,
        hipErrorPeerAccessNotEnabled, hipErrorSetOnActiveProcess, hipErrorContextIsDestroyed,
        hipErrorAssert, hipErrorHostMemoryAlreadyRegistered, hipErrorHostMemoryNotRegistered,
        hipErrorLaunchFailure, hipErrorCooperativeLaunchTooLarge, hipErrorNotSupported,
        hipErrorStreamCaptureUnsupported, hipErrorStreamCaptureInvalidated,
        hipErrorStreamCaptureMerge, hipErrorStreamCaptureUnmatched,
        hipErrorStreamCaptureUnjoined, hipErrorStreamCaptureIsolation,
        hipErrorStreamCaptureImplicit, hipErrorCapturedEvent, hipErrorStreamCaptureWrongThread,
        hipErrorGraphExecUpdateFailure, hipErrorUnknown,
    )
}

#[no_mangle]
pub extern "C" fn hipGetErrorName(e: E) -> *const c_char {
    error_name(e).as_ptr() as *const c_char
}

/// The error's name, and the last CUDA failure of this thread (valid until the next call on
/// this thread; rocmforge copies it at once).
#[no_mangle]
pub extern "C" fn hipGetErrorString(e: E) -> *const c_char {
    let name = error_name(e).trim_end_matches('\0');
    let text = match LAST.with(|l| l.borrow().clone()) {
        Some(last) if e != E::hipSuccess => format!("{name}; hip-shim, last CUDA failure: {last}"),
        _ => name.to_string(),
    };
    MESSAGE.with(|m| {
        *m.borrow_mut() = CString::new(text.replace('\0', " ")).unwrap_or_default();
        m.borrow().as_ptr()
    })
}

#[no_mangle]
pub extern "C" fn hipGetLastError() -> E {
    E::hipSuccess
}

#[no_mangle]
pub extern "C" fn hipPeekAtLastError() -> E {
    E::hipSuccess
}

/// The CUDA driver's version (e.g. 12080): part of rocmforge's kernel cache key.
#[no_mangle]
pub unsafe extern "C" fn hipRuntimeGetVersion(v: *mut c_int) -> E {
    guard("hipRuntimeGetVersion", || {
        init()?;
        let mut d = 0;
        ck("cuDriverGetVersion", cu::cuDriverGetVersion(&mut d))?;
        out(v, d)
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipDriverGetVersion(v: *mut c_int) -> E {
    hipRuntimeGetVersion(v)
}

// -------------------------------------------------------------------------------- devices

/// The number of CUDA devices; 0 and hipErrorNoDevice without a driver or a device.
#[no_mangle]
pub unsafe extern "C" fn hipGetDeviceCount(count: *mut c_int) -> E {
    if !count.is_null() {
        *count = 0;
    }
    guard("hipGetDeviceCount", || {
        let n = device_count()?;
        out(count, n)?;
        if n == 0 {
            Err(E::hipErrorNoDevice)
        } else {
            Ok(())
        }
    })
}

#[no_mangle]
pub extern "C" fn hipSetDevice(ordinal: c_int) -> E {
    guard("hipSetDevice", || {
        make_current(ordinal)?;
        DEVICE.with(|d| d.set(ordinal));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipGetDevice(ordinal: *mut c_int) -> E {
    guard("hipGetDevice", || {
        init()?;
        out(ordinal, DEVICE.with(|d| d.get()))
    })
}

#[no_mangle]
pub extern "C" fn hipDeviceSynchronize() -> E {
    guard("hipDeviceSynchronize", || {
        ctx()?;
        ck("cuCtxSynchronize", unsafe { cu::cuCtxSynchronize() })
    })
}

fn copy_cstr(dst: &mut [c_char], s: &str) {
    let n = s.len().min(dst.len().saturating_sub(1));
    for (d, b) in dst.iter_mut().zip(s.as_bytes()[..n].iter()) {
        *d = *b as c_char;
    }
    dst[n] = 0;
}

/// The CUDA architecture name the shim reports as `gcnArchName`: "sm_90" on an H100.
fn sm_arch(dev: cu::CUdevice) -> Result<String, E> {
    let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)?;
    let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)?;
    Ok(format!("sm_{major}{minor}"))
}

unsafe fn device_properties(p: *mut HipDeviceProp, ordinal: c_int) -> E {
    guard("hipGetDeviceProperties", || {
        if p.is_null() {
            return Err(E::hipErrorInvalidValue);
        }
        let (dev, _) = primary(ordinal)?;
        let p = &mut *p;
        *p = std::mem::zeroed();
        let mut name = [0 as c_char; 256];
        ck("cuDeviceGetName", cu::cuDeviceGetName(name.as_mut_ptr(), 256, dev))?;
        p.name = name;
        let mut total = 0usize;
        ck("cuDeviceTotalMem", cu::cuDeviceTotalMem_v2(&mut total, dev))?;
        p.totalGlobalMem = total;
        let a = |x| attr(x, dev);
        p.sharedMemPerBlock = a(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)? as usize;
        p.regsPerBlock = a(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK)?;
        p.warpSize = a(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE)?;
        p.maxThreadsPerBlock = a(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?;
        p.maxThreadsDim = [
            a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X)?,
            a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y)?,
            a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z)?,
        ];
        p.maxGridSize = [
            a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?,
            a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y)?,
            a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z)?,
        ];
        p.clockRate = a(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?;
        p.memoryClockRate = a(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)?;
        p.memoryBusWidth = a(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)?;
        p.totalConstMem = a(A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY)? as usize;
        p.major = a(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        p.minor = a(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        p.multiProcessorCount = a(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        p.l2CacheSize = a(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?;
        p.maxThreadsPerMultiProcessor = a(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?;
        p.computeMode = a(A::CU_DEVICE_ATTRIBUTE_COMPUTE_MODE)?;
        p.concurrentKernels = a(A::CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS)?;
        p.pciDomainID = a(A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?;
        p.pciBusID = a(A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?;
        p.pciDeviceID = a(A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?;
        p.maxSharedMemoryPerMultiProcessor =
            a(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)? as usize;
        p.isMultiGpuBoard = a(A::CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD)?;
        p.canMapHostMemory = a(A::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY)?;
        p.integrated = a(A::CU_DEVICE_ATTRIBUTE_INTEGRATED)?;
        p.cooperativeLaunch = a(A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH)?;
        p.managedMemory = a(A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY)?;
        p.concurrentManagedAccess = a(A::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS)?;
        p.pageableMemoryAccess = a(A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS)?;
        p.ECCEnabled = a(A::CU_DEVICE_ATTRIBUTE_ECC_ENABLED)?;
        // gcnArch stays 0: no AMD architecture number applies.
        copy_cstr(&mut p.gcnArchName, &sm_arch(dev)?);
        Ok(())
    })
}

#[cfg(not(rocm_r0600))]
#[no_mangle]
pub unsafe extern "C" fn hipGetDeviceProperties(p: *mut HipDeviceProp, ordinal: c_int) -> E {
    device_properties(p, ordinal)
}

#[cfg(rocm_r0600)]
#[no_mangle]
pub unsafe extern "C" fn hipGetDevicePropertiesR0600(p: *mut HipDeviceProp, ordinal: c_int) -> E {
    device_properties(p, ordinal)
}

/// The attributes rocmforge asks (and their neighbours); hipErrorInvalidValue for others.
#[no_mangle]
pub unsafe extern "C" fn hipDeviceGetAttribute(
    v: *mut c_int,
    which: hip::hipDeviceAttribute_t,
    ordinal: c_int,
) -> E {
    use hip::hipDeviceAttribute_t as H;
    guard("hipDeviceGetAttribute", || {
        let (dev, _) = primary(ordinal)?;
        let a = match which {
            H::hipDeviceAttributeSharedMemPerBlockOptin => {
                A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
            }
            H::hipDeviceAttributeMaxSharedMemoryPerBlock => {
                A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK
            }
            H::hipDeviceAttributeSharedMemPerMultiprocessor
            | H::hipDeviceAttributeMaxSharedMemoryPerMultiprocessor => {
                A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
            }
            H::hipDeviceAttributeWarpSize => A::CU_DEVICE_ATTRIBUTE_WARP_SIZE,
            H::hipDeviceAttributeMultiprocessorCount
            | H::hipDeviceAttributePhysicalMultiProcessorCount => {
                A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
            }
            H::hipDeviceAttributeComputeCapabilityMajor => {
                A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
            }
            H::hipDeviceAttributeComputeCapabilityMinor => {
                A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
            }
            H::hipDeviceAttributeMaxThreadsPerBlock => A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
            H::hipDeviceAttributeMaxThreadsPerMultiProcessor => {
                A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR
            }
            H::hipDeviceAttributeMaxBlockDimX => A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X,
            H::hipDeviceAttributeMaxBlockDimY => A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y,
            H::hipDeviceAttributeMaxBlockDimZ => A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z,
            H::hipDeviceAttributeMaxGridDimX => A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X,
            H::hipDeviceAttributeMaxGridDimY => A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y,
            H::hipDeviceAttributeMaxGridDimZ => A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z,
            H::hipDeviceAttributeMaxRegistersPerBlock => {
                A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK
            }
            H::hipDeviceAttributeL2CacheSize => A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE,
            H::hipDeviceAttributeClockRate => A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE,
            H::hipDeviceAttributeMemoryClockRate => A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE,
            H::hipDeviceAttributeMemoryBusWidth => A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH,
            H::hipDeviceAttributeTotalConstantMemory => {
                A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY
            }
            H::hipDeviceAttributeConcurrentKernels => A::CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS,
            H::hipDeviceAttributeIntegrated => A::CU_DEVICE_ATTRIBUTE_INTEGRATED,
            H::hipDeviceAttributeManagedMemory => A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY,
            H::hipDeviceAttributeCooperativeLaunch => A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH,
            H::hipDeviceAttributeCanMapHostMemory => A::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY,
            H::hipDeviceAttributePciBusId => A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID,
            H::hipDeviceAttributePciDeviceId => A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID,
            H::hipDeviceAttributePciDomainID => A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID,
            H::hipDeviceAttributeComputeMode => A::CU_DEVICE_ATTRIBUTE_COMPUTE_MODE,
            _ => return Err(E::hipErrorInvalidValue),
        };
        out(v, attr(a, dev)?)
    })
}

// --------------------------------------------------------------------------------- memory

#[no_mangle]
pub unsafe extern "C" fn hipMemGetInfo(free: *mut usize, total: *mut usize) -> E {
    guard("hipMemGetInfo", || {
        ctx()?;
        let (mut f, mut t) = (0usize, 0usize);
        ck("cuMemGetInfo", cu::cuMemGetInfo_v2(&mut f, &mut t))?;
        out(free, f)?;
        out(total, t)
    })
}

/// As HIP: 0 bytes give a null pointer and success.
#[no_mangle]
pub unsafe extern "C" fn hipMalloc(ptr: *mut *mut c_void, size: usize) -> E {
    guard("hipMalloc", || {
        if ptr.is_null() {
            return Err(E::hipErrorInvalidValue);
        }
        *ptr = std::ptr::null_mut();
        if size == 0 {
            return Ok(());
        }
        ctx()?;
        let mut d: cu::CUdeviceptr = 0;
        ck("cuMemAlloc", cu::cuMemAlloc_v2(&mut d, size))?;
        *ptr = d as *mut c_void;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipFree(ptr: *mut c_void) -> E {
    guard("hipFree", || {
        if ptr.is_null() {
            return Ok(());
        }
        ctx()?;
        ck("cuMemFree", cu::cuMemFree_v2(ptr as cu::CUdeviceptr))
    })
}

/// Page-locked host memory. hipHostMallocPortable/Mapped/WriteCombined (1, 2, 4) are
/// CU_MEMHOSTALLOC_PORTABLE/DEVICEMAP/WRITECOMBINED; AMD-only flags (coherence, NUMA) are
/// dropped.
#[no_mangle]
pub unsafe extern "C" fn hipHostMalloc(ptr: *mut *mut c_void, size: usize, flags: c_uint) -> E {
    guard("hipHostMalloc", || {
        if ptr.is_null() {
            return Err(E::hipErrorInvalidValue);
        }
        *ptr = std::ptr::null_mut();
        if size == 0 {
            return Ok(());
        }
        ctx()?;
        ck("cuMemHostAlloc", cu::cuMemHostAlloc(ptr, size, flags & 0x7))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipHostFree(ptr: *mut c_void) -> E {
    guard("hipHostFree", || {
        if ptr.is_null() {
            return Ok(());
        }
        ctx()?;
        ck("cuMemFreeHost", cu::cuMemFreeHost(ptr))
    })
}

/// Any direction: unified addressing lets cuMemcpyAsync infer it from the pointers.
#[no_mangle]
pub unsafe extern "C" fn hipMemcpyAsync(
    dst: *mut c_void,
    src: *const c_void,
    bytes: usize,
    _kind: hip::hipMemcpyKind,
    stream: hip::hipStream_t,
) -> E {
    guard("hipMemcpyAsync", || {
        if bytes == 0 {
            return Ok(());
        }
        ctx()?;
        ck("cuMemcpyAsync", cu::cuMemcpyAsync(
            dst as cu::CUdeviceptr,
            src as cu::CUdeviceptr,
            bytes,
            stream as cu::CUstream,
        ))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipMemcpy(
    dst: *mut c_void,
    src: *const c_void,
    bytes: usize,
    _kind: hip::hipMemcpyKind,
) -> E {
    guard("hipMemcpy", || {
        if bytes == 0 {
            return Ok(());
        }
        ctx()?;
        ck("cuMemcpy", cu::cuMemcpy(dst as cu::CUdeviceptr, src as cu::CUdeviceptr, bytes))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipMemsetAsync(
    dst: *mut c_void,
    value: c_int,
    bytes: usize,
    stream: hip::hipStream_t,
) -> E {
    guard("hipMemsetAsync", || {
        if bytes == 0 {
            return Ok(());
        }
        ctx()?;
        ck("cuMemsetD8Async", cu::cuMemsetD8Async(
            dst as cu::CUdeviceptr,
            value as u8,
            bytes,
            stream as cu::CUstream,
        ))
    })
}

// ------------------------------------------------------------------------ streams, events

/// hipStreamNonBlocking (1) is CU_STREAM_NON_BLOCKING.
#[no_mangle]
pub unsafe extern "C" fn hipStreamCreateWithFlags(s: *mut hip::hipStream_t, flags: c_uint) -> E {
    guard("hipStreamCreateWithFlags", || {
        if s.is_null() {
            return Err(E::hipErrorInvalidValue);
        }
        ctx()?;
        ck("cuStreamCreate", cu::cuStreamCreate(s as *mut cu::CUstream, flags & 1))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipStreamCreate(s: *mut hip::hipStream_t) -> E {
    hipStreamCreateWithFlags(s, 0)
}

#[no_mangle]
pub unsafe extern "C" fn hipStreamDestroy(s: hip::hipStream_t) -> E {
    guard("hipStreamDestroy", || {
        ctx()?;
        ck("cuStreamDestroy", cu::cuStreamDestroy_v2(s as cu::CUstream))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipStreamSynchronize(s: hip::hipStream_t) -> E {
    guard("hipStreamSynchronize", || {
        ctx()?;
        ck("cuStreamSynchronize", cu::cuStreamSynchronize(s as cu::CUstream))
    })
}

/// hipEventDisableTiming (2) and hipEventBlockingSync (1) are CUDA's flags of the same value.
#[no_mangle]
pub unsafe extern "C" fn hipEventCreateWithFlags(e: *mut hip::hipEvent_t, flags: c_uint) -> E {
    guard("hipEventCreateWithFlags", || {
        if e.is_null() {
            return Err(E::hipErrorInvalidValue);
        }
        ctx()?;
        ck("cuEventCreate", cu::cuEventCreate(e as *mut cu::CUevent, flags & 0x3))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipEventCreate(e: *mut hip::hipEvent_t) -> E {
    hipEventCreateWithFlags(e, 0)
}

#[no_mangle]
pub unsafe extern "C" fn hipEventDestroy(e: hip::hipEvent_t) -> E {
    guard("hipEventDestroy", || {
        ctx()?;
        ck("cuEventDestroy", cu::cuEventDestroy_v2(e as cu::CUevent))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipEventRecord(e: hip::hipEvent_t, s: hip::hipStream_t) -> E {
    guard("hipEventRecord", || {
        ctx()?;
        ck("cuEventRecord", cu::cuEventRecord(e as cu::CUevent, s as cu::CUstream))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipEventSynchronize(e: hip::hipEvent_t) -> E {
    guard("hipEventSynchronize", || {
        ctx()?;
        ck("cuEventSynchronize", cu::cuEventSynchronize(e as cu::CUevent))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipEventElapsedTime(
    ms: *mut f32,
    start: hip::hipEvent_t,
    stop: hip::hipEvent_t,
) -> E {
    guard("hipEventElapsedTime", || {
        if ms.is_null() {
            return Err(E::hipErrorInvalidValue);
        }
        ctx()?;
        ck("cuEventElapsedTime", cu::cuEventElapsedTime(ms, start as cu::CUevent, stop as cu::CUevent))
    })
}

// --------------------------------------------------------------------------------- graphs

/// hipStreamCaptureMode{Global, ThreadLocal, Relaxed} = 0, 1, 2, as CUstreamCaptureMode.
#[no_mangle]
pub unsafe extern "C" fn hipStreamBeginCapture(
    s: hip::hipStream_t,
    mode: hip::hipStreamCaptureMode,
) -> E {
    use cu::CUstreamCaptureMode as M;
    use hip::hipStreamCaptureMode as H;
    guard("hipStreamBeginCapture", || {
        ctx()?;
        let mode = match mode {
            H::hipStreamCaptureModeGlobal => M::CU_STREAM_CAPTURE_MODE_GLOBAL,
            H::hipStreamCaptureModeThreadLocal => M::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            H::hipStreamCaptureModeRelaxed => M::CU_STREAM_CAPTURE_MODE_RELAXED,
            _ => return Err(E::hipErrorInvalidValue),
        };
        ck("cuStreamBeginCapture", cu::cuStreamBeginCapture_v2(s as cu::CUstream, mode))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipStreamEndCapture(s: hip::hipStream_t, g: *mut hip::hipGraph_t) -> E {
    guard("hipStreamEndCapture", || {
        if g.is_null() {
            return Err(E::hipErrorInvalidValue);
        }
        ctx()?;
        ck("cuStreamEndCapture", cu::cuStreamEndCapture(s as cu::CUstream, g as *mut cu::CUgraph))
    })
}

/// The error node and log of HIP's signature are left untouched (null / empty).
#[no_mangle]
pub unsafe extern "C" fn hipGraphInstantiate(
    exec: *mut hip::hipGraphExec_t,
    graph: hip::hipGraph_t,
    error_node: *mut hip::hipGraphNode_t,
    log: *mut c_char,
    log_size: usize,
) -> E {
    guard("hipGraphInstantiate", || {
        if exec.is_null() {
            return Err(E::hipErrorInvalidValue);
        }
        if !error_node.is_null() {
            *error_node = std::ptr::null_mut();
        }
        if !log.is_null() && log_size > 0 {
            *log = 0;
        }
        ctx()?;
        ck("cuGraphInstantiateWithFlags", cu::cuGraphInstantiateWithFlags(
            exec as *mut cu::CUgraphExec,
            graph as cu::CUgraph,
            0,
        ))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipGraphLaunch(exec: hip::hipGraphExec_t, s: hip::hipStream_t) -> E {
    guard("hipGraphLaunch", || {
        ctx()?;
        ck("cuGraphLaunch", cu::cuGraphLaunch(exec as cu::CUgraphExec, s as cu::CUstream))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipGraphDestroy(g: hip::hipGraph_t) -> E {
    guard("hipGraphDestroy", || {
        ctx()?;
        ck("cuGraphDestroy", cu::cuGraphDestroy(g as cu::CUgraph))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipGraphExecDestroy(exec: hip::hipGraphExec_t) -> E {
    guard("hipGraphExecDestroy", || {
        ctx()?;
        ck("cuGraphExecDestroy", cu::cuGraphExecDestroy(exec as cu::CUgraphExec))
    })
}

// ------------------------------------------------------------------------ modules, launch

/// `image` is what hiprtcGetCode gave: a cubin.
#[no_mangle]
pub unsafe extern "C" fn hipModuleLoadData(m: *mut hip::hipModule_t, image: *const c_void) -> E {
    guard("hipModuleLoadData", || {
        if m.is_null() || image.is_null() {
            return Err(E::hipErrorInvalidValue);
        }
        ctx()?;
        ck("cuModuleLoadData", cu::cuModuleLoadData(m as *mut cu::CUmodule, image))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hipModuleUnload(m: hip::hipModule_t) -> E {
    guard("hipModuleUnload", || {
        ctx()?;
        ck("cuModuleUnload", cu::cuModuleUnload(m as cu::CUmodule))
    })
}

/// Also lets the function use the device's whole opt-in shared memory: AMD needs no opt-in
/// (hip.rs's set_max_dynamic_shared only checks the size), CUDA does above 48 KiB.
#[no_mangle]
pub unsafe extern "C" fn hipModuleGetFunction(
    f: *mut hip::hipFunction_t,
    m: hip::hipModule_t,
    name: *const c_char,
) -> E {
    guard("hipModuleGetFunction", || {
        if f.is_null() || name.is_null() {
            return Err(E::hipErrorInvalidValue);
        }
        ctx()?;
        let cname = CStr::from_ptr(name).to_string_lossy();
        let func = f as *mut cu::CUfunction;
        ck(&format!("cuModuleGetFunction({cname})"), cu::cuModuleGetFunction(func, m as cu::CUmodule, name))?;
        let mut dev: cu::CUdevice = 0;
        ck("cuCtxGetDevice", cu::cuCtxGetDevice(&mut dev))?;
        let optin = attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev)?;
        let mut fixed = 0;
        ck("cuFuncGetAttribute", cu::cuFuncGetAttribute(
            &mut fixed,
            cu::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
            *func,
        ))?;
        if optin - fixed > 48 * 1024 {
            ck("cuFuncSetAttribute(max dynamic shared)", cu::cuFuncSetAttribute(
                *func,
                cu::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                optin - fixed,
            ))?;
        }
        Ok(())
    })
}

/// `extra`: HIP ends the list with HIP_LAUNCH_PARAM_END = 3, CUDA with 0 (the buffer pointer
/// and size keys, 1 and 2, are the same).
#[no_mangle]
pub unsafe extern "C" fn hipModuleLaunchKernel(
    f: hip::hipFunction_t,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    s: hip::hipStream_t,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> E {
    guard("hipModuleLaunchKernel", || {
        ctx()?;
        let mut ex: Vec<*mut c_void> = Vec::new();
        if !extra.is_null() {
            let mut i = 0;
            loop {
                let key = *extra.add(i);
                if key as usize == 3 || key.is_null() {
                    ex.push(std::ptr::null_mut());
                    break;
                }
                ex.push(key);
                ex.push(*extra.add(i + 1));
                i += 2;
            }
        }
        ck("cuLaunchKernel", cu::cuLaunchKernel(
            f as cu::CUfunction,
            gx,
            gy,
            gz,
            bx,
            by,
            bz,
            shared,
            s as cu::CUstream,
            params,
            if extra.is_null() { std::ptr::null_mut() } else { ex.as_mut_ptr() },
        ))
    })
}

// ------------------------------------------------------------------------ hipRTC on NVRTC

/// A hipRTC program: an NVRTC program.
type HiprtcProgram = *mut c_void;
/// hiprtcResult: HIPRTC_SUCCESS = 0; NVRTC's codes 1..=11 have hipRTC's numbers and meanings.
type HiprtcResult = c_int;
const HIPRTC_ERROR_INVALID_INPUT: c_int = 3;
const HIPRTC_ERROR_INTERNAL_ERROR: c_int = 11;

/// NVRTC, found as rocmforge's CUDA backend finds it: on the loader path, else under
/// CUDA_HOME / CUDA_PATH / /usr/local/cuda (loaded by full path, kept for the process).
fn nvrtc() -> Result<(), HiprtcResult> {
    static OK: OnceLock<bool> = OnceLock::new();
    let present = || std::panic::catch_unwind(|| unsafe { nv::is_culib_present() }).unwrap_or(false);
    let ok = *OK.get_or_init(|| {
        if present() {
            return true;
        }
        let mut roots: Vec<std::path::PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
            .iter()
            .filter_map(std::env::var_os)
            .map(Into::into)
            .collect();
        roots.push("/usr/local/cuda".into());
        for root in roots {
            for dir in ["lib64", "lib"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
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
                    if let Ok(l) = unsafe { libloading::Library::new(lib) } {
                        std::mem::forget(l);
                        if present() {
                            return true;
                        }
                    }
                }
            }
        }
        false
    });
    if ok {
        Ok(())
    } else {
        Err(HIPRTC_ERROR_INTERNAL_ERROR)
    }
}

fn rtc_guard(f: impl FnOnce() -> Result<(), HiprtcResult>) -> HiprtcResult {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => e,
        Err(_) => HIPRTC_ERROR_INTERNAL_ERROR,
    }
}

fn nv_ck(r: nv::nvrtcResult) -> Result<(), HiprtcResult> {
    match r as c_int {
        0 => Ok(()),
        e => Err(e),
    }
}

/// hipRTC's options in NVRTC's words: `--offload-arch=sm_XY` (the gcnArchName the shim
/// reports) becomes `--gpu-architecture=sm_XY` (an AMD name, or none: the current device's);
/// `-O<n>` is dropped (NVRTC optimizes fully by default); the rest (`-std=c++17`, `-D...`)
/// passes through.
fn nvrtc_options(opts: &[String]) -> Result<Vec<String>, HiprtcResult> {
    let mut arch = None;
    let mut outv = Vec::new();
    for o in opts {
        if let Some(a) = o.strip_prefix("--offload-arch=") {
            arch = Some(a.split(':').next().unwrap_or("").to_string());
        } else if o.starts_with("-O") {
            continue;
        } else {
            outv.push(o.clone());
        }
    }
    let arch = match arch.filter(|a| a.starts_with("sm_")) {
        Some(a) => a,
        None => {
            let mut dev: cu::CUdevice = 0;
            let found = ctx().is_ok()
                && unsafe { cu::cuCtxGetDevice(&mut dev) } == cu::CUresult::CUDA_SUCCESS;
            if !found {
                return Err(HIPRTC_ERROR_INVALID_INPUT);
            }
            sm_arch(dev).map_err(|_| HIPRTC_ERROR_INVALID_INPUT)?
        }
    };
    outv.insert(0, format!("--gpu-architecture={arch}"));
    Ok(outv)
}

#[no_mangle]
pub unsafe extern "C" fn hiprtcCreateProgram(
    prog: *mut HiprtcProgram,
    src: *const c_char,
    name: *const c_char,
    num_headers: c_int,
    headers: *const *const c_char,
    include_names: *const *const c_char,
) -> HiprtcResult {
    rtc_guard(|| {
        nvrtc()?;
        nv_ck(nv::nvrtcCreateProgram(
            prog as *mut nv::nvrtcProgram,
            src,
            name,
            num_headers,
            headers,
            include_names,
        ))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hiprtcCompileProgram(
    prog: HiprtcProgram,
    num_options: c_int,
    options: *const *const c_char,
) -> HiprtcResult {
    rtc_guard(|| {
        nvrtc()?;
        let opts: Vec<String> = (0..num_options.max(0) as usize)
            .map(|i| CStr::from_ptr(*options.add(i)).to_string_lossy().into_owned())
            .collect();
        let opts: Vec<CString> = nvrtc_options(&opts)?
            .into_iter()
            .map(|o| CString::new(o).unwrap_or_default())
            .collect();
        let ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        nv_ck(nv::nvrtcCompileProgram(
            prog as nv::nvrtcProgram,
            ptrs.len() as c_int,
            ptrs.as_ptr(),
        ))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hiprtcGetProgramLogSize(prog: HiprtcProgram, size: *mut usize) -> HiprtcResult {
    rtc_guard(|| {
        nvrtc()?;
        nv_ck(nv::nvrtcGetProgramLogSize(prog as nv::nvrtcProgram, size))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hiprtcGetProgramLog(prog: HiprtcProgram, log: *mut c_char) -> HiprtcResult {
    rtc_guard(|| {
        nvrtc()?;
        nv_ck(nv::nvrtcGetProgramLog(prog as nv::nvrtcProgram, log))
    })
}

/// The code is a cubin (what hipModuleLoadData here loads).
#[no_mangle]
pub unsafe extern "C" fn hiprtcGetCodeSize(prog: HiprtcProgram, size: *mut usize) -> HiprtcResult {
    rtc_guard(|| {
        nvrtc()?;
        nv_ck(nv::nvrtcGetCUBINSize(prog as nv::nvrtcProgram, size))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hiprtcGetCode(prog: HiprtcProgram, code: *mut c_char) -> HiprtcResult {
    rtc_guard(|| {
        nvrtc()?;
        nv_ck(nv::nvrtcGetCUBIN(prog as nv::nvrtcProgram, code))
    })
}

#[no_mangle]
pub unsafe extern "C" fn hiprtcDestroyProgram(prog: *mut HiprtcProgram) -> HiprtcResult {
    rtc_guard(|| {
        nvrtc()?;
        nv_ck(nv::nvrtcDestroyProgram(prog as *mut nv::nvrtcProgram))
    })
}

#[no_mangle]
pub extern "C" fn hiprtcGetErrorString(r: HiprtcResult) -> *const c_char {
    let s: &'static str = match r {
        0 => "HIPRTC_SUCCESS\0",
        1 => "HIPRTC_ERROR_OUT_OF_MEMORY\0",
        2 => "HIPRTC_ERROR_PROGRAM_CREATION_FAILURE\0",
        3 => "HIPRTC_ERROR_INVALID_INPUT\0",
        4 => "HIPRTC_ERROR_INVALID_PROGRAM\0",
        5 => "HIPRTC_ERROR_INVALID_OPTION\0",
        6 => "HIPRTC_ERROR_COMPILATION\0",
        7 => "HIPRTC_ERROR_BUILTIN_OPERATION_FAILURE\0",
        11 => "HIPRTC_ERROR_INTERNAL_ERROR\0",
        _ => "HIPRTC_ERROR (hip-shim: NVRTC code)\0",
    };
    s.as_ptr() as *const c_char
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_translate() {
        let o = nvrtc_options(&["--offload-arch=sm_90".into(), "-O3".into(), "-std=c++17".into()])
            .unwrap();
        assert_eq!(o, vec!["--gpu-architecture=sm_90".to_string(), "-std=c++17".into()]);
    }

    #[test]
    fn no_driver_is_no_device() {
        // Meaningful where libcuda is absent (this build machine): a clean error, no panic.
        if unsafe { cu::is_culib_present() } {
            return;
        }
        let mut n = 7;
        assert_eq!(unsafe { hipGetDeviceCount(&mut n) }, E::hipErrorNoDevice);
        assert_eq!(n, 0);
        assert_eq!(hipSetDevice(0), E::hipErrorNoDevice);
        let msg = unsafe { CStr::from_ptr(hipGetErrorString(E::hipErrorNoDevice)) };
        assert!(msg.to_string_lossy().contains("libcuda"), "{msg:?}");
        assert_eq!(
            unsafe { CStr::from_ptr(hipGetErrorName(E::hipErrorOutOfMemory)) }.to_str().unwrap(),
            "hipErrorOutOfMemory"
        );
    }
}
