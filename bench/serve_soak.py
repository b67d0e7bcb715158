"""Soak of a rocmforge server under faults: many clients, some of which go away mid-answer.

    python bench/serve_soak.py                                  # serves the default model for the run
    python bench/serve_soak.py --model FILE --device cpu --clients 16 --duration 120
    python bench/serve_soak.py --url http://127.0.0.1:8000/v1 --api-key KEY   # a running server

`--clients` threads (default 64) each loop for `--duration` seconds (default 600): a random
request over a fresh connection (completion or chat, streamed or not, greedy or sampled with a
seed, a prompt from a fixed set, a max_tokens from a few), and now and then a malformed one
(which must answer 400 naming the field). A share of the requests (`--cancel-rate`) ask for a
long answer and are abandoned mid-answer: the socket is closed (at random, with a reset) after a
few streamed events, or a moment after sending a non-streamed request. A 429 must carry
Retry-After; the client then waits that long.

At the end (exit status 1 when any fails) it checks: no 5xx status and no error event inside a
stream; no connection error the client did not cause; every stream that was read to its end
ends with [DONE]; answers to the same greedy or seeded request are all equal, during the run
and once more after it; the in-use gauges of /metrics (requests_running, sequence_slots_in_use,
kv_positions_in_use, queue_length) back at 0; and the server's resident memory at the middle
and at the end no more than `--rss-slack-mib` above its value after the warm-up. The memory is
read from /proc for a server this script started, else from the server's own
`process_resident_memory_bytes`. A server this script started must stop on SIGTERM with status
0. The report is one JSON object on stdout.

`soak()` is the same run as a function (tests_py/test_server.py runs a short one).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

PROMPTS = ("the cat", "he", "at the", "in a")
MAX_TOKENS = (1, 8, 24)
SEEDS = (None, 3)  # None: greedy; else sampled with that seed
IN_USE_GAUGES = ("rocmforge_requests_running", "rocmforge_sequence_slots_in_use",
                 "rocmforge_kv_positions_in_use", "rocmforge_queue_length")

# Malformed requests: (path, body, the `param` the 400 must name; None: the body as a whole).
BAD_REQUESTS = (
    ("/completions", b'{"prompt": "the', None),
    ("/completions", {"prompt": "he", "max_tokens": "ten"}, "max_tokens"),
    ("/completions", {"prompt": "he", "n": 3}, "n"),
    ("/chat/completions", {"messages": "hi"}, "messages"),
    ("/chat/completions", {"messages": [{"role": "user", "content": "he"}], "temperature": [1]},
     "temperature"),
    ("/chat/completions", {"messages": [{"role": "user", "content": "he"}], "top_p": 2}, "top_p"),
)
MiB = 1 << 20


class Target:
    """Where requests go: the server's host, port and /v1 prefix, and the auth header."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 300.0):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def metrics(self) -> dict:
        """The unlabelled samples of /metrics."""
        conn = self.connect()
        try:
            conn.request("GET", "/metrics", headers=self.headers)
            r = conn.getresponse()
            text = r.read().decode()
            if r.status != 200:
                raise RuntimeError(f"/metrics answered {r.status}: {text[:200]}")
        finally:
            conn.close()
        out = {}
        for line in text.splitlines():
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Tally:
    """What the clients saw (all counts under one lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.statuses: dict = {}
        self.sent = self.cancelled = self.bad_sent = 0
        self.errors: list = []  # unexpected: connection errors, wrong statuses, stream errors
        self.incomplete_streams = 0
        self.missing_retry_after = 0
        self.answers: dict = {}  # request key -> the first complete text
        self.mismatches: list = []

    def status(self, code: int):
        with self.lock:
            self.statuses[code] = self.statuses.get(code, 0) + 1

    def error(self, what: str):
        with self.lock:
            self.errors.append(what)

    def answer(self, key: tuple, text: str):
        with self.lock:
            first = self.answers.setdefault(key, text)
            if first != text:
                self.mismatches.append({"request": list(key), "first": first, "now": text})


def request_body(endpoint: str, prompt: str, max_tokens: int, seed, stream: bool) -> dict:
    body: dict = {"model": "soak", "max_tokens": max_tokens, "stream": stream}
    if seed is None:
        body["temperature"] = 0
    else:
        body.update(temperature=0.8, seed=seed)
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def abandon(conn: http.client.HTTPConnection, rng: random.Random):
    """Close the connection as a client that goes away: a plain close, or a reset."""
    if conn.sock is not None and rng.random() < 0.5:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def text_of(endpoint: str, event: dict) -> str:
    if not event.get("choices"):
        return ""
    c = event["choices"][0]
    return (c.get("delta", {}).get("content") or "") if endpoint == "chat" else c.get("text", "")


def one_request(target: Target, tally: Tally, rng: random.Random, cancel_rate: float,
                cancel_max_tokens: int, prompts, max_tokens_choices, seeds) -> float:
    """Send one request and check its answer; returns how long to wait before the next."""
    if rng.random() < 0.05:
        return bad_request(target, tally, rng)
    endpoint = rng.choice(("chat", "completion"))
    stream = rng.random() < 0.7
    cancel = rng.random() < cancel_rate
    prompt = rng.choice(prompts)
    seed = rng.choice(seeds)
    max_tokens = cancel_max_tokens if cancel else rng.choice(max_tokens_choices)
    body = request_body(endpoint, prompt, max_tokens, seed, stream)
    path = target.prefix + ("/chat/completions" if endpoint == "chat" else "/completions")
    key = (endpoint, prompt, max_tokens, seed)
    conn = target.connect()
    try:
        conn.request("POST", path, json.dumps(body), target.headers)
        with tally.lock:
            tally.sent += 1
        if cancel and not stream:
            time.sleep(rng.uniform(0.0, 0.1))
            abandon(conn, rng)
            with tally.lock:
                tally.cancelled += 1
            return 0.0
        r = conn.getresponse()
        tally.status(r.status)
        if r.status == 429:
            r.read()
            retry = r.getheader("Retry-After")
            if retry is None or not retry.strip().isdigit():
                with tally.lock:
                    tally.missing_retry_after += 1
                return 1.0
            return min(float(retry), 2.0) * rng.uniform(0.5, 1.0)
        if r.status != 200:
            tally.error(f"{r.status} for {json.dumps(body)}: {r.read()[:300]!r}")
            return 0.0
        if not stream:
            answer = json.loads(r.read())
            c = answer["choices"][0]
            tally.answer(key, c["message"]["content"] if endpoint == "chat" else c["text"])
            return 0.0
        stop_after = rng.randint(1, 8) if cancel else None
        events, text, done = 0, [], False
        while True:
            line = r.readline()
            if not line:
                break
            line = line.decode().rstrip("\r\n")
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                tally.error(f"error event in a stream: {data[:300]}")
                return 0.0
            text.append(text_of(endpoint, event))
            events += 1
            if stop_after is not None and events >= stop_after:
                abandon(conn, rng)
                with tally.lock:
                    tally.cancelled += 1
                return 0.0
        if not done:
            with tally.lock:
                tally.incomplete_streams += 1
            return 0.0
        if stop_after is None:
            tally.answer(key, "".join(text))
        return 0.0
    except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
        tally.error(f"{type(e).__name__}: {e} for {json.dumps(body)}")
        return 0.0
    finally:
        conn.close()


def bad_request(target: Target, tally: Tally, rng: random.Random) -> float:
    path, body, param = rng.choice(BAD_REQUESTS)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = target.connect()
    try:
        conn.request("POST", target.prefix + path, raw, target.headers)
        r = conn.getresponse()
        tally.status(r.status)
        text = r.read()
        with tally.lock:
            tally.bad_sent += 1
        if r.status == 429:
            return 1.0
        err = json.loads(text).get("error", {}) if r.status == 400 else {}
        if r.status != 400 or err.get("param") != param or set(err) != {"message", "type", "param", "code"}:
            tally.error(f"{raw[:100]!r} answered {r.status} {text[:300]!r} (want 400 naming {param})")
    except (OSError, http.client.HTTPException, ValueError) as e:
        tally.error(f"{type(e).__name__}: {e} for {raw[:100]!r}")
    finally:
        conn.close()
    return 0.0


def wait_idle(target: Target, timeout: float) -> dict:
    """The in-use gauges once all are 0, or as they are when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        m = target.metrics()
        gauges = {g: m.get(g) for g in IN_USE_GAUGES}
        if all(v == 0 for v in gauges.values()) or time.monotonic() > deadline:
            return gauges
        time.sleep(0.05)


