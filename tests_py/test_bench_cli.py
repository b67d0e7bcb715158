"""`rocmforge bench` (python/rocmforge/cli.py, src/bench.rs) on a tiny model, on the CPU: the
report's byte and parameter counts against the file as the gguf package reads it, llama-bench's
tests (comma lists of sizes, depths), the statistics of the runs, and bad arguments."""

from __future__ import annotations

import json

import gguf
import numpy as np
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
    assert r["model_size"] == sum(sizes.values())
    assert r["model_n_params"] == sum(int(t.n_elements) for t in reader.tensors)
    assert r["file_bytes"] == path.stat().st_size
    assert [t["test"] for t in r["tests"]] == ["pp7", "tg3"]
    for t in r["tests"]:
        assert len(t["samples_ts"]) == 2 and all(v > 0 for v in t["samples_ts"])
        assert t["avg_ts"] == pytest.approx(np.mean(t["samples_ts"]), rel=1e-12)
        assert t["stddev_ts"] == pytest.approx(np.std(t["samples_ts"], ddof=1), rel=1e-9, abs=1e-12)
        assert t["roofline_ts"] is None  # CPU: no copy bandwidth
    assert r["copy_bandwidth"] == 0 and r["peak_device_bytes"] == 0  # CPU: no device numbers


def test_bench_tests_at_each_depth(tmp_path, rng, capsys):
    """`-p a,b -n c -d 0,d` runs llama-bench's tests in its order, with n_prompt / n_gen /
    n_depth as llama-bench's JSON has them, and a cache sized for the deepest, longest test."""
    m = Tiny(rng, dim=64, heads=4, kv_heads=2, ffn=96)
    path = tmp_path / "m.gguf"
    m.write(path, "Q8_0")
    p1, p2, n, d = (int(v) for v in rng.integers(1, 9, 4))
    assert cli.main(["bench", "-m", str(path), "-p", f"{p1},{p2},0", "-n", f"{n}", "-d", f"0,{d}",
                     "-r", "3", "--device", "cpu", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    want = []
    for depth in (0, d):
        at = f" @ d{depth}" if depth else ""
        want += [(f"pp{p1}{at}", p1, 0, depth), (f"pp{p2}{at}", p2, 0, depth), (f"tg{n}{at}", 0, n, depth)]
    assert [(t["test"], t["n_prompt"], t["n_gen"], t["n_depth"]) for t in r["tests"]] == want
    assert all(len(t["samples_ts"]) == 3 for t in r["tests"])
    with rocmforge.Model(str(path), device="cpu") as model:
        kv_elem = 2 if model.config["kv_dtype"] == "f16" else 4
    kv_per_position = 2 * m.layers * m.kv_heads * m.head_dim * kv_elem
    assert r["kv_bytes_per_position"] == kv_per_position
    assert r["kv_cache_bytes"] == kv_per_position * (d + max(p1, p2, n))


def test_bench_table_and_bad_arguments(tmp_path, rng, capsys):
    m = Tiny(rng, dim=64, heads=4, kv_heads=2, ffn=96)
    path = tmp_path / "m.gguf"
    m.write(path, "Q8_0")
    assert cli.main(["bench", "-m", str(path), "-p", "5", "-n", "2", "-d", "0,3", "-r", "1",
                     "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    header, rows = out.split("| --- |")[0].splitlines()[-1], out.split("\n| --- |")[1].splitlines()[1:]
    assert header == "| model | size | params | test | t/s | % of roofline |"
    reader = gguf.GGUFReader(str(path))
    params = sum(int(t.n_elements) for t in reader.tensors)
    assert [row.split(" | ")[3] for row in rows] == ["pp5", "tg2", "pp5 @ d3", "tg2 @ d3"]
    assert all(row.split(" | ")[2] == cli.llama_bench_count(params) for row in rows)
    assert all(float(row.split(" | ")[4].split(" ± ")[0].replace(",", "")) > 0 for row in rows)
    assert cli.main(["bench", "-m", str(path), "-p", "0", "-n", "3", "-r", "1", "--device", "cpu",
                     "--sampled"]) == 0
    out = capsys.readouterr().out
    assert "| tg3 sampled |" in out and "pp" not in out.split("| --- |")[-1]
    assert cli.main(["bench", "-m", str(path), "-r", "0", "--device", "cpu"]) == 1
    assert "-r must be >= 1" in capsys.readouterr().err
    assert cli.main(["bench", "-m", str(path), "-p", "0", "-n", "0", "--device", "cpu"]) == 1
    assert "nothing to measure" in capsys.readouterr().err
    for bad in (["-p", "5,x"], ["-n", "-1"], ["-d", ""]):
        with pytest.raises(SystemExit) as e:
            cli.main(["bench", "-m", str(path), "--device", "cpu", *bad])
        assert e.value.code == 2
        assert "sizes" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        rocmforge._rocmforge.bench_model(str(tmp_path / "missing.gguf"), "cpu", 4, 2, 1)
    with pytest.raises(ValueError, match="repeats"):
        rocmforge._rocmforge.bench_model(str(path), "cpu", [0], [0], 1)


def test_human_count_matches_llama_bench():
    assert cli.llama_bench_count(8_030_261_248) == "8.03 B"
    assert cli.llama_bench_count(494_032_768) == "494.03 M"
    assert cli.llama_bench_count(40_960) == "40.96 K"
    assert cli.llama_bench_count(17) == "17"
