"""The OpenAI-compatible server (`rocmforge.Server`, `rocmforge serve`) on the CPU, on small
random-weight files written here. The official `openai` client talks to it; at temperature 0
(and with a seed) its answers equal `Model.generate` / `Model.chat` of the same prompt on the
same file, token for token, logprobs included; presence and frequency penalties are checked
against a NumPy greedy loop over `Model.logits`. Bad requests (malformed JSON, wrong types,
out-of-range values) get OpenAI's error object naming the field; unknown fields are ignored; a
full queue answers 429 with Retry-After; a client that disconnects mid-answer frees its slot
(the in-use gauges of /metrics return to 0); SIGTERM lets a running stream finish, refuses new
requests, and exits 0; a short soak (bench/serve_soak.py) with random cancellations ends with no
5xx, idle gauges and answers equal to `Model.generate`; the README's serving examples run."""

from __future__ import annotations

from http.client import HTTPConnection
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import rocmforge as rf
from test_model import Tiny

openai = pytest.importorskip("openai")

# ---------------------------------------------------------------------------------------------
# Model files and servers
# ---------------------------------------------------------------------------------------------

EOG = ("<|im_end|>", "<|endoftext|>")  # the tiny vocabulary's end-of-generation tokens


@pytest.fixture(scope="module")
def module_rng():
    seed = int(os.environ.get("ROCMFORGE_TEST_SEED") or time.time_ns() % (2**32))
    print(f"[rng seed {seed}: rerun with ROCMFORGE_TEST_SEED={seed}]")
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory, module_rng):
    """A tiny llama file whose end-of-generation token does come up (random weights, an
    untied and damped LM head: logits of about unit scale, so sampling has real choices)."""
    m = Tiny(module_rng, n_ctx=64, tied=False)
    m.w["output.weight"] *= 0.5
    path = tmp_path_factory.mktemp("server") / "tiny.gguf"
    m.write(path)
    return str(path)


@pytest.fixture(scope="module")
def endless_path(tmp_path_factory, module_rng):
    """A larger file (a few ms a token) whose greedy text never ends before max_tokens: the
    LM head rows of its end-of-generation tokens are zero (logit 0, never the largest)."""
    m = Tiny(module_rng, dim=256, heads=8, kv_heads=4, ffn=512, layers=4, n_ctx=4096, tied=False)
    for eog in EOG:
        m.w["output.weight"][m.tokens.index(eog)] = 0
    path = tmp_path_factory.mktemp("server") / "endless.gguf"
    m.write(path)
    return str(path)


@pytest.fixture(scope="module")
def endless_model(endless_path):
    with rf.Model(endless_path, device="cpu") as m:
        yield m


@pytest.fixture(scope="module")
def model(tiny_path):
    with rf.Model(tiny_path, device="cpu") as m:
        yield m


@pytest.fixture(scope="module")
def server(tiny_path):
    with rf.Server(tiny_path, port=0, device="cpu", model_name="tiny") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def http(server, method, path, body=None, headers=None, raw=None):
    """(status, headers, parsed JSON or text) of one plain HTTP request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, hdrs, text = r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, e.headers, e.read().decode()
    try:
        return status, hdrs, json.loads(text)
    except ValueError:
        return status, hdrs, text


def metric(server, name, headers=None):
    """The value of a metric line (`name` with its labels) of /metrics."""
    status, _, text = http(server, "GET", "/metrics", headers=headers)
    assert status == 200, text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def metric_at(url, name, headers):
    """`metric` of a server known by its URL (one in another process)."""
    req = urllib.request.Request(url + "/metrics", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


IN_USE = ("rocmforge_requests_running", "rocmforge_sequence_slots_in_use", "rocmforge_kv_positions_in_use",
          "rocmforge_queue_length")


def in_use(server) -> dict:
    """The gauges of what running and waiting requests hold (all 0 when the server is idle)."""
    return {g: metric(server, g) for g in IN_USE}


def is_idle(server) -> bool:
    return all(v == 0 for v in in_use(server).values())


def post_raw(port, path, body: dict, headers=None) -> socket.socket:
    """Send a POST on a socket of its own and return the socket, unread (for clients that go
    away: close it, or reset it with `reset`)."""
    data = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            f"Content-Length: {len(data)}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    return sock


def reset(sock: socket.socket):
    """Close with a TCP reset (SO_LINGER 0), as a client that crashes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def sse_events(response) -> list:
    """The `data:` payloads of a server-sent-event response, read to its end."""
    out = []
    for line in response.read().decode().splitlines():
        if line.startswith("data:"):
            out.append(line[5:].strip())
    return out