def soak(url: str, *, clients: int = 64, duration: float = 600.0, warmup: float | None = None,
         cancel_rate: float = 0.3, cancel_max_tokens: int = 256, api_key: str | None = None,
         rss=None, rss_slack_mib: float = 64.0, seed: int | None = None, prompts=PROMPTS,
         max_tokens=MAX_TOKENS, seeds=SEEDS, sample_every: float = 1.0,
         idle_timeout: float = 60.0) -> dict:
    """Run the soak against the server at `url` (…/v1) and return the report (see the module's
    doc); `rss`: a function giving the server's resident bytes (None: its /metrics value)."""
    target = Target(url, api_key)
    warmup = min(60.0, duration / 10) if warmup is None else warmup
    seed = random.randrange(1 << 32) if seed is None else seed
    tally = Tally()
    read_rss = rss or (lambda: int(target.metrics()["process_resident_memory_bytes"]))
    t0 = time.monotonic()
    end = t0 + duration

    def client(i: int):
        rng = random.Random(seed * 1000 + i)
        while time.monotonic() < end:
            pause = one_request(target, tally, rng, cancel_rate, cancel_max_tokens, prompts,
                                max_tokens, seeds)
            time.sleep(min(pause, max(0.0, end - time.monotonic())))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    # Samples of the gauges while the clients run (their peaks show the run did hold things).
    peaks = {g: 0.0 for g in IN_USE_GAUGES + ("rocmforge_sequence_slots",)}
    samples = {}
    marks = [("start", t0 + warmup), ("middle", t0 + warmup + (duration - warmup) / 2)]
    while time.monotonic() < end:
        m = target.metrics()
        for g in peaks:
            peaks[g] = max(peaks[g], m.get(g, 0.0))
        now = time.monotonic()
        while marks and now >= marks[0][1]:
            samples[marks.pop(0)[0]] = read_rss()
        time.sleep(min(sample_every, max(0.0, end - time.monotonic())))
    for t in threads:
        t.join(timeout=target.timeout + 30)
    stuck = sum(t.is_alive() for t in threads)
    gauges = wait_idle(target, idle_timeout)
    for name, _ in marks:  # a run shorter than its marks
        samples[name] = read_rss()
    samples["end"] = read_rss()

    # After the run the server still answers, as it did during the run.
    for key, text in sorted(tally.answers.items(), key=repr)[:8]:
        endpoint, prompt, n, s = key
        conn = target.connect()
        try:
            path = target.prefix + ("/chat/completions" if endpoint == "chat" else "/completions")
            conn.request("POST", path, json.dumps(request_body(endpoint, prompt, n, s, False)),
                         target.headers)
            r = conn.getresponse()
            tally.status(r.status)
            c = json.loads(r.read())["choices"][0]
            tally.answer(key, c["message"]["content"] if endpoint == "chat" else c["text"])
        except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
            tally.error(f"after the run: {type(e).__name__}: {e}")
        finally:
            conn.close()

    metrics = target.metrics()
    status_5xx = sum(n for code, n in tally.statuses.items() if code >= 500)
    grew = max(samples["middle"], samples["end"]) - samples["start"]
    checks = {
        "no 5xx": status_5xx == 0,
        "no unexpected errors": not tally.errors and stuck == 0,
        "streams end with [DONE]": tally.incomplete_streams == 0,
        "429 carries Retry-After": tally.missing_retry_after == 0,
        "equal answers to equal requests": not tally.mismatches,
        "in-use gauges back to 0": all(v == 0 for v in gauges.values()),
        "flat resident memory": grew <= rss_slack_mib * MiB,
    }
    return {
        "url": url, "clients": clients, "duration_s": duration, "warmup_s": warmup, "seed": seed,
        "requests_sent": tally.sent, "malformed_sent": tally.bad_sent, "cancelled": tally.cancelled,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "status_5xx": status_5xx,
        "errors": tally.errors[:20], "error_count": len(tally.errors), "stuck_clients": stuck,
        "incomplete_streams": tally.incomplete_streams,
        "missing_retry_after": tally.missing_retry_after,
        "mismatches": tally.mismatches[:5],
        "answers": {json.dumps(list(k)): v for k, v in tally.answers.items()},
        "gauges_peak": peaks, "gauges_end": gauges,
        "sequence_slots_end": metrics.get("rocmforge_sequence_slots"),
        "requests_cancelled_total": metrics.get("rocmforge_requests_cancelled_total"),
        "rss_bytes": samples, "rss_grew_mib": grew / MiB, "rss_slack_mib": rss_slack_mib,
        "checks": checks, "ok": all(checks.values()),
    }


