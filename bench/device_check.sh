#!/usr/bin/env bash
# The one script to run when a GPU machine is lent: bash bench/device_check.sh OUT_DIR
#
# On a machine with an NVIDIA GPU and no package registry it
#   1. records the machine (nvidia-smi, driver, nvcc, python, torch, GPU);
#   2. fails fast, with "no GPU visible", when torch sees no GPU;
#   3. installs wheels carried in .whl/ (if any), then builds and installs mce with
#      pip install --no-index --no-build-isolation . (log: build.log);
#   4. checks that both extensions import (a CUDA module that fails to import is a failure);
#   5. runs tests/test_extension.py and every CUDA test (pytest -m cuda: each against the CPU
#      kernels or references) with MCE_REQUIRE_EXT=1 MCE_REQUIRE_CUDA_BUILD=1 MCE_REQUIRE_CUDA=1
#      and CUDA_LAUNCH_BLOCKING=1 (every launch synchronous, so a fault is reported at the op that
#      caused it); any skipped CUDA test counts as a failure;
#   6. probes the Monte Carlo plan kernel's first launch in a fresh process, with the GPU as found
#      and with all but ~256 MiB of it allocated (time, driver memory taken, plan == CPU plan);
#   7. measures exact (and Monte Carlo) Shapley aggregation against the memory floor
#      (bench/memory_floor.py: time, achieved GB/s, copy GB/s, ratio);
#   8. runs the GPU benchmarks without CUDA_LAUNCH_BLOCKING: aggregation and plan + aggregation
#      (bench_shapley.py), subset_gather (bench_gather.py), a training step (bench_step.py);
#   9. times the dense tasks' training steps (bench/dense_step.py: baseline, MCE exact, MCE with a
#      row budget of 3; seconds per step and peak memory): BraTS at 80^3 (needs monai, carried as
#      a wheel) and nuScenes at 448x800 with a 200x200 BEV;
# and writes OUT_DIR/summary.md plus at most 9 more files (env.txt, build.log, tests.log,
# tests.xml, bench.log, floor.json, bench.json, brats_step.json, nuscenes_step.json). It exits 0
# when every step passed, 1 when one failed, 2 when no GPU is visible or on bad usage; the
# summary is written in every case.
#
# Time: the whole run stays within MCE_CHECK_BUDGET_S (default 450 s, 7.5 minutes); each step has
# its own timeout, cut to what is left of the budget; a step with under 20 s left is not run (and
# counts as failed).
#
# Needs on the machine: python3 with a CUDA build of torch, numpy, pybind11, scikit-build-core,
# cmake (>= 3.24), ninja, pytest, pytest-benchmark (scikit-learn, tqdm, tensorboard for the
# training-step benchmark), nvcc (CUDA 13) and an NVIDIA driver >= 580 (README, "GPU"); the GPU
# machines this project is checked on have them all. A missing Python package travels as wheels:
# on a machine with a registry, in the repository root,
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl NAME==VERSION
# (one version of each package; its missing requirements too), keep .whl/ out of git
# (echo /.whl/ >> .git/info/exclude) and carry it along; this script installs .whl/*.whl with
# --no-index before building, and builds with --find-links .whl.
#
# Environment:
#   PYTHON=python3               the interpreter that builds, tests and benchmarks
#   MCE_CHECK_BUDGET_S=450       time budget of the whole run, in seconds
#   MCE_CHECK_SKIP_BUILD=1       test the mce already installed: no pip uninstall/install (use it
#                                on a development machine, whose editable install it would replace)
#   MCE_CHECK_ALLOW_NO_GPU=1     go on without a GPU: exercises every step (the GPU ones fail)
#   MCE_CHECK_CUDA_ARCHS=...     CMAKE_CUDA_ARCHITECTURES for the build (default: the project's)
#   MCE_CHECK_BUILD_DIR=...      CMake build folder, kept for a rerun (default /tmp/mce-device-build)

set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: bash bench/device_check.sh OUT_DIR" >&2
  exit 2
