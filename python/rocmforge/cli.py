"""The ``rocmforge`` command.

    rocmforge info FILE [--json]      what a GGUF file holds: architecture, parameters, types...
    rocmforge generate [PROMPT]       continue a prompt, streaming the text (default model: SmolLM2)
    rocmforge chat                    talk with a model in the terminal
    rocmforge bench --model FILE      pp / tg tokens per second, like llama-bench
    rocmforge serve [--model FILE]    an OpenAI-compatible HTTP server, until Ctrl-C or SIGTERM

Each subcommand is one function below, registered with ``@command(name, help, arguments)``;
``main`` builds the argparse parser from the registry, runs the chosen function, and turns
rocmforge and OS errors into ``rocmforge: error: ...`` on stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

PROG = "rocmforge"


@dataclass
class _Command:
    name: str
    help: str
    arguments: Sequence[tuple[tuple, dict]]
    run: Callable[[argparse.Namespace], Optional[int]]


_COMMANDS: list[_Command] = []


def arg(*flags: str, **options: Any) -> tuple[tuple, dict]:
    """One ``add_argument`` call, for ``@command(..., arguments=[arg(...), ...])``."""
    return flags, options


def command(name: str, help: str, arguments: Sequence[tuple[tuple, dict]] = ()):
    """Register the decorated function as subcommand ``name``; it returns an exit status or None."""

    def register(run: Callable[[argparse.Namespace], Optional[int]]):
        _COMMANDS.append(_Command(name, help, arguments, run))
        return run

    return register


class CommandError(Exception):
    """A user-facing failure of a subcommand: printed as ``rocmforge: error: <message>``."""


# ---------------------------------------------------------------------------------------------
# Human-readable numbers


def human_count(n: int) -> str:
    """134515008 -> '134.5M' (powers of 1000, one decimal)."""
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    """98362432 -> '93.8 MiB' (powers of 1024)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# info


def describe_gguf(path: str) -> dict[str, Any]:
    """The facts ``rocmforge info`` prints, as plain JSON-able values (None where unknown)."""
    from . import GGUFFile

    with GGUFFile(path) as g:
        md = g.metadata
        tensors = g.tensors
        version, file_size = g.version, g.file_size
    arch = md.get("general.architecture")

    def arch_key(suffix: str) -> Any:
        return md.get(f"{arch}.{suffix}") if isinstance(arch, str) else None

    types: dict[str, dict[str, int]] = {}
    for t in tensors:
        entry = types.setdefault(t.dtype, {"tensors": 0, "bytes": 0, "parameters": 0})
        entry["tensors"] += 1
        entry["bytes"] += t.nbytes
        entry["parameters"] += t.n_elements
    tokens = md.get("tokenizer.ggml.tokens")
    vocab_size = len(tokens) if isinstance(tokens, list) else arch_key("vocab_size")
    return {
        "file": os.fspath(path),
        "file_size": file_size,
        "gguf_version": version,
        "architecture": arch,
        "name": md.get("general.name"),
        "parameters": sum(t.n_elements for t in tensors),
        "tensors": len(tensors),
        "tensor_types": dict(sorted(types.items(), key=lambda kv: -kv[1]["bytes"])),
        "context_length": arch_key("context_length"),
        "embedding_length": arch_key("embedding_length"),
        "layers": arch_key("block_count"),
        "heads": arch_key("attention.head_count"),
        "kv_heads": arch_key("attention.head_count_kv"),
        "tokenizer_model": md.get("tokenizer.ggml.model"),
        "tokenizer_pre": md.get("tokenizer.ggml.pre"),
        "vocab_size": vocab_size,
        "metadata_keys": len(md),
    }


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):  # per-layer values (e.g. head counts of some architectures)
        distinct = sorted(set(value))
        return str(distinct[0]) if len(distinct) == 1 else f"per layer, {min(value)}..{max(value)}"
    return str(value)