def start_server(args) -> tuple:
    """`rocmforge serve` on a free port, as a process of its own: (process, url)."""
    cmd = [sys.executable, "-m", "rocmforge.cli", "serve", "--port", "0", "--device", args.device,
           "--max-batch", str(args.max_batch), "--queue-size", str(args.queue_size)]
    if args.model:
        cmd += ["--model", args.model]
    if args.n_ctx:
        cmd += ["--n-ctx", str(args.n_ctx)]
    if args.api_key:
        cmd += ["--api-key", args.api_key]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        m = re.search(r"serving .* on (http://\S+/v1)", line)
        if m:
            # keep reading stderr, so that the server never blocks on a full pipe
            threading.Thread(target=lambda: [lines.append(x) for x in proc.stderr], daemon=True).start()
            return proc, m.group(1), lines
    proc.wait()
    raise RuntimeError("the server did not start:\n" + "".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="base URL of a running server (…/v1); else one is started")
    ap.add_argument("--model", help="the .gguf file the started server serves (default: the default model)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n-ctx", type=int)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--queue-size", type=int, default=16)
    ap.add_argument("--api-key")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    ap.add_argument("--warmup", type=float, help="seconds before the first memory sample "
                                                 "(default: a tenth of the duration, at most 60)")
    ap.add_argument("--cancel-rate", type=float, default=0.3, help="share of requests abandoned")
    ap.add_argument("--cancel-max-tokens", type=int, default=256,
                    help="max_tokens of the requests that are abandoned (long: still running then)")
    ap.add_argument("--rss-slack-mib", type=float, default=64.0)
    ap.add_argument("--seed", type=int)
    args = ap.parse_args()

    proc, rss = None, None
    if args.url:
        url = args.url
    else:
        proc, url, log = start_server(args)
        rss = lambda: proc_rss(proc.pid)  # noqa: E731
    try:
        report = soak(url, clients=args.clients, duration=args.duration, warmup=args.warmup,
                      cancel_rate=args.cancel_rate, cancel_max_tokens=args.cancel_max_tokens,
                      api_key=args.api_key, rss=rss, rss_slack_mib=args.rss_slack_mib, seed=args.seed)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if proc is not None:
        report["checks"]["server exits 0 on SIGTERM"] = proc.returncode == 0
        report["ok"] = all(report["checks"].values())
        if proc.returncode != 0:
            report["server_stderr"] = "".join(log)[-2000:]
    del report["answers"]
    print(json.dumps(report, indent=2))
    for name, ok in report["checks"].items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