def wait_for(condition, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


PROMPTS = ["the cat", "he", "at the", "in a"]


def eog_ids(model) -> set:
    return {model.tokenize(t)[0] for t in EOG}


def finish_of(model) -> str:
    """The OpenAI finish_reason of the model's last call: an end-of-generation token is 'stop'."""
    return {"eos": "stop", "stop": "stop", "length": "length"}[model.stats["finish_reason"]]


# ---------------------------------------------------------------------------------------------
# Answers equal the Python API's
# ---------------------------------------------------------------------------------------------


def test_completions_equal_generate(client, model):
    for prompt in PROMPTS:
        want = model.generate(prompt, max_tokens=20, temperature=0)
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=20, temperature=0)
        assert r.object == "text_completion" and r.model == "tiny" and r.id.startswith("cmpl-")
        assert r.choices[0].text == want
        assert r.choices[0].finish_reason == finish_of(model)
        assert r.usage.prompt_tokens == len(model.tokenize(prompt))
        assert r.usage.completion_tokens == model.stats["generated_tokens"]
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

        chunks = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=20,
                                                temperature=0, stream=True,
                                                stream_options={"include_usage": True}))
        assert "".join(c.choices[0].text for c in chunks if c.choices) == want
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == finish_of(model)
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_sampled_answers_follow_the_seed_and_defaults(client, model):
    """Fields left out take Model.generate's defaults (temperature 0.8, top_k 40, ...); the
    same seed gives the same draws."""
    for seed in (1, 2):
        want = model.generate("the cat", max_tokens=25, seed=seed)
        r = client.completions.create(model="tiny", prompt="the cat", max_tokens=25, seed=seed)
        assert r.choices[0].text == want
    kw = dict(max_tokens=25, temperature=1.3, top_k=5, top_p=0.9, min_p=0.01, repeat_penalty=1.2, seed=7)
    want = model.generate("in a", **kw)
    r = client.completions.create(model="tiny", prompt="in a", max_tokens=25, temperature=1.3, top_p=0.9,
                                  seed=7, extra_body={"top_k": 5, "min_p": 0.01, "repetition_penalty": 1.2})
    assert r.choices[0].text == want


def test_chat_equals_model_chat(client, model):
    messages = [{"role": "system", "content": " be brief "}, {"role": "user", "content": "the cat"}]
    want = model.chat(messages, max_tokens=20, temperature=0)
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want
    assert r.choices[0].finish_reason == finish_of(model)
    assert r.usage.prompt_tokens == model.stats["prompt_tokens"]
    assert r.usage.completion_tokens == model.stats["generated_tokens"]

    chunks = list(client.chat.completions.create(model="tiny", messages=messages, temperature=0,
                                                 max_completion_tokens=20, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason == finish_of(model)
    assert all(c.usage is None for c in chunks)

    # Text parts are joined as the content string.
    parts = [{"type": "text", "text": "the "}, {"type": "text", "text": "cat"}]
    r = client.chat.completions.create(model="tiny", messages=[messages[0], {"role": "user", "content": parts}],
                                       max_tokens=20, temperature=0)
    assert r.choices[0].message.content == want


def test_stop_strings_and_token_prompts(client, model):
    for prompt in ["he", "at the", "in", "a b", "the"]:
        text = model.generate(prompt, max_tokens=40, temperature=0)
        if len(text) >= 6:
            break
    else:
        pytest.skip(f"greedy text too short to cut: {text!r}")
    stop = text[3:5]
    want = model.generate(prompt, max_tokens=40, temperature=0, stop=["\x00never", stop])
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=40, temperature=0,
                                  stop=["\x00never", stop])
    assert r.choices[0].text == want == text[: text.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny", prompt=prompt, max_tokens=40, temperature=0,
                                         stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == want

    ids = model.tokenize("the cat")
    want_ids = model.generate_tokens(ids, max_tokens=15, temperature=0)
    for prompt in (ids, [ids]):
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=15, temperature=0)
        assert r.usage.completion_tokens == len(want_ids)
        assert r.choices[0].text == model.detokenize([t for t in want_ids if t not in eog_ids(model)])


def test_logprobs_equal_generate(client, model):
    """Each token's log-probability and the n best equal Model.generate(logprobs=n)'s (an
    ending end-of-generation token has no text and is left out), streamed and not."""
    n = 3
    for prompt in PROMPTS[:2]:
        want = model.generate(prompt, max_tokens=12, temperature=0, logprobs=n)
        tokens = [t for t in want["tokens"] if t["text"] not in EOG]
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0, logprobs=n)
        lp = r.choices[0].logprobs
        assert r.choices[0].text == want["text"]
        assert lp.tokens == [t["text"] for t in tokens]
        np.testing.assert_allclose(lp.token_logprobs, [t["logprob"] for t in tokens], rtol=1e-6, atol=1e-6)
        for got, t in zip(lp.top_logprobs, tokens):
            assert got == pytest.approx({u["text"]: u["logprob"] for u in t["top"]}, abs=1e-6)
        offsets = np.cumsum([0] + [len(t["text"]) for t in tokens])[:-1]
        assert lp.text_offset == offsets.tolist()

        streamed = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0,
                                             logprobs=n, stream=True)
        got = [x for c in streamed if c.choices and c.choices[0].logprobs for x in c.choices[0].logprobs.token_logprobs]
        np.testing.assert_allclose(got, [t["logprob"] for t in tokens], rtol=1e-6, atol=1e-6)

    messages = [{"role": "user", "content": "the cat"}]
    want = model.chat(messages, max_tokens=12, temperature=0, logprobs=n)
    tokens = [t for t in want["tokens"] if t["text"] not in EOG]
    for stream in (False, True):
        r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0,
                                           logprobs=True, top_logprobs=n, stream=stream)
        if stream:
            content = [x for c in r if c.choices and c.choices[0].logprobs for x in c.choices[0].logprobs.content]
        else:
            content = r.choices[0].logprobs.content
        assert [c.token for c in content] == [t["text"] for t in tokens]
        np.testing.assert_allclose([c.logprob for c in content], [t["logprob"] for t in tokens], atol=1e-6)
        for c, t in zip(content, tokens):
            assert bytes(c.bytes).decode(errors="replace") == c.token
            assert [u.token for u in c.top_logprobs] == [u["text"] for u in t["top"]]
            np.testing.assert_allclose([u.logprob for u in c.top_logprobs], [u["logprob"] for u in t["top"]],
                                       atol=1e-6)
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5, temperature=0)
    assert r.choices[0].logprobs is None


