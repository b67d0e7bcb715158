#!/usr/bin/env python3
"""Offline check of the shim's hipRTC (no GPU, no driver needed): every kernels/*.hip file,
assembled as src/device/source.rs assembles it, is handed to the shim's hiprtcCreateProgram /
hiprtcCompileProgram with hip.rs's options (source::hiprtc_options: --offload-arch=ARCH, -O3,
-std=c++17), and what hiprtcGetCode returns must be a cubin (an ELF image).

    compile_check.py SHIM_SO KERNELS_DIR MATVEC_INSTANCES_H [ARCH=sm_90] [FILE.hip ...]

Needs libnvrtc where the shim finds it (LD_LIBRARY_PATH, CUDA_HOME, /usr/local/cuda).
"""
import ctypes
import os
import sys
import time


def assemble(name, sources, seen, out, depth=0):
    if depth > 8:
        raise RuntimeError(f"includes nest too deep at {name}")
    out.append(f"// ---- {name}\n")
    for line in sources[name].splitlines():
        t = line.lstrip()
        if t.startswith('#include "'):
            header = t[len('#include "'):].split('"')[0]
            if header not in seen:
                seen.append(header)
                assemble(header, sources, seen, out, depth + 1)
            continue
        if t.startswith("#pragma once"):
            continue
        out.append(line + "\n")


def main():
    shim, kdir, instances = sys.argv[1:4]
    arch = sys.argv[4] if len(sys.argv) > 4 else "sm_90"
    only = sys.argv[5:]
    sources = {}
    for f in sorted(os.listdir(kdir)):
        if f.endswith((".hip", ".h")):
            sources[f] = open(os.path.join(kdir, f)).read()
    sources["matvec_instances.h"] = open(instances).read()
    lib = ctypes.CDLL(shim)
    P = ctypes.c_void_p
    opts = [f"--offload-arch={arch}", "-O3", "-std=c++17"]
    copts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    failed = 0
    for f in sorted(sources):
        if not f.endswith(".hip") or (only and f not in only):
            continue
        out = []
        assemble(f, sources, [], out)
        src = "".join(out).encode()
        prog = P()
        t0 = time.time()
        r = lib.hiprtcCreateProgram(ctypes.byref(prog), src, f.encode(), 0, None, None)
        if r != 0:
            print(f"{f}: hiprtcCreateProgram -> {r}")
            failed += 1
            continue
        rc = lib.hiprtcCompileProgram(prog, len(opts), copts)
        n = ctypes.c_size_t()
        log = b""
        if lib.hiprtcGetProgramLogSize(prog, ctypes.byref(n)) == 0 and n.value > 1:
            buf = ctypes.create_string_buffer(n.value)
            lib.hiprtcGetProgramLog(prog, buf)
            log = buf.value
        if rc != 0:
            print(f"{f}: hiprtcCompileProgram -> {rc}\n{log.decode(errors='replace')[-3000:]}")
            failed += 1
        else:
            lib.hiprtcGetCodeSize(prog, ctypes.byref(n))
            code = ctypes.create_string_buffer(n.value)
            r = lib.hiprtcGetCode(prog, code)
            elf = code.raw[:4] == b"\x7fELF"
            print(f"{f}: ok, {n.value} byte {'cubin' if elf else 'NON-ELF image'}, "
                  f"{time.time() - t0:.1f}s")
            if r != 0 or not elf:
                failed += 1
        lib.hiprtcDestroyProgram(ctypes.byref(prog))
    print(f"{'FAILED' if failed else 'OK'}: {failed} file(s) failed (arch {arch})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
