"""Micro-benchmark of every GPU op: kernel time from device events (warmed up, median of the
timed runs), inputs random and resident on the device, and the achieved GB/s (fewest bytes the
op must move: each input read once, each output written once) or TFLOP/s.

Also measured in the same run, on the same card: a device-to-device copy (the bandwidth
ceiling, bytes read + written) and, when PyTorch is installed, torch's
scaled_dot_product_attention on the same float32 shapes as flash_attention.

    python bench/ops_bench.py [--quick | --matvec | --mma] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import rocmforge as rf
from rocmforge import _rocmforge as native

GGUF_BLOCK = {  # type: (elements per block, bytes per block)
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20),
    "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34), "Q2_K": (256, 84), "Q3_K": (256, 110),
    "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210), "Q8_K": (256, 292),
}


def weight_bytes(dtype, rows, cols):
    block, size = GGUF_BLOCK[dtype]
    return rows * cols // block * size


def visible_pairs(seq_q, seq_k, causal):
    """(query, key) pairs attention computes: all, or those under the bottom-right causal mask."""
    if not causal:
        return seq_q * seq_k
    offset = seq_k - seq_q
    return sum(min(seq_k, max(0, i + offset + 1)) for i in range(seq_q))


def matvec_cases(add):
    """Decode (m = 1) matmuls of Llama-3-8B's shapes (op matvec: the model's decode family, x in
    8 bits), the benchmark models' types and Q4_K; the LM head (128256 x 4096) is larger than any
    L2, the others fit in the H100/H200's."""
    for dt in ("Q4_0", "Q8_0", "Q4_K"):
        for n, k in ((4096, 4096), (14336, 4096), (4096, 14336), (128256, 4096)):
            wb = weight_bytes(dt, n, k)
            add(f"matvec {dt} {n}x{k}", "matvec", {"m": 1, "n": n, "k": k}, wb + 4 * (k + n),
                2.0 * n * k, dtype=dt)


def mma_cases(add):
    """Prefill matmuls on tensor cores (op matmul_mma: pre-pass + kernel), Llama-3-8B shapes,
    against the FP32 tiled kernel (op matmul) at the same sizes; m = 256 is the model's prefill
    chunk; small m places the threshold; bm forces the row tile."""
    for dt in ("Q4_0", "Q8_0", "Q4_K", "Q6_K", "F16"):
        for n, k in ((4096, 4096), (14336, 4096)):
            if dt in ("Q6_K", "F16") and n != 4096:
                continue
            for m in (512, 256):
                wb = weight_bytes(dt, n, k)
                add(f"matmul_mma {dt} m={m} {n}x{k}", "matmul_mma", {"m": m, "n": n, "k": k},
                    wb + 4 * m * (k + n), 2.0 * m * n * k, dtype=dt)
    for bm in (64, 128):
        add(f"matmul_mma Q4_0 m=512 4096x4096 bm={bm}", "matmul_mma", {"m": 512, "n": 4096, "k": 4096, "bm": bm},
            weight_bytes("Q4_0", 4096, 4096) + 4 * 512 * 8192, 2.0 * 512 * 4096 * 4096, dtype="Q4_0")
    for m in (9, 16, 32, 64, 512):
        for op in ("matmul_mma", "matmul"):
            add(f"{op} Q4_0 m={m} 4096x4096", op, {"m": m, "n": 4096, "k": 4096},
                weight_bytes("Q4_0", 4096, 4096) + 4 * m * 8192, 2.0 * m * 4096 * 4096, dtype="Q4_0")