def test_presence_and_frequency_penalties_match_numpy(client, model):
    """Greedy with penalties, against a NumPy loop over Model.logits: each step subtracts
    presence + frequency * count from the logits of the tokens among the last 64."""
    presence, frequency = 0.7, 0.4
    prompt = model.tokenize("the cat")
    ids = list(prompt)
    eog = eog_ids(model)
    for _ in range(12):
        logits = model.logits(ids)[-1].astype(np.float64)
        window = ids[-64:]
        for t in set(window):
            logits[t] -= presence + frequency * window.count(t)
        nxt = int(np.argmax(logits))
        ids.append(nxt)
        if nxt in eog:
            break
    generated = ids[len(prompt):]
    want = model.detokenize([t for t in generated if t not in eog])
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=12, temperature=0,
                                  presence_penalty=presence, frequency_penalty=frequency)
    assert r.choices[0].text == want
    assert r.usage.completion_tokens == len(generated)


def test_models_health_metrics(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert http(server, "GET", "/health")[:3:2] == (200, {"status": "ok"})
    before = metric(server, 'rocmforge_requests_total{endpoint="/v1/completions",status="200"}')
    generated = metric(server, "rocmforge_generated_tokens_total")
    r = client.completions.create(model="tiny", prompt="he", max_tokens=3, temperature=0)
    status, headers, text = http(server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert metric(server, 'rocmforge_requests_total{endpoint="/v1/completions",status="200"}') == before + 1
    assert metric(server, "rocmforge_generated_tokens_total") == generated + r.usage.completion_tokens
    assert in_use(server) == {g: 0 for g in IN_USE}
    assert 1 <= metric(server, "rocmforge_sequence_slots") <= 8  # made as needed, up to max_batch
    # The server's resident memory is this process's (the server runs in it), as /proc tells.
    with open("/proc/self/status") as f:
        vm_rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    assert metric(server, "process_resident_memory_bytes") == pytest.approx(vm_rss, rel=0.1)
    assert metric(server, "rocmforge_time_to_first_token_seconds_count") >= 1
    assert 'rocmforge_time_to_first_token_seconds_bucket{le="+Inf"}' in text
    assert re.search(r'rocmforge_requests_total\{endpoint="/v1/models",status="200"\} \d+', text)


# ---------------------------------------------------------------------------------------------
# Bad requests
# ---------------------------------------------------------------------------------------------


def check_error(response, status, param=None, words=()):
    code, _, body = response
    assert code == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["param"] == param, body
    for w in words:
        assert w in body["error"]["message"], body


def test_bad_requests_answer_400_and_the_server_keeps_serving(server, client, model):
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    post = lambda path, body=None, raw=None: http(server, "POST", path, body, raw=raw)  # noqa: E731
    count_400 = 'rocmforge_requests_total{endpoint="/v1/completions",status="400"}'
    before = metric(server, count_400)
    check_error(post("/v1/chat/completions", raw=b'{"messages": [{"role": '), 400, words=["JSON"])
    check_error(post("/v1/completions", raw=b'["the cat"]'), 400, words=["object"])
    check_error(post("/v1/completions", {}), 400, "prompt")
    check_error(post("/v1/chat/completions", {"messages": "hi"}), 400, "messages")
    check_error(post("/v1/chat/completions", {"messages": [{"role": "user", "content": 3}]}), 400,
                "messages[0].content")
    check_error(post("/v1/completions", {"prompt": "a", "max_tokens": "5"}), 400, "max_tokens")
    check_error(post("/v1/completions", {"prompt": "a", "stream": 1}), 400, "stream")
    check_error(post("/v1/completions", {"prompt": "a", "stop": [3]}), 400, "stop")
    check_error(post("/v1/chat/completions", {**chat, "temperature": -0.5}), 400, "temperature")
    check_error(post("/v1/chat/completions", {**chat, "temperature": "warm"}), 400, "temperature")
    check_error(post("/v1/chat/completions", {**chat, "top_p": 1.5}), 400, "top_p")
    check_error(post("/v1/chat/completions", {**chat, "top_k": -3}), 400, "top_k")
    check_error(post("/v1/chat/completions", {**chat, "repetition_penalty": 0}), 400, "repetition_penalty")
    check_error(post("/v1/chat/completions", {**chat, "n": 2}), 400, "n")
    check_error(post("/v1/chat/completions", {**chat, "top_logprobs": 3}), 400, "top_logprobs")
    check_error(post("/v1/completions", {"prompt": "a", "logprobs": 50}), 400, "logprobs")
    check_error(post("/v1/completions", {"prompt": [1, 10**6]}), 400, "prompt", ["vocabulary"])
    # n_ctx is 64: a prompt longer than that, and max_tokens that cannot fit
    long = "the cat " * 60
    n = len(model.tokenize(long))
    check_error(post("/v1/completions", {"prompt": long}), 400, "prompt", [str(n), "64"])
    check_error(post("/v1/chat/completions", {"messages": [{"role": "user", "content": long}]}), 400,
                "messages", ["64"])
    n = len(model.tokenize("the cat"))
    check_error(post("/v1/completions", {"prompt": "the cat", "max_tokens": 100}), 400, "max_tokens",
                ["100", str(n), str(64 - n)])
    check_error(post("/v1/completions", raw=b'{"prompt": "' + b"a" * (5 << 20) + b'"}'), 413,
                words=["limit"])
    check_error(http(server, "GET", "/v1/nothing"), 404)
    check_error(http(server, "GET", "/v1/completions"), 405)

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], temperature=-1)
    assert e.value.body["param"] == "temperature"
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=5, temperature=0)
    assert r.choices[0].text == model.generate("the cat", max_tokens=5, temperature=0)
    assert metric(server, count_400) == before + 9


