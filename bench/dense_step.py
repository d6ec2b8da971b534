"""Training step of the dense tasks: seconds per step and memory of the baseline, MCE exact and
MCE with a row budget (``--shapley sampled --row-budget R``), measured interleaved.

Run: ``python bench/dense_step.py [--task brats|nuscenes] [--device cuda] ...``.

- brats (``--crop 80 --base 8 --levels 5`` for the paper's size): one crop, batch 1 (Table 1),
  all four sequences (15 rows exact); MCE scores U with four frozen unimodal U-Nets on the
  step's own crop, as the brats task does.
- nuscenes (``--image-height 448 --image-width 800 --cells 200`` by default): one sample,
  batch 1, camera + LiDAR (30k points) + radar (3,500 points), 7 rows exact; MCE scores U
  with three frozen unimodal models on the step's inputs, as training with its random
  reference camera does.

Random inputs and labels; a step is the method's loss, backward and an AdamW update. Memory:
the bytes of the tensors a step saves for its backward pass (exact, on any machine), and on a
GPU ``torch.cuda.max_memory_allocated`` of a step (reset after a warm-up step). Prints a
Markdown table and, with ``--json``, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mce.data.dataset import Batch
from mce.methods import MethodInputs
from mce.methods.baseline import BaselineMethod
from mce.methods.mce import MCEConfig, MCEMethod
from mce.nn.bev import CAMERA_GEOMETRY, camera_geometry
from mce.tasks.brats import build_model, build_unimodal
from mce.tasks.brats.segmentation import dice_ce_loss, dice_utility
from mce.tasks.nuscenes import bev_loss, iou_utility, nuscenes_task
from mce.training.pretrain import BatchUpperBounds

VARIANTS = ("baseline", "exact", "sampled")


def _brats(args: argparse.Namespace, device: torch.device):
    """The brats model, one crop with all four sequences, U from four frozen U-Nets."""
    model = build_model(args.crop, args.base, args.levels)
    generator = torch.Generator().manual_seed(1)
    shape = (1, 1, args.crop, args.crop, args.crop)
    inputs = {name: torch.randn(shape, generator=generator) for name in model.modalities}
    target = torch.randint(0, 4, shape[:1] + shape[2:], generator=generator)
    batch = Batch(inputs, target, torch.tensor([0b1111]), torch.tensor([0]))
    upper = BatchUpperBounds(
        {
            name: build_unimodal(args.crop, args.base, args.levels).to(device)
            for name in model.modalities
        },
        model.modalities,
        dice_utility,
    )
    counts = torch.tensor([44, 44, 110, 175])  # (0.8, 0.8, 0.5, 0.2) of 219 cases
    return model, batch, dice_ce_loss, dice_utility, counts, upper


def _nuscenes(args: argparse.Namespace, device: torch.device):
    """The nuscenes model, one sample with camera, LiDAR (30k points) and radar (5 sweeps of
    700 points), random images and targets; U from three frozen unimodal models run on the
    batch, as training does with its random reference camera."""
    task = nuscenes_task(
        image_height=args.image_height, image_width=args.image_width, cells=args.cells
    )
    model = task.build_model()
    generator = torch.Generator().manual_seed(1)
    height, width, cells = args.image_height, args.image_width, args.cells
    images = torch.randint(0, 256, (1, 6, 3, height, width), generator=generator)
    focal = 1266.0 * width / 1600
    intrinsics = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    cam_from_ref = torch.eye(4).repeat(1, 6, 1, 1)
    for c, yaw in enumerate((55.0, 0.0, -55.0, 110.0, 180.0, -110.0)):
        angle = torch.tensor(yaw) * torch.pi / 180  # camera turned about its y axis (down)
        cam_from_ref[0, c, 0, 0] = cam_from_ref[0, c, 2, 2] = torch.cos(angle)
        cam_from_ref[0, c, 0, 2], cam_from_ref[0, c, 2, 0] = torch.sin(angle), -torch.sin(angle)
    lidar = torch.rand(1, 30_000, 4, generator=generator) * torch.tensor([100.0, 8, 100, 0])
    lidar -= torch.tensor([50.0, 3, 50, 0])
    radar = torch.randn(1, 3_500, 19, generator=generator) * 20
    target = (torch.rand(1, 2, cells, cells, generator=generator) < 0.05).float()
    target[:, 1] = 1.0
    batch = Batch(
        {
            "camera": images.to(torch.uint8),
            "lidar": lidar,
            "radar": radar,
        },
        target,
        torch.tensor([0b111]),
        torch.tensor([0]),
        {"lidar": torch.tensor([30_000]), "radar": torch.tensor([3_500])},
        {CAMERA_GEOMETRY: camera_geometry(intrinsics.expand(1, 6, 3, 3), cam_from_ref)},
    )
    counts = torch.tensor([22504, 14065, 5626])  # setting a of 28,130 samples
    upper = BatchUpperBounds(
        {name: task.build_unimodal(name).to(device) for name in model.modalities},
        model.modalities,
        iou_utility,
    )
    return model, batch, bev_loss, iou_utility, counts, upper


def make_step(variant: str, args: argparse.Namespace):
    device = torch.device(args.device)
    torch.manual_seed(0)
    build = _brats if args.task == "brats" else _nuscenes
    model, batch, loss, utility, counts, upper = build(args, device)
    model = model.to(device)
    model.row_memory_gb = args.row_memory_gb
    batch = batch.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=1e-4)
    method_inputs = MethodInputs(
        loss=loss,
        utility=utility,
        counts=counts,
        dataset_size=219 if args.task == "brats" else 28130,
        seed=0,
        upper=upper,
    )
    if variant == "baseline":
        method = BaselineMethod(method_inputs)
    else:
        method = MCEMethod(method_inputs, MCEConfig(shapley=variant, row_budget=args.row_budget))
    counter = iter(range(10**9))

    def step() -> float:
        result = method.step(model, batch, next(counter))
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        return result.logs.get("rows", 1.0)

    step.model, step.batch, step.method = model, batch, method  # type: ignore[attr-defined]
    return step


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    steps = {variant: make_step(variant, args) for variant in args.variants}
    rows = {variant: step() for variant, step in steps.items()}  # warm-up
    times: dict[str, list[float]] = {variant: [] for variant in steps}
    for _ in range(args.rounds):
        for variant, step in steps.items():
            _sync(args.device)
            start = time.perf_counter()
            step()
            _sync(args.device)
            times[variant].append(time.perf_counter() - start)
    return {
        variant: {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "rows": rows[variant],
        }
        for variant, values in times.items()
    }


def saved_activation_bytes(variant: str, args: argparse.Namespace) -> float:
    """Bytes of the tensors one step keeps for its backward pass (each storage counted once):
    the activation memory of the step, exact and the same on every machine."""
    step_of = make_step(variant, args)
    model, batch, method = step_of.model, step_of.batch, step_of.method
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = method.step(model, batch, 0)
    result.loss.backward()
    return float(sum(storages.values()))


def peak_memory(variant: str, args: argparse.Namespace) -> float:
    """CUDA allocator peak of one step (after a warm-up step); NaN on the CPU."""
    if not args.device.startswith("cuda"):
        return float("nan")
    step = make_step(variant, args)
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="brats", choices=("brats", "nuscenes"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-height", type=int, default=448, help="nuscenes")
    parser.add_argument("--image-width", type=int, default=800, help="nuscenes")
    parser.add_argument("--cells", type=int, default=200, help="nuscenes BEV cells a side")
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--row-budget", type=int, default=3)
    parser.add_argument("--row-memory-gb", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    timings = time_steps(args)
    for variant in args.variants:
        timings[variant]["saved_bytes"] = saved_activation_bytes(variant, args)
        timings[variant]["peak_bytes"] = peak_memory(variant, args)
    base = timings["baseline"]["median_s"] if "baseline" in timings else None
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"{args.task} step, {where}, "
        + (
            f"crop {args.crop}^3, base {args.base}, levels {args.levels}, "
            if args.task == "brats"
            else f"images {args.image_height}x{args.image_width}, BEV {args.cells}^2, "
        )
        + f"batch 1, every modality, {args.rounds} interleaved rounds, torch {torch.__version__}"
    )
    print(
        "| variant | rows | median s/step | min s/step | x baseline | saved for backward (MB) "
        "| peak allocated (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for variant, numbers in timings.items():
        ratio = numbers["median_s"] / base if base else float("nan")
        label = f"sampled R={args.row_budget}" if variant == "sampled" else variant
        print(
            f"| {label} | {numbers['rows']:.0f} | {numbers['median_s']:.3f} | "
            f"{numbers['min_s']:.3f} | {ratio:.2f} | {numbers['saved_bytes'] / 2**20:.0f} | "
            f"{numbers['peak_bytes'] / 2**20:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"args": vars(args), "device": where, "timings": timings}, file, indent=1)


if __name__ == "__main__":
    main()