def cases(quick, matvec_only=False, mma_only=False):
    """(label, op, params, dtype, bytes moved, flops)."""
    out = []
    add = lambda label, op, params, nbytes, flops=0.0, dtype="F32": out.append((label, op, params, dtype, nbytes, flops))

    add("copy 1 GiB (read + write)", "copy", {"bytes": 1 << 30}, 2 * (1 << 30))
    if mma_only:
        mma_cases(add)
        return out, None
    matvec_cases(add)
    if matvec_only:
        return out, None
    rows, dim = 512, 4096
    add(f"rms_norm {rows}x{dim}", "rms_norm", {"rows": rows, "dim": dim}, 4 * (2 * rows * dim + dim))
    tok, heads, hd = 512, 32, 128
    add(f"rope {tok}x{heads}x{hd}", "rope", {"tokens": tok, "heads": heads, "head_dim": hd}, 8 * tok * heads * hd)
    n = 512 * 14336
    add(f"swiglu {n}", "swiglu", {"n": n}, 12 * n)
    n = 512 * 4096
    add(f"add {n}", "add", {"n": n}, 12 * n)
    add(f"scale {n}", "scale", {"n": n}, 8 * n)
    add("argmax 151936", "argmax", {"n": 151936}, 4 * 151936)
    add("kv_append 512x1024 f16", "kv_append", {"n": 512, "row_len": 1024, "n_ctx": 4096, "f16": 1}, 512 * 1024 * 6)
    vocab, dim, ids = 32000, 4096, 512
    for dt in ("Q4_0", "Q6_K"):
        add(f"embedding {dt} {ids} of {vocab}x{dim}", "embedding", {"n": vocab, "k": dim, "n_ids": ids},
            ids * weight_bytes(dt, 1, dim) + 4 * ids * dim, dtype=dt)

    n, k = 4096, 4096
    types = ["F32", "F16", "Q4_0", "Q8_0", "Q4_K", "Q6_K"] if quick else list(GGUF_BLOCK)
    for dt in types:
        for m in (1, 512):
            wb = weight_bytes(dt, n, k)
            add(f"matmul {dt} m={m} {n}x{k}", "matmul", {"m": m, "n": n, "k": k},
                wb + 4 * m * (k + n), 2.0 * m * n * k, dtype=dt)
    if not quick:
        mma_cases(add)

    def attn(label, op, b, sq, sk, h, kvh, d, causal=True, f16=False):
        p = {"batch": b, "seq_q": sq, "seq_k": sk, "heads": h, "kv_heads": kvh, "head_dim": d,
             "causal": int(causal), "f16": int(f16)}
        kv_elem = 2 if f16 else 4
        q_bytes = 4 * b * sq * h * d
        kv_bytes = 2 * kv_elem * b * sk * kvh * d
        scores = 4 * b * h * sq * sk
        pairs = b * h * visible_pairs(sq, sk, causal and op == "flash_attention")
        nbytes = {"flash_attention": 2 * q_bytes + kv_bytes, "qkt_matmul": q_bytes + kv_bytes // 2 + scores,
                  "softmax": 2 * scores, "weighted_matmul": scores + kv_bytes // 2 + q_bytes}[op]
        flops = {"flash_attention": 4.0 * pairs * d, "qkt_matmul": 2.0 * pairs * d, "softmax": 0.0,
                 "weighted_matmul": 2.0 * pairs * d}[op]
        add(label, op, p, nbytes, flops)
        return p

    fa = attn("flash_attention b1 h32 s4096 d128 causal f32", "flash_attention", 1, 4096, 4096, 32, 32, 128)
    attn("flash_attention b2 h32/8 s4096 d128 causal f32", "flash_attention", 2, 4096, 4096, 32, 8, 128)
    attn("flash_attention b1 h32 s4096 d128 full f32", "flash_attention", 1, 4096, 4096, 32, 32, 128, causal=False)
    attn("flash_attention decode h32/8 k8192 d128 f16 kv", "flash_attention", 1, 1, 8192, 32, 8, 128, f16=True)
    attn("flash_attention decode h32/8 k65536 d128 f32", "flash_attention", 1, 1, 65536, 32, 8, 128)
    if not quick:
        attn("qkt_matmul b1 h32/8 s1024 d128", "qkt_matmul", 1, 1024, 1024, 32, 8, 128, causal=False)
        attn("softmax b1 h32 1024x1024", "softmax", 1, 1024, 1024, 32, 8, 128, causal=False)
        attn("weighted_matmul b1 h32/8 s1024 d128", "weighted_matmul", 1, 1024, 1024, 32, 8, 128, causal=False)
    return out, fa


def torch_sdpa_ms(p, warmup=5, iters=20):
    """Median device time of torch's scaled_dot_product_attention, float32, same shape."""
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    b, s, h, kvh, d = p["batch"], p["seq_q"], p["heads"], p["kv_heads"], p["head_dim"]
    q = torch.randn(b, h, s, d, device="cuda", dtype=torch.float32, generator=g)
    k = torch.randn(b, kvh, p["seq_k"], d, device="cuda", dtype=torch.float32, generator=g)
    v = torch.randn(b, kvh, p["seq_k"], d, device="cuda", dtype=torch.float32, generator=g)
    if kvh != h:
        k, v = k.repeat_interleave(h // kvh, dim=1), v.repeat_interleave(h // kvh, dim=1)
    f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=bool(p["causal"]))
    for _ in range(warmup):
        f()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        f()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer matmul types, no unfused attention")
    ap.add_argument("--matvec", action="store_true", help="only the copy and the decode matvecs")
    ap.add_argument("--mma", action="store_true", help="only the copy and the tensor-core prefill matmuls")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    gpus = [d for d in rf.devices() if d["device"].startswith("gpu") and "error" not in d]
    if not gpus:
        print("no GPU found", file=sys.stderr)
        return 1
    card = gpus[0]
    print(f"device: {card['name']} ({card['backend']}, {card['arch']}, {card['multiprocessors']} SMs, "
          f"{card['memory_total'] / 2**30:.1f} GiB)")
    table, fa = cases(args.quick, args.matvec, args.mma)
    rows = []
    for label, op, params, dtype, nbytes, flops in table:
        try:
            t = statistics.median(native.gpu_bench(op, params, dtype, 5, 20))
        except Exception as e:  # keep going: one failing case must not hide the others
            print(f"{label}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        s = t / 1e3
        rows.append({"case": label, "ms": t, "GB/s": nbytes / s / 1e9, "TFLOP/s": flops / s / 1e12 if flops else None})
    torch_row = None
    try:
        if fa is None:
            raise RuntimeError("not asked for")
        ms = torch_sdpa_ms(fa)
        _, _, _, _, nbytes, flops = table[[r[0] for r in table].index("flash_attention b1 h32 s4096 d128 causal f32")]
        torch_row = {"case": "torch sdpa b1 h32 s4096 d128 causal f32", "ms": ms,
                     "GB/s": nbytes / (ms / 1e3) / 1e9, "TFLOP/s": flops / (ms / 1e3) / 1e12}
        rows.append(torch_row)
    except Exception as e:
        print(f"torch comparison skipped: {type(e).__name__}: {e}", file=sys.stderr)

    print(f"\n| case | kernel time | GB/s | TFLOP/s |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        tf = f"{r['TFLOP/s']:.2f}" if r["TFLOP/s"] else ""
        print(f"| {r['case']} | {r['ms'] * 1e3:,.1f} us | {r['GB/s']:,.0f} | {tf} |")
    if torch_row:
        ours = next(r for r in rows if r["case"] == "flash_attention b1 h32 s4096 d128 causal f32")
        print(f"\nflash_attention / torch sdpa (float32, b1 h32 s4096 d128 causal): "
              f"{ours['ms'] / torch_row['ms']:.2f}x the time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": card, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