WRONG = [  # (endpoint, fields added to a valid request, the param the 400 names)
    ("completions", {"max_tokens": "ten"}, "max_tokens"),
    ("completions", {"max_tokens": -5}, "max_tokens"),
    ("completions", {"max_tokens": 10**30}, "max_tokens"),
    ("completions", {"temperature": [1]}, "temperature"),
    ("completions", {"temperature": -0.001}, "temperature"),
    ("completions", {"temperature": 1e300}, "temperature"),
    ("completions", {"top_p": 0}, "top_p"),
    ("completions", {"top_p": 1.0001}, "top_p"),
    ("completions", {"top_p": 1e300}, "top_p"),
    ("completions", {"top_k": -2}, "top_k"),
    ("completions", {"top_k": "5"}, "top_k"),
    ("completions", {"min_p": -0.5}, "min_p"),
    ("completions", {"presence_penalty": 1e10}, "presence_penalty"),
    ("completions", {"frequency_penalty": "x"}, "frequency_penalty"),
    ("completions", {"repetition_penalty": 1e300}, "repetition_penalty"),
    ("completions", {"stop": 5}, "stop"),
    ("completions", {"stop": ["a", 1]}, "stop"),
    ("completions", {"n": 2}, "n"),
    ("completions", {"n": 0}, "n"),
    ("completions", {"logprobs": 21}, "logprobs"),
    ("completions", {"logprobs": -1}, "logprobs"),
    ("completions", {"logprobs": True}, "logprobs"),
    ("completions", {"seed": "x"}, "seed"),
    ("completions", {"seed": 2**64}, "seed"),
    ("completions", {"best_of": 2}, "best_of"),
    ("completions", {"echo": True}, "echo"),
    ("completions", {"stream": "yes"}, "stream"),
    ("completions", {"stream_options": {"include_usage": "y"}}, "stream_options.include_usage"),
    ("completions", {"logit_bias": {"5": 100}}, "logit_bias"),
    ("completions", {"prompt": 5}, "prompt"),
    ("chat/completions", {"messages": "hi"}, "messages"),
    ("chat/completions", {"messages": [{"role": 1, "content": "x"}]}, "messages[0].role"),
    ("chat/completions", {"max_completion_tokens": "x"}, "max_completion_tokens"),
    ("chat/completions", {"temperature": [1]}, "temperature"),
    ("chat/completions", {"stop": 5}, "stop"),
    ("chat/completions", {"logprobs": "yes"}, "logprobs"),
    ("chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("chat/completions", {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ("chat/completions", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ("chat/completions", {"response_format": {"type": "json_object"}}, "response_format"),
]


@pytest.mark.parametrize("endpoint,fields,param", WRONG, ids=[f"{e}-{p}-{i}" for i, (e, _, p) in enumerate(WRONG)])
def test_wrong_types_and_out_of_range_values_name_the_field(server, endpoint, fields, param):
    """Raw HTTP: a known field of the wrong type, or outside its range (huge values included),
    answers 400 with OpenAI's error object whose `param` (and message) names the field."""
    base = {"prompt": "he"} if endpoint == "completions" else {"messages": [{"role": "user", "content": "he"}]}
    status, _, body = http(server, "POST", f"/v1/{endpoint}", {**base, "max_tokens": 2, **fields})
    check_error((status, None, body), 400, param)
    assert body["error"]["type"] == "invalid_request_error"
    assert param.split(".")[0].split("[")[0] in body["error"]["message"], body


def test_unparseable_numbers_and_unknown_fields(server, client, model):
    """A number past float range is not JSON a parser reads: 400 about the body (no field to
    name). Unknown fields are accepted and ignored, as vLLM and llama.cpp's server do (OpenAI
    answers 400): the answer is the one the request gets without them."""
    status, _, body = http(server, "POST", "/v1/completions", raw=b'{"prompt": "he", "temperature": 1e400}')
    check_error((status, None, body), 400, None, ["JSON"])
    want = model.generate("the cat", max_tokens=8, temperature=0)
    extra = {"frobnicate": {"a": [1, None]}, "ignore_eos": False, "metadata": None, "logit_bias": {},
             "tools": [], "response_format": {"type": "text"}, "user": "u1"}
    status, _, body = http(server, "POST", "/v1/completions",
                           {"prompt": "the cat", "max_tokens": 8, "temperature": 0, **extra})
    assert status == 200 and body["choices"][0]["text"] == want, body
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=8, temperature=0, extra_body=extra)
    assert r.choices[0].text == want
    messages = [{"role": "user", "content": "the cat", "x-note": "ignored"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0,
                                       extra_body={"frobnicate": 1})
    assert r.choices[0].message.content == model.chat([{"role": "user", "content": "the cat"}],
                                                      max_tokens=8, temperature=0)


def test_api_key(tiny_path):
    with rf.Server(tiny_path, port=0, device="cpu", api_key="sesame") as s:
        assert http(s, "GET", "/health")[0] == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sesame"}):
            status, hdrs, body = http(s, "GET", "/v1/models", headers=headers)
            check_error((status, hdrs, body), 401)
            assert hdrs["WWW-Authenticate"] == "Bearer"
            check_error(http(s, "GET", "/metrics", headers=headers), 401)
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.completions.create(model="tiny", prompt="he", max_tokens=2)
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="sesame", max_retries=0)
        assert good.completions.create(model="tiny", prompt="he", max_tokens=2).usage.prompt_tokens > 0
        auth = {"Authorization": "Bearer sesame"}
        assert metric(s, 'rocmforge_requests_total{endpoint="/v1/models",status="401"}', auth) == 3
        # The key is checked before the body is read: a malformed body without it is a 401.
        for path in ("/v1/completions", "/v1/chat/completions"):
            check_error(http(s, "POST", path, raw=b"{not json"), 401)
            check_error(http(s, "POST", path, raw=b"{not json", headers={"Authorization": "Bearer sesame2"}), 401)
            check_error(http(s, "POST", path, raw=b"{not json", headers=auth), 400)
        with pytest.raises(openai.AuthenticationError) as e:
            bad.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "he"}], max_tokens=2)
        assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
        # The scheme's name is case-insensitive (RFC 9110); the key is not.
        status, _, body = http(s, "POST", "/v1/completions", {"prompt": "he", "max_tokens": 2},
                               headers={"Authorization": "bearer sesame"})
        assert status == 200 and body["usage"]["completion_tokens"] <= 2
        check_error(http(s, "GET", "/v1/models", headers={"Authorization": "Bearer SESAME"}), 401)
        # /health answers without the key (a load balancer's probe), and tells nothing else.
        assert http(s, "GET", "/health", headers={"Authorization": "Bearer wrong"})[:3:2] == (200, {"status": "ok"})
    with pytest.raises(ValueError, match="api_key"):
        rf.Server(tiny_path, api_key="")


