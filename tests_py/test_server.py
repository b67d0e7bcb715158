"""The OpenAI-compatible server (`rocmforge.Server`, `rocmforge serve`) on the CPU, on small
random-weight files written here. The official `openai` client talks to it; at temperature 0
(and with a seed) its answers equal `Model.generate` / `Model.chat` of the same prompt on the
same file, token for token, logprobs included; presence and frequency penalties are checked
against a NumPy greedy loop over `Model.logits`. Bad requests get OpenAI's error object with
the status RELIABILITY.md gives; a full queue answers 429; a client that disconnects
mid-stream frees the engine; stop() and SIGTERM end cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

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
    assert metric(server, "rocmforge_queue_length") == 0
    assert metric(server, "rocmforge_requests_running") == 0
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
    wait_for(lambda: metric(s, "rocmforge_requests_running") == 0, what="an idle engine")
    assert metric(s, "rocmforge_requests_cancelled_total") == cancelled + 1
    assert metric(s, "rocmforge_generated_tokens_total") - generated < 4000
    assert metric(s, 'rocmforge_requests_total{endpoint="/v1/completions",status="429"}') == 2


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


def test_cli_serve_and_sigterm(tiny_path):
    """`rocmforge serve` with the key from the environment; SIGTERM stops it with status 0."""
    env = dict(os.environ, ROCMFORGE_API_KEY="k3y")
    proc = subprocess.Popen([sys.executable, "-m", "rocmforge.cli", "serve", "--model", tiny_path,
                             "--port", "0", "--device", "cpu", "--model-name", "tiny"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        match = re.search(r"serving tiny on (http://127\.0\.0\.1:\d+)/v1", line)
        assert match, line
        url = match.group(1)
        client = openai.OpenAI(base_url=url + "/v1", api_key="k3y", max_retries=0, timeout=30)
        assert client.completions.create(model="tiny", prompt="he", max_tokens=3).usage.prompt_tokens > 0
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
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
