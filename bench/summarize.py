"""Prints pytest-benchmark JSON (``--benchmark-json``) as Markdown tables of medians."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    report = json.load(open(path))
    cpu = report["machine_info"]["cpu"].get("brand_raw", "?")
    print(f"{cpu}, {report['datetime'][:10]}, torch threads 1\n")
    print("| benchmark | median (ms) | IQR (ms) | rounds |\n|---|---|---|---|")
    for bench in report["benchmarks"]:
        stats = bench["stats"]
        print(
            f"| {bench['name']} | {stats['median'] * 1e3:.4g} | {stats['iqr'] * 1e3:.3g} "
            f"| {stats['rounds']} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