def format_info(facts: dict[str, Any]) -> str:
    tokenizer = facts["tokenizer_model"]
    if tokenizer is not None and facts["tokenizer_pre"] is not None:
        tokenizer = f"{tokenizer} (pre: {facts['tokenizer_pre']})"
    heads = _show(facts["heads"])
    if facts["kv_heads"] is not None:
        heads += f" (kv heads: {_show(facts['kv_heads'])})"
    rows = [
        ("file", f"{facts['file']}"),
        ("file size", f"{human_bytes(facts['file_size'])} ({facts['file_size']} bytes)"),
        ("gguf version", facts["gguf_version"]),
        ("architecture", facts["architecture"]),
        ("name", facts["name"]),
        ("parameters", f"{human_count(facts['parameters'])} ({facts['parameters']})"),
        ("context length", facts["context_length"]),
        ("embedding length", facts["embedding_length"]),
        ("layers", facts["layers"]),
        ("heads", heads),
        ("tokenizer", tokenizer),
        ("vocab size", facts["vocab_size"]),
        ("metadata keys", facts["metadata_keys"]),
        ("tensors", facts["tensors"]),
    ]
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{label:<{width}}{_show(value)}" for label, value in rows]
    type_lines = [
        f"{dtype:<8} {entry['tensors']:>5} tensor{'s' if entry['tensors'] != 1 else ' '} "
        f"{human_bytes(entry['bytes']):>11} "
        f"({entry['bytes']} bytes, {human_count(entry['parameters'])} parameters)"
        for dtype, entry in facts["tensor_types"].items()
    ]
    for i, line in enumerate(type_lines or ["-"]):
        lines.append(f"{'tensor types' if i == 0 else '':<{width}}{line}")
    return "\n".join(lines)


@command(
    "info",
    "print what a GGUF file holds: architecture, parameters, tensor types, sizes, tokenizer",
    [
        arg("file", help="path of a .gguf file"),
        arg("--json", action="store_true", help="print the facts as one JSON object"),
    ],
)
def info(args: argparse.Namespace) -> int:
    facts = describe_gguf(args.file)
    print(json.dumps(facts, indent=2) if args.json else format_info(facts))
    return 0


# ---------------------------------------------------------------------------------------------
# generate, chat


def _model_arguments() -> list[tuple[tuple, dict]]:
    return [
        arg("--model", help="path of a .gguf file (default: SmolLM2-135M-Instruct, fetched on first use)"),
        arg("--device", default="auto", help='"auto" (first GPU, else CPU), "cpu" or "gpu"'),
        arg("--max-tokens", type=int, default=256, help="most tokens to generate (default 256)"),
        arg("--temperature", type=float, default=0.8, help="0 is greedy (default 0.8)"),
        arg("--seed", type=int, help="seed of the random draws (same seed, same text)"),
        arg("--n-ctx", type=int, help="context length (default: the model's, at most 4096)"),
        arg("--stats", action="store_true", help="print token counts and speeds on stderr"),
    ]


def _open_model(args: argparse.Namespace):
    from . import Model

    return Model(args.model, device=args.device, n_ctx=args.n_ctx, seed=args.seed)


def _print_stats(model) -> None:
    s = model.stats
    print(
        f"[{s['prompt_tokens']} prompt tokens at {s['prefill_tokens_per_s']:.1f} tok/s, "
        f"{s['generated_tokens']} generated at {s['decode_tokens_per_s']:.1f} tok/s, "
        f"finish: {s['finish_reason']}, device: {model.device}]",
        file=sys.stderr,
    )


@command(
    "generate",
    "continue a prompt (read from stdin when not given), streaming the text to stdout",
    [arg("prompt", nargs="?", help="the text to continue (default: stdin)"), *_model_arguments()],
)
def generate(args: argparse.Namespace) -> int:
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    with _open_model(args) as model:
        for piece in model.generate(prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                                    seed=args.seed, stream=True):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if args.stats:
            _print_stats(model)
    return 0