fi
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PYTHON=${PYTHON:-python3}
BUDGET_S=${MCE_CHECK_BUDGET_S:-450}
SUMMARY_RESERVE_S=15
MIN_STEP_S=20
DEADLINE=$((SECONDS + BUDGET_S))
WORK=$(mktemp -d)

SUMMARY=$OUT/summary.md
ENV_LOG=$OUT/env.txt
BUILD_LOG=$OUT/build.log
TEST_LOG=$OUT/tests.log
JUNIT=$OUT/tests.xml
BENCH_LOG=$OUT/bench.log
FLOOR_JSON=$OUT/floor.json
BENCH_JSON=$OUT/bench.json
BRATS_JSON=$OUT/brats_step.json
NUSCENES_JSON=$OUT/nuscenes_step.json
rm -f "$SUMMARY" "$ENV_LOG" "$BUILD_LOG" "$TEST_LOG" "$JUNIT" "$BENCH_LOG" "$FLOOR_JSON" \
  "$BENCH_JSON" "$BRATS_JSON" "$NUSCENES_JSON"

export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
export PIP_NO_INDEX=1 # no registry there: never wait for one

STEP_NAMES=()
STEP_RESULTS=()
STEP_SECONDS=()
STEP_NOTES=()
FAILED=0
EXIT_CODE=""
GPU_VISIBLE=1

record() { # name result seconds note
  STEP_NAMES+=("$1")
  STEP_RESULTS+=("$2")
  STEP_SECONDS+=("$3")
  STEP_NOTES+=("$4")
  [[ $2 == ok || $2 == skipped ]] || FAILED=1
  printf '[device_check] %-16s %-8s %4ss %s\n' "$1" "$2" "$3" "$4" >&2
}

# run_step NAME CAP_S LOG COMMAND...: runs COMMAND under timeout, output appended to LOG.
run_step() {
  local name=$1 cap=$2 log=$3
  shift 3
  local left=$((DEADLINE - SECONDS - SUMMARY_RESERVE_S))
  if ((left < MIN_STEP_S)); then
    record "$name" "not run" 0 "time budget spent"
    return 1
  fi
  local limit=$((cap < left ? cap : left))
  local start=$SECONDS rc=0
  printf '\n===== %s (limit %ss): %s\n' "$name" "$limit" "$*" >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1 || rc=$?
  local took=$((SECONDS - start))
  if ((rc == 0)); then
    record "$name" ok "$took" ""
  elif ((rc == 124 || rc == 137)); then
    record "$name" FAILED "$took" "timed out after ${limit}s (log: $(basename "$log"))"
  else
    record "$name" FAILED "$took" "exit $rc (log: $(basename "$log"))"
  fi
  return "$rc"
}

md_escape() { printf '%s' "${1//|/\\|}"; }

