"""nuScenes loading throughput: samples per second of ``NuScenesReader.read_all`` with 1, 2 and
4 worker threads (``storage=memory`` reads its splits once so), and of the batches of a
streamed split (``storage=stream``: batch 1 as the task trains, read when needed, the next
four on background threads) on a dataroot written in the real format.

Run: ``python bench/nuscenes_loading.py [SAMPLES_PER_SCENE]``. The dataroot holds two scenes
with full-size 1600 x 900 JPEGs, LiDAR and radar files with their sweeps (written by the test
fixture, so its LiDAR scans hold about a thousand points, not nuScenes' 35k); each sample is
decoded, resized to 448 x 800, moved into the reference frame and rasterised (target 200 x 200).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "data"))

from nuscenes_fixture import write_nuscenes_fixture

from mce.data.nuscenes import NuScenesReader, open_nuscenes, split_tokens
from mce.tasks.nuscenes import _streamed


def main(samples_per_scene: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = write_nuscenes_fixture(
            Path(folder) / "data", samples_per_scene, image_size=(900, 1600), sweeps=5
        )
        nusc = open_nuscenes(root)
        tokens = split_tokens(nusc, "train") + split_tokens(nusc, "val")
        reader = NuScenesReader(nusc, radar_sweeps=5)
        for workers in (1, 2, 4):
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                reader.read_all(tokens, workers=workers)
                best = min(best, time.perf_counter() - start)
            print(
                f"read_all: {len(tokens)} samples in {best:.2f} s (best of 3): "
                f"{len(tokens) / best:.1f} samples/s, {workers} worker thread(s)"
            )
        for workers in (1,):  # at batch 1 the read-ahead threads are the parallelism
            split = _streamed(reader, tokens, workers, "bench")
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                for _batch in split.batches(1):
                    pass
                best = min(best, time.perf_counter() - start)
            print(
                f"streamed batches of 1: {len(tokens)} samples in {best:.2f} s (best of 3): "
                f"{len(tokens) / best:.1f} samples/s, workers={workers}"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
