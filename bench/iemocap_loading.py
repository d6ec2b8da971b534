"""IEMOCAP data-loading throughput: HDF5 folder -> tensors, and batches from memory.

Writes a folder in the real layout (tests/data/iemocap_fixture.py) with the given number of
utterances, lengths uniform up to 150 acoustic frames, 40 lexical tokens and 100 visual frames
(real widths 130 / 1024 / 342), then times
``load_iemocap`` (reading every utterance of one fold from HDF5, checking it and padding it) and
the trainer's batches of 128 from the in-memory split (the data set lives in memory, so every
epoch after the first reads only memory). Run: ``python bench/iemocap_loading.py [utterances]``.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

from mce.data.iemocap import load_iemocap

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "iemocap_fixture.py"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("iemocap_fixture", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(utterances: int) -> None:
    torch.set_num_threads(1)
    fixture = _fixture_module()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        root = fixture.write_iemocap_fixture(
            Path(folder),
            utterances=utterances,
            folds=(1,),
            max_len={"acoustic": 150, "lexical": 40, "visual": 100},
        )
        written = time.perf_counter() - started
        size = sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
        times = []
        for _ in range(3):
            started = time.perf_counter()
            splits = load_iemocap(root, 1)
            times.append(time.perf_counter() - started)
        loaded = min(times)
        total = len(splits.train) + len(splits.validation) + len(splits.test)
        print(f"{total} utterances, {size / 2**20:.1f} MiB of HDF5 (written in {written:.1f} s)")
        print(
            f"load_iemocap (HDF5 -> checked, padded tensors): {loaded:.2f} s, "
            f"{total / loaded:,.0f} utterances/s (best of 3)"
        )
        train = splits.train
        started = time.perf_counter()
        for _ in range(5):
            for batch in train.batches(128, torch.randperm(len(train))):
                pass
        elapsed = time.perf_counter() - started
        print(
            f"batches of 128 from memory (index, trim to the batch's longest): "
            f"{5 * len(train) / elapsed:,.0f} utterances/s"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