write_summary() {
  local total=$SECONDS verdict=PASS
  ((FAILED == 0)) || verdict=FAIL
  {
    echo "# mce device check: $verdict"
    echo
    local commit="no git metadata" head
    if head=$(git rev-parse --short HEAD 2>/dev/null); then
      commit=$head
      git diff --quiet HEAD 2>/dev/null || commit="$head + local changes"
    fi
    echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), ${total}s of a ${BUDGET_S}s budget, tree: $commit."
    echo
    echo "- GPU: ${GPU_LINE:-unknown}"
    echo "- driver: ${DRIVER_LINE:-unknown}"
    echo "- torch: ${TORCH_LINE:-unknown}"
    echo "- nvcc: ${NVCC_LINE:-unknown}"
    echo "- mce: ${MCE_LINE:-not checked}"
    echo
    echo "## Steps"
    echo
    echo "| step | result | seconds | note |"
    echo "|---|---|---|---|"
    local i
    for i in "${!STEP_NAMES[@]}"; do
      echo "| ${STEP_NAMES[$i]} | ${STEP_RESULTS[$i]} | ${STEP_SECONDS[$i]} | $(md_escape "${STEP_NOTES[$i]}") |"
    done
    echo
    if ! timeout 60 "$PYTHON" - "$JUNIT" "$BENCH_LOG" "$WORK/floor.md" "$BENCH_JSON" \
      "$WORK/brats.md" "$WORK/nuscenes.md" <<'PY' 2>&1; then
import json
import os
import re
import sys
import xml.etree.ElementTree as ElementTree

junit, bench_log, floor_md, bench_json, brats_md, nuscenes_md = sys.argv[1:7]


def first_line(text):
    text = (text or "").strip()
    return text.splitlines()[0][:300].replace("|", "\\|") if text else ""


print("## CUDA tests (CUDA_LAUNCH_BLOCKING=1, MCE_REQUIRE_CUDA=1)\n")
if os.path.exists(junit):
    try:
        cases = list(ElementTree.parse(junit).getroot().iter("testcase"))
        failed, skipped = [], []
        for case in cases:
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            for tag in ("failure", "error"):
                for node in case.findall(tag):
                    failed.append((name, tag, node.get("message") or node.text))
            for node in case.findall("skipped"):
                skipped.append((name, node.get("message") or node.text))
        passed = len(cases) - len({n for n, _, _ in failed}) - len(skipped)
        print(f"{len(cases)} run: {passed} passed, {len(failed)} failed or errored, "
              f"{len(skipped)} skipped (a skip is a failure here)\n")
        for name, tag, message in failed:
            print(f"- {tag.upper()} `{name}`: {first_line(message)}")
        for name, message in skipped[:10]:
            print(f"- SKIPPED `{name}`: {first_line(message)}")
        if len(skipped) > 10:
            print(f"- ... and {len(skipped) - 10} more skipped (tests.xml)")
    except Exception as error:
        print(f"(tests.xml unreadable: {error})")
else:
    print("(no tests.xml: the CUDA tests did not run)")

print("\n## Monte Carlo plan kernel: first launch in a fresh process\n")
probes = []
if os.path.exists(bench_log):
    for line in open(bench_log, errors="replace"):
        if line.startswith('{"headroom_mib"'):
            try:
                probes.append(json.loads(line))
            except ValueError:
                pass
if probes:
    print("| GPU left free | free at launch (MiB) | result | first launch (ms) | 2nd (ms) "
          "| 3rd (ms) | driver took at 1st launch (MiB) | == CPU plan |")
    print("|---|---|---|---|---|---|---|---|")
    for p in probes:
        left = "as found" if p.get("headroom_mib") == 0 else f"~{p.get('headroom_mib')} MiB"

        def number(key):
            value = p.get(key)
            return "n/a" if value is None else f"{value:.1f}"

        result = "ok" if p.get("ok") else "FAILED: " + first_line(p.get("error"))
        print(f"| {left} | {p.get('free_mib_at_launch', 'n/a')} | {result} "
              f"| {number('first_ms')} | {number('second_ms')} | {number('third_ms')} "
              f"| {number('driver_took_mib')} | {p.get('identical', 'n/a')} |")
    rows = next((p["rows"] for p in probes if "rows" in p), "?")
    print(f"\nPlan: {rows} rows (N=2048, M=12, K=64). The plan kernel has a 256-byte stack "
          "frame per thread (a 16-entry int64 radix histogram); 'driver took' is the memory the driver "
          "reserved at its first launch beyond torch's own allocations.")
else:
    print("(no probe ran)")

print("\n## Shapley aggregation vs the memory floor\n")
if os.path.exists(floor_md):
    print(open(floor_md).read())
else:
    print("(not measured)")

print("\n## GPU benchmarks (pytest-benchmark medians, no CUDA_LAUNCH_BLOCKING)\n")
if os.path.exists(bench_json):
    try:
        report = json.load(open(bench_json))
        benches = report.get("benchmarks", [])
        print(f"{len(benches)} benchmarks\n")
        print("| benchmark | median (ms) | IQR (ms) | rounds |\n|---|---|---|---|")
        medians = {}
        for bench in benches:
            stats = bench["stats"]
            medians[bench["name"]] = stats["median"]
            print(f"| {bench['name']} | {stats['median'] * 1e3:.4g} | {stats['iqr'] * 1e3:.3g} "
                  f"| {stats['rounds']} |")
        base = medians.get("test_training_step[baseline-cuda]")
        if base:
            for name, median in medians.items():
                match = re.fullmatch(r"test_training_step\[(mce-\w+)-cuda\]", name)
                if match:
                    print(f"\nTraining step {match.group(1)} / baseline on the GPU: "
                          f"{median / base:.2f}")
    except Exception as error:
        print(f"(bench.json unreadable: {error})")
else:
    print("(no bench.json: the benchmarks did not run)")

for title, path in (
    ("BraTS training step at 80^3", brats_md),
    ("nuScenes training step at 448x800, BEV 200x200", nuscenes_md),
):
    print(f"\n## {title} (bench/dense_step.py)\n")
    print(open(path).read() if os.path.exists(path) else "(not measured)")
PY
      echo "(the detailed sections could not be written: see above)"
    fi
    echo
    echo "## Files"
    echo
    local file
    for file in "$ENV_LOG" "$BUILD_LOG" "$TEST_LOG" "$JUNIT" "$BENCH_LOG" "$FLOOR_JSON" \
      "$BENCH_JSON" "$BRATS_JSON" "$NUSCENES_JSON"; do
      [[ -e $file ]] && echo "- $(basename "$file")"
    done
  } >"$SUMMARY"
}

