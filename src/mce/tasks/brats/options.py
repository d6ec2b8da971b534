"""The BraTS task's options (``--task-option NAME=VALUE``), with their defaults and checks."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HEADS", "BratsOptions"]

HEADS = ("light", "decoder")  # option head


@dataclass(frozen=True)
class BratsOptions:
    """The BraTS task's settings.

    Attributes:
        crop: side of the training crop and of the sliding window, a multiple of
            2^(levels-1) with at least 2 bottleneck voxels a side.
        base: channels of the U-Net's first level.
        levels: U-Net levels.
        head: the unimodal heads, "light" (a linear read-out per modality) or "decoder" (one
            shared U-Net decoder, mmFormer's ``Decoder_sep``).

    Raises:
        ValueError: ``crop`` not a positive multiple of 2^(levels-1) with a bottleneck of at
            least 2 voxels a side, ``base`` < 1, ``levels`` < 2, or an unknown ``head``.
    """

    crop: int = 80
    base: int = 8
    levels: int = 5
    head: str = "light"

    def __post_init__(self) -> None:
        if self.levels < 2 or self.base < 1:
            raise ValueError(
                f"brats needs levels >= 2 and base >= 1, got {self.levels} and {self.base}"
            )
        if self.head not in HEADS:
            raise ValueError(f"brats head must be one of {', '.join(HEADS)}, got {self.head!r}")
        stride = 1 << (self.levels - 1)
        if self.crop % stride or self.crop // stride < 2:
            raise ValueError(
                f"brats crop {self.crop} must be a multiple of 2^(levels-1) = {stride} with at "
                f"least 2 bottleneck voxels a side (crop >= {2 * stride})"
            )

    @property
    def roi(self) -> tuple[int, int, int]:
        """The crop's (and the sliding window's) shape."""
        return (self.crop,) * 3
