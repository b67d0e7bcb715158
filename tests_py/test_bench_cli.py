"""`rocmforge bench` (python/rocmforge/cli.py, src/bench.rs) on a tiny model, on the CPU: the
report's byte counts against the file as the gguf package reads it, and the speed fields."""

from __future__ import annotations

import json

import gguf
import pytest

import rocmforge

from rocmforge import cli
from test_model import Tiny


@pytest.mark.parametrize("tied", [False, True])
def test_bench_reports_the_bytes_a_decode_step_reads(tmp_path, rng, capsys, tied):
    m = Tiny(rng, dim=64, heads=4, kv_heads=2, ffn=96, tied=tied)
    path = tmp_path / "m.gguf"
    m.write(path, "Q8_0")
    assert cli.main(["bench", "-m", str(path), "-p", "7", "-n", "3", "-r", "2", "--device", "cpu",
                     "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    reader = gguf.GGUFReader(str(path))
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    want = sum(sizes.values()) - (0 if tied else sizes["token_embd.weight"])
    assert r["bytes_per_token"] == want
    assert r["file_bytes"] == path.stat().st_size
    assert (r["n_prompt"], r["n_gen"]) == (7, 3)
    assert len(r["pp_runs"]) == 2 and len(r["tg_runs"]) == 2
    assert all(v > 0 for v in r["pp_runs"] + r["tg_runs"])
    assert min(r["tg_runs"]) <= r["tg"] <= max(r["tg_runs"])
    assert r["copy_bandwidth"] == 0 and r["peak_device_bytes"] == 0  # CPU: no device numbers


def test_bench_table_and_bad_arguments(tmp_path, rng, capsys):
    m = Tiny(rng, dim=64, heads=4, kv_heads=2, ffn=96)
    path = tmp_path / "m.gguf"
    m.write(path, "Q8_0")
    assert cli.main(["bench", "-m", str(path), "-p", "5", "-n", "2", "-r", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| m.gguf | pp5 |" in out and "| m.gguf | tg2 |" in out
    assert cli.main(["bench", "-m", str(path), "-p", "0", "-n", "3", "-r", "1", "--device", "cpu",
                     "--sampled"]) == 0
    out = capsys.readouterr().out
    assert "| m.gguf | tg3 sampled |" in out and "pp" not in out.split("| --- |")[-1]
    assert cli.main(["bench", "-m", str(path), "-r", "0", "--device", "cpu"]) == 1
    assert "-r >= 1" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        rocmforge._rocmforge.bench_model(str(tmp_path / "missing.gguf"), "cpu", 4, 2, 1)