finish() {
  local rc=$?
  trap - EXIT
  set +e
  if [[ -z $EXIT_CODE ]]; then
    if ((rc != 0)); then
      record "script" FAILED 0 "bench/device_check.sh stopped (exit $rc)"
    fi
    if ((FAILED == 0)); then EXIT_CODE=0; else EXIT_CODE=1; fi
  fi
  write_summary
  rm -rf "$WORK"
  echo "[device_check] summary: $SUMMARY (exit $EXIT_CODE)" >&2
  exit "$EXIT_CODE"
}
trap finish EXIT

# ---------------------------------------------------------------------------------------------
# 1. The machine
# ---------------------------------------------------------------------------------------------
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

describe_machine() {
  echo "## date"
  date -u
  echo "## uname, cores"
  uname -a
  nproc
  echo "## nvidia-smi"
  nvidia-smi || echo "(nvidia-smi failed or is absent)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap,clocks.sm,clocks.max.sm \
    --format=csv || true
  echo "## nvcc"
  nvcc --version || echo "(no nvcc on the PATH)"
  echo "## cmake, ninja"
  cmake --version || echo "(no cmake on the PATH)"
  ninja --version || echo "(no ninja on the PATH)"
  echo "## python, torch"
  command -v "$PYTHON" || true
  "$PYTHON" - <<'PY'
import sys

print("python", sys.version.replace("\n", " "))
import torch

print("torch", torch.__version__, "built for CUDA", torch.version.cuda)
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    l2 = getattr(p, "L2_cache_size", 0) >> 20
    print(f"gpu {p.name} sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory >> 20} MiB, L2 {l2} MiB")
PY
  echo "## python packages"
  "$PYTHON" -m pip list 2>/dev/null | grep -iE '^(torch|numpy|pybind11|scikit[-_]build[-_]core|cmake|ninja|pytest|pytest[-_]benchmark|pytest[-_]timeout|scikit[-_]learn|tqdm|tensorboard|mce) ' || true
}
export -f describe_machine
export PYTHON
run_step machine 60 "$ENV_LOG" bash -c describe_machine || true

GPU_LINE=$(nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader 2>/dev/null |
  head -1) || GPU_LINE=""
GPU_LINE=${GPU_LINE:-"none visible to nvidia-smi"}
DRIVER_LINE=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1) ||
  DRIVER_LINE=""
DRIVER_LINE="${DRIVER_LINE:-no nvidia-smi} (needs >= 580 for the static CUDA 13 runtime)"
TORCH_LINE=$(timeout 60 "$PYTHON" -c 'import torch; print(torch.__version__, "CUDA",
  torch.version.cuda, "cuda available:", torch.cuda.is_available())' 2>&1 | tail -1) || true
NVCC_LINE=$(nvcc --version 2>/dev/null | grep -i release | head -1) || NVCC_LINE="not found"