@command(
    "chat",
    "talk with a model in the terminal (its chat template); an empty line or Ctrl-D ends",
    [arg("--system", help="a system message to start the conversation"), *_model_arguments()],
)
def chat(args: argparse.Namespace) -> int:
    messages = [{"role": "system", "content": args.system}] if args.system else []
    with _open_model(args) as model:
        while True:
            try:
                line = input("> ")
            except EOFError:
                print()
                return 0
            if not line.strip():
                return 0
            messages.append({"role": "user", "content": line})
            reply = []
            try:
                for piece in model.chat(messages, max_tokens=args.max_tokens, temperature=args.temperature,
                                        stream=True):
                    reply.append(piece)
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            except KeyboardInterrupt:  # Ctrl-C ends this reply, not the conversation
                sys.stdout.write(" [interrupted]")
            print()
            if args.stats:
                _print_stats(model)
            messages.append({"role": "assistant", "content": "".join(reply)})


# ---------------------------------------------------------------------------------------------
# bench


def llama_bench_count(n: int) -> str:
    """8030261248 -> '8.03 B', 494032768 -> '494.03 M' (llama-bench's params column)."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def size_list(text: str) -> list[int]:
    """'128,512' -> [128, 512]: llama-bench's comma-separated sizes (each >= 0)."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes separated by commas, got {text!r}") from None
    if any(n < 0 for n in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be >= 0, got {text!r}")
    return sizes


def format_bench(r: dict[str, Any]) -> str:
    """The table ``rocmforge bench`` prints: llama-bench's columns (t/s the mean ± standard
    deviation of the repeats) plus, for tg on a GPU, the share of the copy-bandwidth roofline."""
    name = os.path.basename(r["path"])
    lines = [f"device: {r['device']}"]
    bw = r["copy_bandwidth"]
    if bw > 0:
        lines.append(f"device copy bandwidth (read + write): {bw / 1e9:,.0f} GB/s")
    lines.append(
        f"model: {name}, {human_bytes(r['file_bytes'])}; weights read per token: "
        f"{human_bytes(r['bytes_per_token'])}; KV cache {human_bytes(r['kv_cache_bytes'])}")
    if r["peak_device_bytes"]:
        lines.append(f"device memory held (peak): {human_bytes(r['peak_device_bytes'])}")
    if r.get("plan"):
        lines.append("decode plan: " + "; ".join(r["plan"]))
    lines.append("| model | size | params | test | t/s | % of roofline |")
    lines.append("| --- | ---: | ---: | --- | ---: | ---: |")
    size, params = human_bytes(r["model_size"]), llama_bench_count(r["model_n_params"])
    for t in r["tests"]:
        test = t["test"] + (" sampled" if t["n_gen"] and r.get("sampled") else "")
        digits = 1 if t["n_gen"] else 0
        rate = f"{t['avg_ts']:,.{digits}f} ± {t['stddev_ts']:,.{digits}f}"
        roof = t["roofline_ts"]
        pct = f"{100 * t['avg_ts'] / roof:.1f}% of {roof:,.0f}" if roof else ""
        lines.append(f"| {name} | {size} | {params} | {test} | {rate} | {pct} |")
    return "\n".join(lines)


@command(
    "bench",
    "prompt-processing (pp) and token-generation (tg) speed of a model, like llama-bench",
    [
        arg("--model", "-m", required=True, help="path of a .gguf model file"),
        arg("-p", "--n-prompt", type=size_list, default=[512], metavar="N[,N...]",
            help="prompt tokens of the pp tests, one test a size (0: none)"),
        arg("-n", "--n-gen", type=size_list, default=[128], metavar="N[,N...]",
            help="generated tokens of the tg tests, one test a size (0: none)"),
        arg("-d", "--n-depth", type=size_list, default=[0], metavar="N[,N...]",
            help="tokens already in the cache before each test; every test runs at every depth"),
        arg("-r", "--repetitions", type=int, default=3, help="timed runs of each test"),
        arg("--device", default="gpu", help='"gpu" (default), "cpu" or "auto"'),
        arg("--json", action="store_true", help="print the measurements as one JSON object"),
        arg("--sampled", action="store_true",
            help="tg draws its tokens (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05) "
                 "instead of picking greedily"),
        arg("--tuning", default="", metavar="KEY=VALUE,...",
            help="override fields of the GPU's tuning record for this run (docs/TUNING.md)"),
    ],
)
def bench(args: argparse.Namespace) -> int:
    from . import _rocmforge

    if args.repetitions < 1:
        raise CommandError("-r must be >= 1")
    if not any(args.n_prompt) and not any(args.n_gen):
        raise CommandError("nothing to measure: -p and -n are all 0")
    tuning = {}
    for pair in filter(None, (p.strip() for p in args.tuning.split(","))):
        key, sep, value = pair.partition("=")
        if not sep:
            raise CommandError(f"--tuning: expected KEY=VALUE, got {pair!r}")
        tuning[key.strip()] = value.strip()
    r = dict(_rocmforge.bench_model(args.model, args.device, args.n_prompt, args.n_gen,
                                    args.repetitions, tuning or None, args.sampled,
                                    depth=args.n_depth))
    r["path"] = args.model
    print(json.dumps(r, indent=2) if args.json else format_bench(r))
    return 0


# ---------------------------------------------------------------------------------------------
# serve


@command(
    "serve",
    "serve a model over the OpenAI HTTP protocol (/v1/chat/completions, /v1/completions, "
    "/v1/models, /health, /metrics) until Ctrl-C or SIGTERM",
    [
        arg("--model", help="path of a .gguf file (default: SmolLM2-135M-Instruct, fetched on first use)"),
        arg("--host", default="127.0.0.1",
            help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)"),
        arg("--port", type=int, default=8000, help="port to listen on (default 8000; 0: a free one)"),
        arg("--device", default="auto", help='"auto" (first GPU, else CPU), "cpu" or "gpu"'),
        arg("--n-ctx", type=int, help="context length (default: the model's, at most 4096)"),
        arg("--api-key", help="require the header 'Authorization: Bearer KEY' on every endpoint but "
                              "/health (default: $ROCMFORGE_API_KEY; unset: no key)"),
        arg("--queue-size", type=int, default=16,
            help="requests that may wait for the model; one more is answered 429 (default 16)"),
        arg("--max-batch", type=int, default=8,
            help="requests run at once, each with a KV cache of n_ctx positions (default 8)"),
        arg("--model-name", help="the model id /v1/models lists (default: the file's name)"),
        arg("--seed", type=int, help="seed of the draws of requests that give none"),
    ],
)
def serve(args: argparse.Namespace) -> int:
    from . import serve as run_server

    api_key = args.api_key or os.environ.get("ROCMFORGE_API_KEY") or None
    run_server(args.model, host=args.host, port=args.port, device=args.device, n_ctx=args.n_ctx,
               api_key=api_key, queue_size=args.queue_size, seed=args.seed,
               model_name=args.model_name, max_batch=args.max_batch)
    return 0


# ---------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run and inspect GGUF language models on AMD (ROCm) and NVIDIA GPUs, or the CPU.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for cmd in _COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for flags, options in cmd.arguments:
            p.add_argument(*flags, **options)
        p.set_defaults(run=cmd.run)
    return parser


def _error_message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        reason = e.strerror or str(e)
        return f"{e.filename}: {reason}"
    return str(e) or type(e).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .errors import RocmForgeError

    args = build_parser().parse_args(argv)
    try:
        status = args.run(args)
        sys.stdout.flush()
        return int(status or 0)
    except (RocmForgeError, CommandError, OSError, ValueError, TypeError) as e:
        if isinstance(e, BrokenPipeError):  # `rocmforge info x | head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        print(f"{PROG}: error: {_error_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
