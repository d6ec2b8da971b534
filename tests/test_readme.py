"""Every Python block of the README and of the pages under docs/ runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    block
    for page in PAGES
    for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
]


def test_the_readme_and_the_docs_have_python_blocks() -> None:
    assert len(BLOCKS) >= 3
    assert re.findall(r"```python\n", README.read_text())


def test_the_readme_stays_short_and_its_links_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"


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
    assert done.returncode == 0, f"block {index} failed:\n{done.stderr[-3000:]}"


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
