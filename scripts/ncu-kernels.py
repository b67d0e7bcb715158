#!/usr/bin/env python3
"""Per-kernel totals of an Nsight Compute CSV: launches, time, time a launch, and DRAM read rate
where the CSV has it. One table a file, so that two builds' profiles of the same run compare side
by side (which kernel a change made slower).

    ncu --csv --metrics gpu__time_duration.sum[,dram__bytes_read.sum] \\
        python3 -m rocmforge.cli bench -m FILE -p 0 -n 8 -r 1 > run.csv
    python3 scripts/ncu-kernels.py run.csv [other.csv ...] [--top N]

ncu profiles each kernel alone, with its caches flushed and its clocks fixed: the times are
longer than in a real run, and only their differences between builds mean something.
"""

from __future__ import annotations

import argparse
import collections
import csv

SCALE = {
    "ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3,
    "s": 1e6, "second": 1e6,
    "byte": 1.0, "B": 1.0, "Kbyte": 1e3, "KB": 1e3, "Mbyte": 1e6, "MB": 1e6, "Gbyte": 1e9, "GB": 1e9,
}


def kernels(path: str) -> dict[str, list[float]]:
    """Kernel name (without its arguments) -> [launches, microseconds, bytes read from DRAM]."""
    with open(path) as f:
        rows = list(csv.DictReader(line for line in f if line.startswith('"')))
    launches: dict[str, dict[str, float | str]] = collections.OrderedDict()
    for r in rows:
        unit = r.get("Metric Unit", "")
        if unit not in SCALE:
            raise SystemExit(f"{path}: unknown unit {unit!r} of {r.get('Metric Name')}")
        d = launches.setdefault(r["ID"], {"name": r["Kernel Name"].split("(")[0]})
        d[r["Metric Name"]] = float(r["Metric Value"].replace(",", "")) * SCALE[unit]
    out: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for d in launches.values():
        a = out[str(d["name"])]
        a[0] += 1
        a[1] += float(d.get("gpu__time_duration.sum", 0.0))
        a[2] += float(d.get("dram__bytes_read.sum", 0.0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--top", type=int, default=25, help="kernels shown a file (most time first)")
    args = ap.parse_args()
    for path in args.csv:
        k = kernels(path)
        total = sum(a[1] for a in k.values())
        print(f"== {path}: {sum(int(a[0]) for a in k.values())} launches, {total:,.1f} us")
        print(f"{'kernel':58s} {'launches':>8s} {'us':>11s} {'us/launch':>10s} {'GB/s read':>10s}")
        for name, (n, us, read) in sorted(k.items(), key=lambda x: -x[1][1])[: args.top]:
            rate = f"{read / us / 1e3:10,.0f}" if read and us else ""
            print(f"{name[:58]:58s} {int(n):8d} {us:11,.1f} {us / n:10.2f} {rate}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