# ---------------------------------------------------------------------------------------------
# Queue, disconnects, stopping
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def endless_server(endless_path):
    # one request runs at a time, one waits: the queue's limits are easy to reach
    with rf.Server(endless_path, port=0, device="cpu", queue_size=1, max_batch=1) as s:
        yield s


def long_stream(client, max_tokens=4000):
    """A streamed greedy completion that runs to max_tokens; returns once it runs."""
    stream = client.completions.create(model="m", prompt="the cat", max_tokens=max_tokens,
                                       temperature=0, stream=True)
    it = iter(stream)
    next(it)
    return stream, it


def test_full_queue_429_and_disconnect_frees_the_engine(endless_server):
    s = endless_server
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="-", max_retries=0, timeout=60)
    cancelled = metric(s, "rocmforge_requests_cancelled_total")
    generated = metric(s, "rocmforge_generated_tokens_total")
    stream, it = long_stream(client)
    assert metric(s, "rocmforge_requests_running") == 1
    assert metric(s, "rocmforge_sequence_slots_in_use") == 1
    assert metric(s, "rocmforge_kv_positions_in_use") > 2  # the prompt and the tokens so far
    # One request waits (the queue holds one) ...
    waiting = {}
    t = threading.Thread(target=lambda: waiting.setdefault(
        "r", client.completions.create(model="m", prompt="he", max_tokens=3, temperature=0)))
    t.start()
    wait_for(lambda: metric(s, "rocmforge_queue_length") == 1, what="a waiting request")
    # ... so one more is turned away, with Retry-After.
    status, headers, body = http(s, "POST", "/v1/completions", {"prompt": "he", "max_tokens": 2})
    check_error((status, headers, body), 429)
    assert int(headers["Retry-After"]) >= 1
    with pytest.raises(openai.RateLimitError):
        client.completions.create(model="m", prompt="he", max_tokens=2)
    # The streaming client goes away: its generation stops and the waiting request is served.
    next(it)
    stream.close()
    t.join(timeout=30)
    assert waiting["r"].usage.completion_tokens == 3
    wait_for(lambda: is_idle(s), what="an idle engine")
    assert metric(s, "rocmforge_requests_cancelled_total") == cancelled + 1
    assert metric(s, "rocmforge_generated_tokens_total") - generated < 4000
    assert metric(s, 'rocmforge_requests_total{endpoint="/v1/completions",status="429"}') == 2


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {data[-300:]!r}"
        data += chunk
    return data


