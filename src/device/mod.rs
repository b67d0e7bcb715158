//! Devices: where ops run, and everything about a GPU short of what runs on it. Nothing here
//! knows of ops, backends or models.
//!
//! - `Device`, `resolve_device`: the device an op runs on (the CPU or a GPU); `KvDtype`: the
//!   element type of a KV cache in device memory
//! - `runtime`: the GPU runtime interface (allocate, free, copy, compile, load, launch, sync,
//!   memory); `cuda`, `hip`: its two implementations (NVIDIA: CUDA driver API + NVRTC, through
//!   cudarc, loaded at run time; AMD: HIP + hipRTC, cargo feature `rocm`)
//! - `source`, `kernels`: kernel source assembly, compiler flags and the registry of kernel names
//! - `gpu`: a GPU as the ops use it (module cache on disk, RAII buffers, checked launches,
//!   launch counter, graphs)
//! - `layout`: how a GGUF tensor sits in device memory
//! - the registry of GPUs below: devices are numbered in discovery order, HIP devices first
//!   (feature `rocm`), then CUDA.

pub mod cuda;
#[cfg(test)]
pub(crate) mod emulator;
pub mod gpu;
#[cfg(feature = "rocm")]
pub mod hip;
pub mod kernels;
pub mod layout;
pub mod matvec_table;
pub mod runtime;
pub mod source;
pub mod tuning;

use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use gpu::GpuDevice;

/// Where an op runs. Every op takes one and dispatches on it.
#[derive(Clone, Debug)]
pub enum Device {
    /// The multi-threaded CPU reference (always available).
    Cpu,
    /// A GPU (CUDA or HIP), see `gpu`.
    Gpu(Arc<GpuDevice>),
}

impl Device {
    /// Short name: "cpu".
    pub fn name(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu(_) => "gpu",
        }
    }
}

/// The device a user's `device=` string names: "cpu", "gpu" or "auto" (the first GPU found,
/// else the CPU).
pub fn resolve_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" if device_count() > 0 => Ok(Device::Gpu(default_device()?)),
        "auto" => Ok(Device::Cpu),
        "gpu" => Ok(Device::Gpu(default_device()?)),
        other => Err(Error::invalid(format!(
            "device must be \"cpu\", \"gpu\" or \"auto\", got {other:?}"
        ))),
    }
}

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvDtype {
    F32,
    F16,
}

impl KvDtype {
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
        }
    }

    /// Bytes of one cache element.
    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }
}

/// Where a device index points.
#[derive(Clone, Copy, Debug)]
enum Slot {
    #[cfg(feature = "rocm")]
    Hip(usize),
    Cuda(usize),
}

fn slots() -> &'static Vec<Slot> {
    static SLOTS: OnceLock<Vec<Slot>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        #[allow(unused_mut)]
        let mut out = Vec::new();
        #[cfg(feature = "rocm")]
        out.extend((0..hip::device_count()).map(Slot::Hip));
        out.extend((0..cuda::device_count()).map(Slot::Cuda));
        out
    })
}

fn opened() -> &'static Mutex<Vec<Option<Arc<GpuDevice>>>> {
    static OPENED: OnceLock<Mutex<Vec<Option<Arc<GpuDevice>>>>> = OnceLock::new();
    OPENED.get_or_init(|| Mutex::new(vec![None; slots().len()]))
}

/// Number of GPUs found.
pub fn device_count() -> usize {
    slots().len()
}

/// GPU `index`, opened on first use and kept for the life of the process.
pub fn device(index: usize) -> Result<Arc<GpuDevice>> {
    let slot = *slots().get(index).ok_or_else(|| {
        if slots().is_empty() {
            Error::device(no_gpu_message())
        } else {
            Error::device(format!(
                "GPU {index} does not exist ({} found)",
                slots().len()
            ))
        }
    })?;
    let mut opened = opened()
        .lock()
        .map_err(|_| Error::runtime("GPU device table poisoned"))?;
    if let Some(dev) = &opened[index] {
        return Ok(dev.clone());
    }
    let rt: Box<dyn runtime::GpuRuntime> = match slot {
        #[cfg(feature = "rocm")]
        Slot::Hip(i) => Box::new(hip::HipRuntime::new(i)?),
        Slot::Cuda(i) => Box::new(cuda::CudaRuntime::new(i)?),
    };
    let dev = Arc::new(GpuDevice::new(index, rt).with_tuning(tuning::Tuning::from_env()?));
    opened[index] = Some(dev.clone());
    Ok(dev)
}

/// The first GPU (what `device="gpu"` means).
pub fn default_device() -> Result<Arc<GpuDevice>> {
    device(0)
}

fn no_gpu_message() -> String {
    let mut why = Vec::new();
    if !cuda::driver_present() {
        why.push("no CUDA driver (libcuda)".to_string());
    } else {
        why.push("the CUDA driver reports no device".to_string());
    }
    #[cfg(feature = "rocm")]
    why.push("the HIP runtime reports no device".to_string());
    #[cfg(not(feature = "rocm"))]
    why.push("AMD GPUs need a build with the `rocm` feature".to_string());
    format!("no GPU found ({})", why.join("; "))
}

/// What `rocmforge.devices()` reports about one GPU.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub index: usize,
    pub name: String,
    pub backend: &'static str,
    pub arch: String,
    pub warp_size: u32,
    pub multiprocessors: u32,
    pub total_memory: u64,
    pub free_memory: u64,
    /// Device bytes rocmforge holds now (weights, caches, scratch).
    pub held_memory: u64,
    pub launches: u64,
    /// The device's tuning record.
    pub tuning: tuning::Tuning,
}

/// Every GPU found (opening each one).
pub fn devices() -> Vec<Result<DeviceInfo>> {
    (0..device_count())
        .map(|i| {
            let dev = device(i)?;
            let rt = dev.runtime();
            let p = rt.props();
            let (free, total) = rt.mem_info().unwrap_or((0, p.total_memory));
            Ok(DeviceInfo {
                index: i,
                name: p.name.clone(),
                backend: rt.backend(),
                arch: p.arch.clone(),
                warp_size: p.warp_size,
                multiprocessors: p.multiprocessors,
                total_memory: total,
                free_memory: free,
                held_memory: dev.allocated_bytes(),
                launches: dev.launch_count(),
                tuning: dev.tuning().clone(),
            })
        })
        .collect()
}
