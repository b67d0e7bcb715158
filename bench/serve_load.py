"""Load on an OpenAI-compatible server: N concurrent streams, aggregate output tokens/s, time to
first token and inter-token latency, the same way for rocmforge and llama.cpp's llama-server.

    python bench/serve_load.py --url http://127.0.0.1:8080/v1 -N 16,32,64   # a running server
    python bench/serve_load.py --model FILE --device gpu -N 1,8,16 --max-batch 64   # in process

Each of the N clients sends one streamed completion (`--prompt-tokens` tokens of prompt made of
repeated words, `--max-tokens` out, temperature 0, end-of-generation ignored where the server
allows it: llama-server's `ignore_eos`); all start together. Output tokens are counted from the
streamed chunks (one token a chunk on both servers) and checked against the usage the server
reports where it sends one. Prints one Markdown row per N.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time


def one_stream(client, model: str, prompt: str, max_tokens: int, out: list) -> None:
    start = time.perf_counter()
    stamps = []
    stream = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                       temperature=0, stream=True,
                                       extra_body={"ignore_eos": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            stamps.append(time.perf_counter())
    out.append((start, stamps))


def run_level(client, model: str, n: int, prompt: str, max_tokens: int) -> dict:
    results: list = []
    threads = [threading.Thread(target=one_stream, args=(client, model, prompt, max_tokens, results))
               for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(len(s) for _, s in results)
    ttft = sorted(s[0] - start for start, s in results if s)
    itl = sorted(b - a for _, s in results for a, b in zip(s, s[1:]))

    def pct(v, q):
        return v[min(len(v) - 1, int(q * len(v)))] * 1e3 if v else float("nan")

    return dict(n=n, tokens=tokens, wall=wall, rate=tokens / wall,
                ttft50=pct(ttft, 0.5), ttft99=pct(ttft, 0.99),
                itl50=pct(itl, 0.5), itl99=pct(itl, 0.99))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="base URL of a running server (…/v1)")
    ap.add_argument("--model", help="a .gguf file to serve in this process (rocmforge.Server)")
    ap.add_argument("--device", default="gpu")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("-N", default="1,8,16", help="concurrent streams, comma-separated")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args()
    import openai

    server = None
    if args.model:
        import rocmforge as rf

        server = rf.Server(args.model, port=0, device=args.device, n_ctx=args.n_ctx,
                           max_batch=args.max_batch, queue_size=1024).start()
        url = server.url + "/v1"
    elif args.url:
        url = args.url
    else:
        ap.error("give --url or --model")
    try:
        client = openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        prompt = "the " * args.prompt_tokens  # about one token a word on byte-level BPE vocabularies
        run_level(client, model, 1, prompt, 8)  # warm-up
        print(f"server: {url} ({model}); prompt ~{args.prompt_tokens} tokens, {args.max_tokens} out")
        print("| N | output tok/s | tokens | wall s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n in (int(v) for v in args.N.split(",")):
            r = run_level(client, model, n, prompt, args.max_tokens)
            print(f"| {r['n']} | {r['rate']:,.1f} | {r['tokens']} | {r['wall']:.2f} | {r['ttft50']:.1f} | "
                  f"{r['ttft99']:.1f} | {r['itl50']:.2f} | {r['itl99']:.2f} |", flush=True)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