def test_disconnects_free_their_slot(endless_server, endless_model):
    """Clients that go away (a reset mid-stream, a close while a non-streamed answer runs, a
    close while waiting in the queue) free what they held: the in-use gauges return to 0 and
    the one slot (max_batch 1) serves the next request, whose answer is Model.generate's."""
    s = endless_server
    long = {"prompt": "the cat", "max_tokens": 3000, "temperature": 0}
    n_prompt = len(endless_model.tokenize("the cat"))
    cancelled = metric(s, "rocmforge_requests_cancelled_total")

    # 1. A stream whose client resets the connection after its first event.
    generated = metric(s, "rocmforge_generated_tokens_total")
    sock = post_raw(s.port, "/v1/completions", {**long, "stream": True})
    assert read_until(sock, b"data:").startswith(b"HTTP/1.1 200")
    held = in_use(s)
    assert held["rocmforge_requests_running"] == held["rocmforge_sequence_slots_in_use"] == 1, held
    assert held["rocmforge_kv_positions_in_use"] > n_prompt, held
    reset(sock)
    wait_for(lambda: is_idle(s), what="the reset stream's slot freed")
    assert metric(s, "rocmforge_requests_cancelled_total") == cancelled + 1
    assert metric(s, "rocmforge_generated_tokens_total") - generated < 3000

    # 2. A non-streamed request whose client closes the connection while it runs.
    generated = metric(s, "rocmforge_generated_tokens_total")
    sock = post_raw(s.port, "/v1/completions", long)
    wait_for(lambda: metric(s, "rocmforge_kv_positions_in_use") > n_prompt, what="a running request")
    sock.close()
    wait_for(lambda: is_idle(s), what="the closed request's slot freed")
    assert metric(s, "rocmforge_requests_cancelled_total") == cancelled + 2
    assert metric(s, "rocmforge_generated_tokens_total") - generated < 3000

    # 3. A request that goes away while it waits behind a running one.
    running = post_raw(s.port, "/v1/completions", {**long, "stream": True})
    read_until(running, b"data:")
    waiting = post_raw(s.port, "/v1/completions", long)
    wait_for(lambda: metric(s, "rocmforge_queue_length") == 1, what="a waiting request")
    waiting.close()
    running.close()
    wait_for(lambda: is_idle(s), what="both freed")
    assert metric(s, "rocmforge_requests_cancelled_total") == cancelled + 4

    # The slot serves the next request (it would wait forever behind a leaked one).
    status, _, body = http(s, "POST", "/v1/completions", {"prompt": "in a", "max_tokens": 12, "temperature": 0})
    assert status == 200 and body["choices"][0]["text"] == endless_model.generate("in a", max_tokens=12,
                                                                                  temperature=0)
    assert is_idle(s)


def test_concurrent_requests_answer_as_alone(tiny_path, model):
    """Requests sent at once (greedy and seeded sampling, streamed or not), batched together,
    each get the answer `Model.generate` gives their prompt alone."""
    prompts = PROMPTS + ["a b", "the the", "x"]
    greedy = dict(max_tokens=24, temperature=0)
    sampled = dict(max_tokens=24, temperature=1.0, top_p=1.0, seed=7)
    want = {(p, i): model.generate(p, **kw) for p in prompts for i, kw in enumerate((greedy, sampled))}
    with rf.Server(tiny_path, port=0, device="cpu", max_batch=4, queue_size=32) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="-", max_retries=0, timeout=60)

        def ask(prompt, i, stream):
            kw = dict(greedy if i == 0 else sampled)
            r = client.completions.create(model="tiny", prompt=prompt, stream=stream, **kw)
            return "".join(c.choices[0].text for c in r) if stream else r.choices[0].text

        jobs = [(p, i, (j % 2) == 1) for j, (p, i) in enumerate(want)]
        got = {}
        threads = [threading.Thread(target=lambda j=j: got.setdefault(j[:2], ask(*j))) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert got == want
        wait_for(lambda: metric(s, "rocmforge_requests_running") == 0, what="an idle engine")


def test_long_requests_run_at_once_up_to_max_batch(endless_path):
    """Streams that run long all run at once, up to max_batch; one more waits in the queue,
    and is served when a stream's client goes away."""
    with rf.Server(endless_path, port=0, device="cpu", max_batch=3, queue_size=4) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="-", max_retries=0, timeout=60)
        streams = [long_stream(client) for _ in range(3)]
        wait_for(lambda: metric(s, "rocmforge_requests_running") == 3, what="three running")
        waiting = {}
        t = threading.Thread(target=lambda: waiting.setdefault(
            "r", client.completions.create(model="m", prompt="he", max_tokens=3, temperature=0)))
        t.start()
        wait_for(lambda: metric(s, "rocmforge_queue_length") == 1, what="a waiting request")
        assert metric(s, "rocmforge_requests_running") == 3
        streams[0][0].close()
        t.join(timeout=30)
        assert waiting["r"].usage.completion_tokens == 3
        for stream, _ in streams[1:]:
            stream.close()
        wait_for(lambda: metric(s, "rocmforge_requests_running") == 0, what="an idle engine")


def test_a_shared_prompt_start_is_taken_from_the_cache(tiny_path, model):
    """A request whose prompt starts as an earlier one's (a system prompt) goes to that slot and
    evaluates only the rest; its answer is still the one it gets alone."""
    system = "the cat sat on a mat and " * 3
    asks = [system + "he", system + "at the", "in a", system + "x"]
    want = [model.generate(p, max_tokens=8, temperature=0) for p in asks]
    shared = len(model.tokenize(system)) - 1  # (the last token may merge with what follows)
    with rf.Server(tiny_path, port=0, device="cpu", max_batch=2) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="-", max_retries=0, timeout=60)
        before = metric(s, "rocmforge_prompt_tokens_cached_total")
        for prompt, text in zip(asks, want):
            r = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0)
            assert r.choices[0].text == text
        # the second and the fourth reuse the first's slot ("in a" takes the other one)
        assert metric(s, "rocmforge_prompt_tokens_cached_total") - before >= 2 * shared


