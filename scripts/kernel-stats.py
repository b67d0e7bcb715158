#!/usr/bin/env python3
"""Registers, spills and PTX instruction counts of kernels, as NVRTC builds them for NVIDIA.

    scripts/kernel-stats.py [--arch sm_90] [--kernels DIR] [--include DIR ...] FILE.hip [NAME ...]

Assembles FILE (its `#include "x.h"` inlined from DIR, default kernels/, then the --include
directories: e.g. the build's OUT_DIR for the generated matvec_instances.h), compiles it once to
a cubin with `--ptxas-options=-v` (the runtime's own flags otherwise) and once to PTX, and prints
one line per kernel whose name contains one of NAMEs (all kernels without NAMEs): registers,
spill stores/loads (bytes), stack frame and PTX instructions. Needs libnvrtc (pip
nvidia-cuda-nvrtc-cu12; found on sys.path like scripts/check-kernels.sh does). No GPU needed.
Used to compare a kernel's old and new builds (same card generation, same NVRTC).

--sass also disassembles the cubin (cuobjdump and nvdisasm: pip nvidia-cuda-cuobjdump
nvidia-cuda-nvdisasm, found on PATH or sys.path) and prints each listed kernel's SASS
instructions, in all and by opcode: static counts, which show what a change to a kernel's
inner loop removed (conversions, lookups) without a GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import collections
import re
import shutil
import subprocess
import sys
import tempfile


def assemble(path: str, dirs: list[str], seen: set[str] | None = None) -> str:
    """The text of `path` with each `#include "x.h"` found in `dirs` inlined once (as
    src/device/source.rs does)."""
    seen = set() if seen is None else seen
    out = [f"// ---- {os.path.basename(path)}"]
    with open(path) as f:
        for line in f.read().splitlines():
            t = line.lstrip()
            if t.startswith('#include "'):
                header = t.split('"')[1]
                if header not in seen:
                    seen.add(header)
                    found = next((os.path.join(d, header) for d in dirs if os.path.isfile(os.path.join(d, header))), None)
                    if found is None:
                        sys.exit(f"{header} (included by {path}) not found in {dirs}")
                    out.append(assemble(found, dirs, seen))
                continue
            if t.startswith("#pragma once"):
                continue
            out.append(line)
    return "\n".join(out) + "\n"


def load_nvrtc() -> ctypes.CDLL:
    names = []
    for p in sys.path:
        names += sorted(glob.glob(os.path.join(p, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")))
    names += ["libnvrtc.so", "libnvrtc.so.12", "libnvrtc.so.13"]
    for n in names:
        try:
            return ctypes.CDLL(n)
        except OSError:
            continue
    sys.exit("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12)")


def compile_(lib: ctypes.CDLL, src: str, name: str, opts: list[str],
             cubin_out: list[bytes] | None = None) -> tuple[str, bytes]:
    prog = ctypes.c_void_p()
    check = lambda r, what: r == 0 or sys.exit(f"{what} failed ({r})")
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None), "nvrtcCreateProgram")
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    res = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if res != 0:
        sys.exit(f"{name}: compilation failed\n{log.value.decode(errors='replace')}")
    ptx = b""
    if cubin_out is not None:
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetCUBIN(prog, buf)
        cubin_out.append(buf.raw)
    if any(o.startswith("--gpu-architecture=compute_") for o in opts):
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, buf)
        ptx = buf.value
    return log.value.decode(errors="replace"), ptx


def ptx_entries(ptx: str) -> dict[str, str]:
    """The text of each .entry."""
    out: dict[str, str] = {}
    name = None
    for line in ptx.splitlines():
        m = re.match(r"\s*\.(?:visible\s+)?\.entry\s+(\w+)", line)
        if m:
            name = m.group(1)
            out[name] = ""
        if name is not None:
            out[name] += line + "\n"
            if line.strip() == "}" and not line.startswith("\t"):
                name = None
    return out


def ptx_instructions(ptx: str) -> dict[str, int]:
    """Instructions per .entry (lines that are neither directives, labels, braces nor comments)."""
    counts: dict[str, int] = {}
    name = None
    for line in ptx.splitlines():
        m = re.match(r"\s*\.(?:visible\s+)?\.entry\s+(\w+)", line)
        if m:
            name = m.group(1)
            counts[name] = 0
            continue
        if name is None:
            continue
        t = line.strip()
        if t == "}" and not line.startswith("\t"):
            name = None
            continue
        if not t or t.startswith((".", "//", "{", "}", "$")) or t.endswith(":"):
            continue
        counts[name] += 1
    return counts


def cuda_tool(name: str) -> str:
    """A CUDA binary tool from PATH or a pip package's nvidia/*/bin on sys.path."""
    found = shutil.which(name)
    for p in sys.path:
        found = found or next(iter(sorted(glob.glob(os.path.join(p, "nvidia", "*", "bin", name)))), None)
    if found is None:
        sys.exit(f"{name} not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    return found


def sass_opcodes(cubin: bytes) -> dict[str, collections.Counter]:
    """Opcode counts (without modifiers) of each function's SASS."""
    cuobjdump = cuda_tool("cuobjdump")
    env = dict(os.environ, PATH=os.path.dirname(cuda_tool("nvdisasm")) + os.pathsep + os.environ.get("PATH", ""))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True, env=env, check=True).stdout
    counts: dict[str, collections.Counter] = {}
    name = None
    for line in out.splitlines():
        m = re.match(r"\s+Function : (\S+)", line)
        if m:
            name = m.group(1)
            counts[name] = collections.Counter()
            continue
        m = re.match(r"\s+/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if m and name:
            counts[name][m.group(1).split(".")[0]] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("names", nargs="*")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--kernels", default=os.path.join(os.path.dirname(__file__), "..", "kernels"))
    ap.add_argument("--include", action="append", default=[])
    ap.add_argument("--dump", metavar="DIR", help="also write each listed kernel's PTX to DIR/NAME.ptx")
    ap.add_argument("--sass", action="store_true", help="also print each listed kernel's SASS opcode counts")
    args = ap.parse_args()
    src = assemble(args.file, [os.path.dirname(os.path.abspath(args.file)), args.kernels, *args.include])
    lib = load_nvrtc()
    base = ["-std=c++17"]
    cubin: list[bytes] = []
    log, _ = compile_(lib, src, os.path.basename(args.file), [f"--gpu-architecture={args.arch}", *base, "--ptxas-options=-v"],
                      cubin if args.sass else None)
    sass = sass_opcodes(cubin[0]) if args.sass else {}
    _, ptx = compile_(lib, src, os.path.basename(args.file), [f"--gpu-architecture=compute_{args.arch[3:]}", *base])
    instr = ptx_instructions(ptx.decode())
    entries = ptx_entries(ptx.decode())
    stats: dict[str, dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line) or re.search(r"Function properties for (\w+)", line)
        if m:
            current = m.group(1)
            stats.setdefault(current, {})
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current:
            stats[current].update(stack=int(m.group(1)), spill_st=int(m.group(2)), spill_ld=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m and current:
            stats[current]["regs"] = int(m.group(1))
    print(f"{'kernel':<48} {'regs':>5} {'spill st/ld':>12} {'stack':>6} {'PTX instr':>10}   ({args.arch})")
    for k in sorted(stats):
        if args.names and not any(n in k for n in args.names):
            continue
        s = stats[k]
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            with open(os.path.join(args.dump, k + ".ptx"), "w") as f:
                f.write(entries.get(k, ""))
        print(f"{k:<48} {s.get('regs', 0):>5} {s.get('spill_st', 0):>6}/{s.get('spill_ld', 0):<5} {s.get('stack', 0):>6} {instr.get(k, 0):>10}")
        if k in sass:
            ops = ", ".join(f"{op} {n}" for op, n in sass[k].most_common(16))
            print(f"    SASS {sum(sass[k].values())}: {ops}")


if __name__ == "__main__":
    main()
