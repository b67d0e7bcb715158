"""One Model used from many Python threads serializes its calls safely (every thread gets the
text a single-threaded run gives); long calls release the GIL; separate models work side by side."""

from __future__ import annotations

import threading

import pytest

import rocmforge as rf

PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4,",
    "Water boils at",
    "The opposite of hot is",
    "Monday, Tuesday,",
    "A cat is an",
    "The sun rises in the",
    "Red, green and",
]


def run_threads(target, args_list):
    """Run `target(*args)` in one thread each, all released together; re-raise the first error."""
    errors = []
    barrier = threading.Barrier(len(args_list))

    def wrapped(*args):
        try:
            barrier.wait()
            target(*args)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrapped, args=a) for a in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_eight_threads_one_model(smollm2_path, device):
    with rf.Model(smollm2_path, device=device) as model:
        want = [model.generate(p, max_tokens=8, temperature=0) for p in PROMPTS]
        want_ids = [model.generate_tokens(model.tokenize(p), max_tokens=4, temperature=0) for p in PROMPTS]
        got, got_stream, got_ids = {}, {}, {}

        def work(i):
            p = PROMPTS[i]
            got[i] = model.generate(p, max_tokens=8, temperature=0)
            # a stream interleaves with the other threads' calls piece by piece
            got_stream[i] = "".join(model.generate(p, max_tokens=8, temperature=0, stream=True))
            got_ids[i] = model.generate_tokens(model.tokenize(p), max_tokens=4, temperature=0)
            # (`stats` is the model's last call, which another thread may have started since)

        run_threads(work, [(i,) for i in range(len(PROMPTS))])
        for i, p in enumerate(PROMPTS):
            assert got[i] == want[i], (p, got[i], want[i])
            assert got_stream[i] == want[i], (p, got_stream[i], want[i])
            assert got_ids[i] == want_ids[i], p
        # still usable afterwards
        assert model.generate(PROMPTS[0], max_tokens=8, temperature=0) == want[0]
        assert model.stats["generated_tokens"] == 8 and model.stats["finish_reason"] == "length"


def test_generate_releases_the_gil(smollm2_path):
    """Python code in another thread keeps running while a generation computes."""
    with rf.Model(smollm2_path, device="cpu") as model:
        ticks = 0
        done = threading.Event()

        def tick():
            nonlocal ticks
            while not done.is_set():
                ticks += 1

        t = threading.Thread(target=tick)
        t.start()
        try:
            before = ticks
            model.generate("1, 2, 3,", max_tokens=24, temperature=0)
            during = ticks - before
        finally:
            done.set()
            t.join()
        assert during > 1000, during


def test_separate_models_in_parallel(smollm2_path, device):
    """Two Models of the same file, each driven from its own thread, answer as they do alone."""
    models = [rf.Model(smollm2_path, device=device) for _ in range(2)]
    try:
        want = [m.generate(p, max_tokens=8, temperature=0) for m, p in zip(models, PROMPTS[:2])]
        got = {}

        def work(i):
            for _ in range(2):
                got.setdefault(i, []).append(models[i].generate(PROMPTS[i], max_tokens=8, temperature=0))

        run_threads(work, [(0,), (1,)])
        assert got == {0: [want[0]] * 2, 1: [want[1]] * 2}
    finally:
        for m in models:
            m.close()


def test_close_while_other_threads_call(smollm2_path):
    """Closing from one thread while others call: each call either completes or raises the
    'closed' RocmForgeError; nothing crashes."""
    model = rf.Model(smollm2_path, device="cpu")
    want = model.generate(PROMPTS[0], max_tokens=6, temperature=0)
    outcomes = []

    def work(i):
        if i == 0:
            model.close()
            return
        try:
            outcomes.append(model.generate(PROMPTS[0], max_tokens=6, temperature=0))
        except rf.RocmForgeError as e:
            assert "closed" in str(e)
            outcomes.append(None)

    run_threads(work, [(i,) for i in range(5)])
    assert all(o in (want, None) for o in outcomes), outcomes
    assert model.closed
    with pytest.raises(rf.RocmForgeError, match="closed"):
        model.generate("x")
