"""The nuScenes task's options (``--task-option NAME=VALUE``), with their defaults and checks."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NuScenesOptions", "REFERENCES", "RUNTIME", "STORAGES", "SWITCHES"]

REFERENCES = ("random", "front")  # the training reference camera (option reference)
STORAGES = ("stream", "memory")  # sensors read batch by batch, or every split read at once
SWITCHES = ("true", "false")  # option check_files
# how the data is read, not what a run computes (tested: equal batches and scores)
RUNTIME = frozenset({"workers", "storage", "check_files"})


@dataclass(frozen=True)
class NuScenesOptions:
    """The nuScenes task's settings.

    Attributes:
        image_height, image_width: the camera images' size after resizing.
        cells: BEV cells a side over 100 m (a multiple of 4: the decoder halves twice).
        height_bins: voxel bins over the grid's height.
        dim: channels of every modality's BEV features.
        lidar_sweeps, radar_sweeps: sweeps accumulated per sample.
        camera_weights: a torchvision ``resnet18`` state-dict file ("": random init).
        version: the dataroot's version folder ("": the one found).
        workers: threads reading samples.
        reference: "random" (a random reference camera in training) or "front".
        storage: "stream" (read batch by batch) or "memory" (every split read at start).
        check_files: "true" (check every file of the two splits at start) or "false".

    Raises:
        ValueError: a size under 4, ``cells`` not a multiple of 4, or an unknown choice.
    """

    image_height: int = 448
    image_width: int = 800
    cells: int = 200
    height_bins: int = 8
    dim: int = 128
    lidar_sweeps: int = 1
    radar_sweeps: int = 5
    camera_weights: str = ""
    version: str = ""
    workers: int = 4
    reference: str = "random"
    storage: str = "stream"
    check_files: str = "true"

    def __post_init__(self) -> None:
        for name in ("image_height", "image_width", "cells", "height_bins", "dim"):
            value = getattr(self, name)
            if value < 4:
                raise ValueError(f"nuscenes {name} must be at least 4, got {value}")
        for name, choices in (
            ("reference", REFERENCES),
            ("storage", STORAGES),
            ("check_files", SWITCHES),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(
                    f"nuscenes {name} must be one of {', '.join(choices)}, got {value!r}"
                )
        if self.cells % 4:
            raise ValueError(
                "nuscenes cells must be a multiple of 4 (the decoder halves twice), "
                f"got {self.cells}"
            )

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the camera images."""
        return self.image_height, self.image_width
