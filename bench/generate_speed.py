"""What users call against what `rocmforge bench` measures, on the same file in one process.

    python bench/generate_speed.py MODEL.gguf [MODEL.gguf ...] [-n 128] [-r 3] [--device gpu]

For each file: `rocmforge bench`'s tg (n one-token steps from an empty cache, greedy, then
sampled with temperature 0.8, top-k 40, top-p 0.95, min-p 0.05), and the decode speed of
`Model.generate_tokens`, `Model.generate` and a streamed `Model.generate` with the same
settings: the one-token steps after the prefill, divided by the call's wall time less its
prefill (Python's side of every token included). A short prompt, end-of-generation kept from
ending the call early by random-weight files (it is reported when it happens). Prints one
Markdown table; each number is the median of `-r` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

PROMPT = "The quick brown fox"
SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)
GREEDY = dict(temperature=0.0)


def user_rate(model, call) -> tuple[float, int]:
    """(decode tokens/s seen by the caller, tokens generated) of one call."""
    start = time.perf_counter()
    call()
    wall = time.perf_counter() - start
    s = model.stats
    return s["decode_steps"] / max(wall - s["prefill_seconds"], 1e-9), s["generated_tokens"]


def measure(path: str, n: int, repeats: int, device: str) -> list[tuple[str, str, float, int]]:
    import rocmforge as rf
    from rocmforge import _rocmforge

    rows = []
    for mode, sampled in (("greedy", False), ("sampled", True)):
        r = _rocmforge.bench_model(path, device, 0, n, repeats, None, sampled)
        rows.append((mode, "rocmforge bench (tg)", r["tests"][0]["avg_ts"], n))
    with rf.Model(path, device=device, n_ctx=n + 64) as model:
        ids = model.tokenize(PROMPT)
        for mode, params in (("greedy", GREEDY), ("sampled", SAMPLED)):
            calls = {
                "Model.generate_tokens": lambda: model.generate_tokens(
                    ids, max_tokens=n, seed=1, **params),
                "Model.generate": lambda: model.generate(PROMPT, max_tokens=n, seed=1, **params),
                "Model.generate(stream=True)": lambda: sum(
                    1 for _ in model.generate(PROMPT, max_tokens=n, seed=1, stream=True, **params)),
            }
            for name, call in calls.items():
                call()  # warm-up
                runs = [user_rate(model, call) for _ in range(repeats)]
                rows.append((mode, name, statistics.median(r for r, _ in runs),
                             min(g for _, g in runs)))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("-n", type=int, default=128, help="tokens to generate")
    ap.add_argument("-r", type=int, default=3, help="timed runs (median)")
    ap.add_argument("--device", default="gpu")
    args = ap.parse_args()
    import rocmforge as rf

    print(f"device: {rf.devices()[0]['name'] if args.device != 'cpu' else 'cpu'}")
    print("| model | pick | what | decode t/s | vs bench | tokens |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for path in args.models:
        rows = measure(path, args.n, args.r, args.device)
        bench = {mode: rate for mode, what, rate, _ in rows if what.startswith("rocmforge bench")}
        for mode, what, rate, tokens in rows:
            print(f"| {os.path.basename(path)} | {mode} | {what} | {rate:,.1f} | "
                  f"{rate / bench[mode]:.3f} | {tokens} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
