"""Ctrl-C: a real SIGINT sent to a Python process in the middle of a generation raises
KeyboardInterrupt there within about one token, and the same Model then answers exactly as an
uninterrupted one does. The process is a subprocess so that the signal reaches only it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# The child: a reference answer first, then a generation that runs until interrupted (greedy
# counting goes on to max_tokens), then the same question again on the same Model.
CHILD = textwrap.dedent(
    """
    import json, signal, sys, time
    import rocmforge as rf

    # Python's own Ctrl-C handler, even where the parent left SIGINT ignored (a shell's
    # background job does): what a user at a terminal has.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    mode = sys.argv[2]
    model = rf.Model(sys.argv[1], device="cpu", n_ctx=2048)
    question = "The capital of France is"
    before = model.generate(question, max_tokens=10, temperature=0)
    counting = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
    print("GO", flush=True)
    t_interrupt = None
    pieces = []
    try:
        if mode == "stream":
            for piece in model.generate(counting, max_tokens=2000, temperature=0, stream=True):
                pieces.append(piece)
                if len(pieces) == 3:
                    print("STREAMING", flush=True)
        else:
            model.generate(counting, max_tokens=2000, temperature=0)
        outcome = "finished"
    except KeyboardInterrupt:
        t_interrupt = time.time()
        outcome = "interrupted"
    stats = model.stats
    after = model.generate(question, max_tokens=10, temperature=0)
    print(json.dumps({"outcome": outcome, "t_interrupt": t_interrupt, "before": before,
                      "after": after, "generated": stats["generated_tokens"],
                      "finish_reason": stats["finish_reason"],
                      "stats_after": model.stats, "pieces": len(pieces)}), flush=True)
    """
)


def run_and_interrupt(path: str, mode: str) -> tuple[dict, float]:
    """Start the child, send SIGINT mid-generation; returns its report and the send time."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for = "STREAMING" if mode == "stream" else "GO"
        for line in proc.stdout:
            if line.strip() == wait_for:
                break
        else:
            pytest.fail(f"child ended early: {proc.stderr.read()}")
        if mode != "stream":
            time.sleep(1.0)  # let the prompt be evaluated and some tokens be generated
        t_sent = time.time()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), t_sent


@pytest.mark.parametrize("mode", ["text", "stream"])
def test_sigint_mid_generation_raises_and_model_stays_usable(smollm2_path, mode):
    report, t_sent = run_and_interrupt(smollm2_path, mode)
    assert report["outcome"] == "interrupted", report
    # Interrupted mid-way: tokens were generated, the generation has no finish reason.
    assert 0 < report["generated"] < 2000 and report["finish_reason"] is None, report
    # Within about one token (a generous bound: CI shares two cores with other work).
    assert report["t_interrupt"] - t_sent < 2.0, report
    # The model answers as before the interrupt; its stats describe the new call.
    assert report["after"] == report["before"] and "Paris" in report["after"], report
    assert report["stats_after"]["finish_reason"] in ("length", "eos"), report
    assert 0 < report["stats_after"]["generated_tokens"] <= 10, report