def test_stop_finishes_running_requests_then_cancels(endless_path):
    s = rf.Server(endless_path, port=0, device="cpu").start()
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="-", max_retries=0, timeout=60)
    # A request that is running when stop() is called finishes.
    done = {}
    t = threading.Thread(target=lambda: done.setdefault(
        "r", client.completions.create(model="m", prompt="he", max_tokens=40, temperature=0)))
    t.start()
    wait_for(lambda: metric(s, "rocmforge_generated_tokens_total") > 0, what="a running request")
    s.stop(timeout=30)
    t.join(timeout=30)
    assert done["r"].usage.completion_tokens == 40 and done["r"].choices[0].finish_reason == "length"
    assert not s.running and s.wait(0)
    with pytest.raises(openai.APIConnectionError):
        client.completions.create(model="m", prompt="he", max_tokens=2)

    # One that would outlast the grace time is cancelled: its stream ends with an error event.
    s.start()
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="-", max_retries=0, timeout=60)
    stream, it = long_stream(client)
    t0 = time.monotonic()
    s.stop(timeout=0.2)
    assert time.monotonic() - t0 < 5
    with pytest.raises(openai.APIError, match="stopping"):
        for _ in it:
            pass
    stream.close()


def test_cli_serve_and_sigterm(endless_path, endless_model):
    """`rocmforge serve` with the key from the environment. SIGTERM while a stream runs: new
    connections are refused from then on, the stream still gets its whole answer (every token
    Model.generate gives, the finish reason, the usage, then [DONE]), and the process exits 0."""
    env = dict(os.environ, ROCMFORGE_API_KEY="k3y")
    proc = subprocess.Popen([sys.executable, "-m", "rocmforge.cli", "serve", "--model", endless_path,
                             "--port", "0", "--device", "cpu", "--model-name", "tiny"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        match = re.search(r"serving tiny on (http://127\.0\.0\.1:(\d+))/v1", line)
        assert match, line
        url, port = match.group(1), int(match.group(2))
        client = openai.OpenAI(base_url=url + "/v1", api_key="k3y", max_retries=0, timeout=30)
        assert client.completions.create(model="tiny", prompt="he", max_tokens=3).usage.prompt_tokens > 0
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()

        n = 1500  # a few ms a token: still running when SIGTERM comes
        auth = {"Authorization": "Bearer k3y", "Content-Type": "application/json"}
        conn = HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/completions", json.dumps(
            {"prompt": "the cat", "max_tokens": n, "temperature": 0, "stream": True,
             "stream_options": {"include_usage": True}}), auth)
        response = conn.getresponse()
        assert response.status == 200
        first = response.readline()
        assert first.startswith(b"data:"), first
        newcomer = openai.OpenAI(base_url=url + "/v1", api_key="k3y", max_retries=0, timeout=10)
        running = metric_at(url, "rocmforge_requests_running", auth)
        assert running == 1, "the stream ended before SIGTERM: make it longer"
        proc.send_signal(signal.SIGTERM)

        # Draining: new connections are refused. (One that comes before the signal is handled
        # is answered, or gets 503 "stopping" with an error body: never a hang or a cut answer.)
        deadline = time.monotonic() + 10
        while True:
            try:
                newcomer.completions.create(model="tiny", prompt="he", max_tokens=2)
            except openai.APIConnectionError:
                break
            except openai.APIStatusError as e:
                assert e.status_code == 503 and "stopping" in e.body["message"], e
            assert time.monotonic() < deadline, "new requests still accepted 10 s after SIGTERM"
            time.sleep(0.02)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        assert proc.poll() is None, "the server exited while a stream was running"

        events = [first.decode()[5:].strip()] + sse_events(response)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert not any("error" in c for c in chunks), events[-5:]
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        assert text == endless_model.generate("the cat", max_tokens=n, temperature=0)
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
        assert chunks[-1]["usage"]["completion_tokens"] == n
        assert proc.wait(timeout=30) == 0
        assert "stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_server_object(tiny_path):
    s = rf.Server(tiny_path, port=0, device="cpu")
    assert not s.running and s.model is None and s.url.startswith("http://127.0.0.1:")
    with s:
        assert s.running and s.port > 0 and s.url == f"http://127.0.0.1:{s.port}"
        assert s.model == "tiny" and "running" in repr(s)
        with pytest.raises(rf.RocmForgeError, match="already running"):
            s.start()
        assert not s.wait(timeout=0.05)
        # The port is taken: a second server there fails to start.
        with pytest.raises(OSError):
            rf.Server(tiny_path, port=s.port, device="cpu").start()
    assert not s.running and "stopped" in repr(s)
    s.stop()  # twice is fine
    for kw in ({"port": 70000}, {"queue_size": 0}, {"n_ctx": 0}, {"kv_dtype": "f8"}):
        with pytest.raises(ValueError):
            rf.Server(tiny_path, **kw)
    with pytest.raises(FileNotFoundError):
        rf.Server("/nonexistent.gguf", port=0).start()


