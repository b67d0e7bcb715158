"""CPU decode speed of rocmforge against llama.cpp on the same file and machine.

    python bench/cpu_decode.py [--model PATH] [-n 128] [--threads 2] [--rounds 3]

Both engines get the same prompt, prefill it, then decode `n` tokens greedily; reported are
tokens per second of the one-token steps, and tokens per CPU-second of the process (all its
threads): with one thread, the second is what one core gives when nothing else runs, a figure
that a machine shared with other work disturbs much less than wall time. Each measurement runs in a fresh process
(the engines' thread pools spin while idle and would slow each other down in one process), and
rounds alternate between the engines so that a machine shared with other work slows both
alike; the best round of each is reported. llama.cpp is measured through the `llama_cpp`
package (llama-cpp-python) when it is installed. rocmforge's threads: RAYON_NUM_THREADS.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

PROMPT = "Once upon a time, in a small village at the edge of a great forest, there lived"


def measure_rocmforge(path: str, n: int, threads: int) -> tuple[float, float]:
    """(tokens per second, tokens per CPU-second) of the one-token decode steps."""
    import rocmforge as rf

    with rf.Model(path, device="cpu", n_ctx=512) as model:
        ids = model.tokenize(PROMPT)
        model.generate_tokens(ids, max_tokens=8, temperature=0)  # warm-up; the cache holds the prompt
        cpu0 = time.process_time()
        model.generate_tokens(ids, max_tokens=n, temperature=0)  # n steps of one token
        cpu = time.process_time() - cpu0
        stats = model.stats
        if stats["generated_tokens"] < n:
            print(f"  rocmforge stopped after {stats['generated_tokens']} tokens", file=sys.stderr)
        return stats["decode_tokens_per_s"], stats["generated_tokens"] / cpu


def measure_llamacpp(path: str, n: int, threads: int) -> tuple[float, float]:
    """The same for llama.cpp (greedy pick in NumPy between its decode calls)."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=512, n_threads=threads, n_batch=512, verbose=False)
    for tokens in (8, n):  # warm-up, then the measured run
        llm.reset()
        llm.eval(llm.tokenize(PROMPT.encode()))
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(tokens - 1):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return (n - 1) / elapsed, (n - 1) / cpu


ENGINES = {"rocmforge": measure_rocmforge, "llama.cpp": measure_llamacpp}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("-n", type=int, default=128, help="tokens to generate per round")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engine", choices=list(ENGINES), help="measure one engine once (internal)")
    ap.add_argument("--no-llamacpp", action="store_true", help="measure rocmforge only")
    args = ap.parse_args()

    if args.model is None:
        from rocmforge._models import default_model_path

        args.model = str(default_model_path())
    if args.engine:
        wall, per_cpu = ENGINES[args.engine](args.model, args.n, args.threads)
        print(f"{wall:.2f} {per_cpu:.2f}")
        return 0

    engines = ["rocmforge"]
    if not args.no_llamacpp:
        try:
            import llama_cpp  # noqa: F401

            engines.append("llama.cpp")
        except ImportError:
            print("llama_cpp not installed: measuring rocmforge only", file=sys.stderr)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    best = {e: 0.0 for e in engines}
    best_cpu = {e: 0.0 for e in engines}
    for r in range(args.rounds):
        line = f"round {r + 1}:"
        for engine in engines:
            cmd = [sys.executable, __file__, "--engine", engine, "--model", args.model,
                   "-n", str(args.n), "--threads", str(args.threads)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            tok_s, per_cpu = map(float, out.stdout.strip().splitlines()[-1].split())
            best[engine] = max(best[engine], tok_s)
            best_cpu[engine] = max(best_cpu[engine], per_cpu)
            line += f"  {engine} {tok_s:7.1f} tok/s ({per_cpu:6.1f} per cpu-s)"
        print(line, flush=True)

    print(f"\n{os.path.basename(args.model)}, {args.threads} threads, {args.n} tokens, best of {args.rounds}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min)")
    for engine in engines:
        print(f"{engine:<10} decode {best[engine]:7.1f} tok/s, {best_cpu[engine]:7.1f} tok per cpu-second")
    if len(best) == 2:
        print(f"ratio      {best['rocmforge'] / best['llama.cpp']:7.2f} (wall), "
              f"{best_cpu['rocmforge'] / best_cpu['llama.cpp']:.2f} (per cpu-second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
