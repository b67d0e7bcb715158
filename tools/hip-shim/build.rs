//! The shim carries the SONAME of the HIP runtime the `rocm` build of rocmforge links against
//! (`SHIM_SONAME`, default libamdhip64.so.5: Debian's ROCm 5.2), and, like rocmforge's build.rs,
//! tells the code which name these headers give the device properties (ROCm 6: `*R0600`).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=SHIM_SONAME");
    println!("cargo:rerun-if-env-changed=HIP_PATH");
    println!("cargo:rerun-if-env-changed=ROCM_PATH");
    println!("cargo::rustc-check-cfg=cfg(rocm_r0600)");
    let soname = std::env::var("SHIM_SONAME").unwrap_or_else(|_| "libamdhip64.so.5".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    let mut roots: Vec<PathBuf> = ["HIP_PATH", "ROCM_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(Into::into)
        .collect();
    roots.extend(["/opt/rocm", "/usr"].iter().map(PathBuf::from));
    if let Some(root) = roots
        .into_iter()
        .find(|r| r.join("include/hip/hip_runtime_api.h").is_file())
    {
        let api = std::fs::read_to_string(root.join("include/hip/hip_runtime_api.h"))
            .unwrap_or_default();
        if api.contains("hipGetDevicePropertiesR0600") {
            println!("cargo:rustc-cfg=rocm_r0600");
        }
    }
}