# ---------------------------------------------------------------------------------------------
# Soak (bench/serve_soak.py, short) and the README's examples
# ---------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def load_soak():
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_soak", REPO / "bench" / "serve_soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_soak_with_random_cancellations(endless_path, endless_model, module_rng):
    """A few seconds of bench/serve_soak.py: clients send streamed and plain, greedy and seeded
    requests, some malformed, and abandon some mid-answer (close or reset). No 5xx, no
    unexpected error, every full stream ends with [DONE], every complete answer equals
    Model.generate / Model.chat of its request, the in-use gauges (which did rise) return to 0,
    and the server then answers as Model.generate."""
    soak = load_soak()
    prompts, max_tokens, seeds = ("the cat", "he", "in a"), (1, 5, 16), (None, 3)
    with rf.Server(endless_path, port=0, device="cpu", max_batch=3, queue_size=2) as s:
        cancelled = metric(s, "rocmforge_requests_cancelled_total")
        report = soak.soak(s.url + "/v1", clients=8, duration=3.0, warmup=0.5, cancel_rate=0.3,
                           cancel_max_tokens=1500, seed=int(module_rng.integers(1 << 31)), prompts=prompts,
                           max_tokens=max_tokens, seeds=seeds, sample_every=0.05, idle_timeout=20)
        summary = {k: v for k, v in report.items() if k != "answers"}
        checks = dict(report["checks"])
        del checks["flat resident memory"]  # (three seconds, with the clients in this process)
        assert all(checks.values()), summary
        assert report["status_5xx"] == 0 and report["error_count"] == 0, summary
        assert report["statuses"].get("200", 0) > 10 and report["cancelled"] > 0, summary
        assert metric(s, "rocmforge_requests_cancelled_total") > cancelled  # the engine saw them go
        peak = report["gauges_peak"]
        assert peak["rocmforge_sequence_slots_in_use"] >= 1 and peak["rocmforge_kv_positions_in_use"] > 0, summary
        assert report["gauges_end"] == {g: 0 for g in IN_USE} and is_idle(s)
        assert 1 <= report["sequence_slots_end"] <= 3
        assert all(v > 0 for v in report["rss_bytes"].values())

        # Every complete answer is the one the request gets alone.
        assert report["answers"]
        for key, text in report["answers"].items():
            endpoint, prompt, n, seed = json.loads(key)
            kw = dict(max_tokens=n, temperature=0) if seed is None else dict(max_tokens=n, temperature=0.8, seed=seed)
            if endpoint == "chat":
                want = endless_model.chat([{"role": "user", "content": prompt}], **kw)
            else:
                want = endless_model.generate(prompt, **kw)
            assert text == want, (key, text, want)
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="-", max_retries=0, timeout=30)
        r = client.completions.create(model="m", prompt="at the", max_tokens=10, temperature=0)
        assert r.choices[0].text == endless_model.generate("at the", max_tokens=10, temperature=0)


def test_soak_script_checks_and_exit_status(tiny_path):
    """bench/serve_soak.py as a command: it starts `rocmforge serve`, runs, stops it with SIGTERM,
    and prints its checks. A memory slack below zero must fail the memory check (and only it),
    and then the exit status is 1."""
    cmd = [sys.executable, str(REPO / "bench" / "serve_soak.py"), "--model", tiny_path, "--device", "cpu",
           "--clients", "3", "--duration", "2", "--warmup", "0.5", "--max-batch", "2", "--queue-size", "1",
           "--cancel-max-tokens", "40", "--rss-slack-mib", "-1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    failed = [name for name, ok in report["checks"].items() if not ok]
    assert failed == ["flat resident memory"], report
    assert report["checks"]["server exits 0 on SIGTERM"] and report["requests_sent"] > 0
    assert set(report["rss_bytes"]) == {"start", "middle", "end"}
    assert "FAIL flat resident memory" in done.stderr


def readme_serve_section() -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split("\n## Serve\n", 1)[1].split("\n## ", 1)[0]


def test_readme_serve_examples_run(tmp_path, module_rng):
    """The README's serving examples: its `rocmforge serve` command parses to a server on
    127.0.0.1:8000 with the default model, and its curl and `openai` examples, pointed at a
    server of the tiny model, print the answers Model.chat / Model.generate give (server and
    Model seeded alike, so the sampled draws are the same)."""
    from rocmforge import cli

    section = readme_serve_section()
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    bash = [code for lang, code in blocks if lang == "bash"]
    python = [code for lang, code in blocks if lang == "python"]
    serve_line = next(c for c in bash if c.startswith("rocmforge serve"))
    argv = serve_line.split("#")[0].split()[1:]
    args = cli.build_parser().parse_args(argv)
    assert args.model is None and (args.host, args.port) == ("127.0.0.1", 8000)
    curl = next(c for c in bash if c.startswith("curl"))
    assert len(python) == 1 and "http://127.0.0.1:8000/v1" in curl and "http://127.0.0.1:8000/v1" in python[0]

    tiny = Tiny(module_rng, n_ctx=128, tied=False)  # (its vocabulary spells the question out)
    tiny.w["output.weight"] *= 0.5
    path = tmp_path / "tiny.gguf"
    tiny.write(path)
    with rf.Server(path, port=0, device="cpu", seed=11) as s, rf.Model(path, device="cpu", seed=11) as m:
        messages = [{"role": "user", "content": "Name the capital of France."}]
        want_curl = m.chat(messages, max_tokens=32)
        want_chat = m.chat(messages, max_tokens=32)
        want_story = m.generate("Once upon a time", max_tokens=32)
        if shutil.which("curl"):
            out = subprocess.run(["bash", "-c", curl.replace("http://127.0.0.1:8000", s.url)],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
            assert json.loads(out)["choices"][0]["message"]["content"] == want_curl
        else:  # the same request without curl, so that the draws stay in step
            body = json.loads(re.search(r"-d '(.*)'", curl, re.S).group(1))
            assert http(s, "POST", "/v1/chat/completions", body)[2]["choices"][0]["message"]["content"] == want_curl
        code = python[0].replace("http://127.0.0.1:8000", s.url)
        # (bytes, decoded here: text mode would turn a generated "\r" into "\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                             check=True, env=dict(os.environ, PYTHONIOENCODING="utf-8")).stdout
        assert out.decode("utf-8") == want_chat + "\n" + want_story