# ---------------------------------------------------------------------------------------------
# 2. A GPU, or stop here
# ---------------------------------------------------------------------------------------------
if ! run_step gpu-visible 60 "$ENV_LOG" "$PYTHON" -c '
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"no GPU visible: torch {torch.__version__} (CUDA {torch.version.cuda}) reports "
             "torch.cuda.is_available() False")
print("GPU visible:", torch.cuda.get_device_name(0))'; then
  GPU_VISIBLE=0
  STEP_NOTES[-1]="no GPU visible (torch.cuda.is_available() is False; nvidia-smi: $GPU_LINE)"
  if [[ ${MCE_CHECK_ALLOW_NO_GPU:-0} != 1 ]]; then
    echo "[device_check] no GPU visible: stopping (MCE_CHECK_ALLOW_NO_GPU=1 goes on)" >&2
    EXIT_CODE=2
    exit 2
  fi
  echo "[device_check] no GPU visible: going on (MCE_CHECK_ALLOW_NO_GPU=1)" >&2
fi

# ---------------------------------------------------------------------------------------------
# 3. Build and install
# ---------------------------------------------------------------------------------------------
FIND_LINKS=()
if compgen -G ".whl/*.whl" >/dev/null; then
  FIND_LINKS=(--find-links "$ROOT/.whl")
  run_step wheels 90 "$BUILD_LOG" "$PYTHON" -m pip install --no-index --no-deps .whl/*.whl || true
fi
if [[ ${MCE_CHECK_SKIP_BUILD:-0} == 1 ]]; then
  record build skipped 0 "MCE_CHECK_SKIP_BUILD=1: testing the mce already installed"
else
  # A failed build must not leave an older install to be tested.
  "$PYTHON" -m pip uninstall -y mce >>"$BUILD_LOG" 2>&1 || true
  BUILD_ARGS=(-Cbuild-dir="${MCE_CHECK_BUILD_DIR:-/tmp/mce-device-build}")
  if [[ -n ${MCE_CHECK_CUDA_ARCHS:-} ]]; then
    BUILD_ARGS+=(-Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$MCE_CHECK_CUDA_ARCHS")
  fi
  run_step build 240 "$BUILD_LOG" env CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PYTHON" -m pip install -v --no-index --no-build-isolation --no-deps "${FIND_LINKS[@]}" \
    "${BUILD_ARGS[@]}" . || true
  if grep -q "mce: building CUDA kernels for" "$BUILD_LOG" 2>/dev/null; then
    STEP_NOTES[-1]="${STEP_NOTES[-1]:+${STEP_NOTES[-1]}; }$(grep -o "mce: building CUDA kernels for.*" \
      "$BUILD_LOG" | tail -1)"
  elif grep -q "mce: CUDA kernels not built" "$BUILD_LOG" 2>/dev/null; then
    STEP_NOTES[-1]="${STEP_NOTES[-1]:+${STEP_NOTES[-1]}; }CMake built NO CUDA kernels (nvcc not found?)"
  fi
fi

# Both extensions import, from the installed package (not the source tree).
if run_step import 60 "$ENV_LOG" "$PYTHON" -c '
import mce
from mce import _ext
print("mce", mce.__version__, "from", mce.__file__)
print("cpu kernels:", mce.has_cpu_kernels(), repr(_ext._cpu_import_error))
print("cuda module:", _ext._cuda_module is not None, repr(_ext._cuda_import_error))
print("cuda kernels usable:", mce.has_cuda_kernels())
assert mce.has_cpu_kernels(), f"mce._C failed to import: {_ext._cpu_import_error!r}"
assert _ext._cuda_module is not None, f"mce._C_cuda failed to import: {_ext._cuda_import_error!r}"
'; then
  MCE_LINE="CPU and CUDA extensions import"
else
  MCE_LINE="an extension failed to import (env.txt, step import)"
fi

# ---------------------------------------------------------------------------------------------
# 4. Tests: every CUDA test against the CPU kernels / references, launches synchronous
# ---------------------------------------------------------------------------------------------
PYTEST_TIMEOUT=()
if "$PYTHON" -c "import pytest_timeout" 2>/dev/null; then
  PYTEST_TIMEOUT=(--timeout=120)
fi
TEST_ENV=(env MCE_REQUIRE_EXT=1 MCE_REQUIRE_CUDA_BUILD=1 MCE_REQUIRE_CUDA=1 CUDA_LAUNCH_BLOCKING=1)
run_step extension-tests 60 "$TEST_LOG" "${TEST_ENV[@]}" "$PYTHON" -m pytest -p no:cacheprovider \
  -q "${PYTEST_TIMEOUT[@]}" tests/test_extension.py || true
run_step cuda-tests 180 "$TEST_LOG" "${TEST_ENV[@]}" "$PYTHON" -m pytest -p no:cacheprovider -q \
  -rfEs "${PYTEST_TIMEOUT[@]}" --continue-on-collection-errors --junitxml="$JUNIT" -m cuda \
  tests || true
# A skipped CUDA test is a failure here: nothing may hide behind "no GPU".
run_step cuda-no-skips 30 "$TEST_LOG" "$PYTHON" -c '
import sys, xml.etree.ElementTree as ElementTree
cases = list(ElementTree.parse(sys.argv[1]).getroot().iter("testcase"))
skipped = [c for c in cases if c.find("skipped") is not None]
for c in skipped:
    print("SKIPPED", c.get("classname"), c.get("name"), c.find("skipped").get("message"))
if not cases:
    sys.exit("no CUDA test ran")
sys.exit(f"{len(skipped)} of {len(cases)} CUDA tests skipped" if skipped else 0)' "$JUNIT" || true

# ---------------------------------------------------------------------------------------------
# 5. Benchmarks (launches asynchronous, as in use)
# ---------------------------------------------------------------------------------------------
# The Monte Carlo plan kernel's first launch in a fresh process: GPU as found, then nearly full.
run_step mc-plan-probe 90 "$BENCH_LOG" "$PYTHON" tests/test_cuda_runtime.py --headroom-mib 0 ||
  true
run_step mc-plan-full-gpu 90 "$BENCH_LOG" "$PYTHON" tests/test_cuda_runtime.py \
  --headroom-mib 256 || true
FLOOR_DEVICE=cuda
if ((GPU_VISIBLE == 0)); then
  FLOOR_DEVICE=cpu # no GPU: a dry run of the plumbing, labelled as such
fi
run_step memory-floor 120 "$BENCH_LOG" "$PYTHON" bench/memory_floor.py --device "$FLOOR_DEVICE" \
  --json "$FLOOR_JSON" --markdown "$WORK/floor.md" || true
run_step benchmarks 180 "$BENCH_LOG" "$PYTHON" -m pytest -p no:cacheprovider -q \
  bench/bench_shapley.py bench/bench_gather.py bench/bench_step.py -k cuda --benchmark-only \
  --benchmark-json="$BENCH_JSON" --benchmark-max-time=0.1 --benchmark-min-rounds=5 || true
if [[ ${STEP_NAMES[-1]} == benchmarks && ${STEP_RESULTS[-1]} == ok ]] && ! "$PYTHON" -c '
import json, sys
try:
    benchmarks = json.load(open(sys.argv[1]))["benchmarks"]
except (OSError, ValueError, KeyError):
    benchmarks = []
sys.exit(0 if benchmarks else 1)' "$BENCH_JSON" 2>/dev/null; then
  STEP_RESULTS[-1]=FAILED
  STEP_NOTES[-1]="no GPU benchmark ran (none measured or all skipped; log: bench.log)"
  FAILED=1
fi
# The dense tasks' steps at the paper's sizes: baseline, MCE exact and MCE with a row budget of 3.
run_step brats-step 150 "$BENCH_LOG" bash -c 'set -o pipefail; "$0" bench/dense_step.py --task brats \
  --device cuda --crop 80 --base 8 --levels 5 --rounds 5 --json "$1" | tee "$2"' "$PYTHON" \
  "$BRATS_JSON" "$WORK/brats.md" || true
run_step nuscenes-step 150 "$BENCH_LOG" bash -c 'set -o pipefail; "$0" bench/dense_step.py \
  --task nuscenes --device cuda --rounds 5 --json "$1" | tee "$2"' "$PYTHON" "$NUSCENES_JSON" \
  "$WORK/nuscenes.md" || true
