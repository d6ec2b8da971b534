"""Every Python block of the README runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_block_runs(index: int, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"README block {index} failed:\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_the_library_block_prints_what_its_comments_say() -> None:
    block = next(b for b in BLOCKS if "shapley_values" in b)
    done = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=120, check=True
    )
    printed = " ".join(done.stdout.split())
    comments = " ".join(" ".join(line.split("#")[1:]) for line in block.splitlines())
    comments = " ".join(comments.split())
    for expected in (
        "tensor([[ 0.41, -0.27, 0.00], [ 0.32, 0.24, -0.04]])",
        "tensor([0.13, 0.52]) tensor([0.13, 0.52])",
    ):
        assert expected in printed and expected in comments
