"""The tuning record's Python surface on any machine: `Model(tuning=...)` checks every field and
value (an unknown field or a bad value is a ValueError naming it, on the CPU too, which has no
tuning of its own), `model.tuning` / `model.plan` / `repr(model)`, `rocmforge bench --tuning`,
and `rf.devices()`. The GPU side (every value decodes the same tokens; what the plan fuses):
test_gpu_tuning.py."""

from __future__ import annotations

import pytest

import rocmforge as rf
from rocmforge import cli
from test_model import Tiny


@pytest.fixture
def tiny_path(tmp_path, rng):
    path = tmp_path / "m.gguf"
    Tiny(rng, dim=64, heads=4, kv_heads=2, ffn=96).write(path, "Q8_0")
    return str(path)


def test_cpu_model_checks_tuning_and_has_none(tiny_path):
    with rf.Model(tiny_path, device="cpu", tuning={"graphs": False, "matvec_rows": 8,
                                                  "decode_attention": "kv", "stream_stages": None}) as m:
        assert m.tuning is None and m.plan == []
        assert "tuning=" not in repr(m)
        assert len(m.generate_tokens([1, 2, 3], max_tokens=3, temperature=0)) == 3


@pytest.mark.parametrize("tuning, field", [
    ({"no_such_field": True}, "no_such_field"),
    ({"matvec_rows": 3}, "matvec_rows"),
    ({"stream_stages": 4}, "stream_stages"),
    ({"mma_min_rows": 0}, "mma_min_rows"),
    ({"decode_attention": "fast"}, "decode_attention"),
    ({"graphs": "maybe"}, "graphs"),
])
def test_bad_tuning_names_the_field(tiny_path, tuning, field):
    with pytest.raises(ValueError, match=field):
        rf.Model(tiny_path, device="cpu", tuning=tuning)


def test_tuning_keys_must_be_strings(tiny_path):
    with pytest.raises(TypeError, match="tuning keys"):
        rf.Model(tiny_path, device="cpu", tuning={1: True})


def test_bench_takes_tuning(tiny_path, capsys):
    args = ["bench", "-m", tiny_path, "-p", "3", "-n", "2", "-r", "1", "--device", "cpu"]
    assert cli.main(args + ["--tuning", "graphs=0, decode_attention=kv"]) == 0
    assert "| tg2 |" in capsys.readouterr().out
    assert cli.main(args + ["--tuning", "graphs"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
    assert cli.main(args + ["--tuning", "nope=1"]) == 1
    assert "nope" in capsys.readouterr().err


def test_devices_show_each_gpus_tuning():
    for d in rf.devices():
        if d["device"] == "cpu" or "error" in d:
            continue
        t = d["tuning"]
        assert set(t) >= {"graphs", "decode_ahead", "overlap", "fuse_norm", "fuse_rope",
                          "matvec_rows", "mma", "decode_attention"}
        assert t["decode_attention"] in (None, "head", "kv", "flash")  # None: auto
