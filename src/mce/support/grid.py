"""The bird's-eye-view voxel grid shared by the nuScenes reader (targets, visibility) and the
BEV model (rasterisation, camera lifting): (Z, Y, X) in the reference camera frame."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Grid3D"]


@dataclass(frozen=True)
class Grid3D:
    """``cells`` x ``height_bins`` x ``cells`` voxels (Z, Y, X) over x, z in [-half, half] and
    y in [y_min, y_max] (metres, reference camera frame)."""

    cells: int = 200
    half_extent: float = 50.0
    height_bins: int = 8
    y_min: float = -4.0
    y_max: float = 6.0

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.cells, self.height_bins, self.cells

    @property
    def cell_size(self) -> float:
        """Metres a cell spans along x and z."""
        return 2 * self.half_extent / self.cells

    @property
    def bin_height(self) -> float:
        """Metres a height slice spans along y."""
        return (self.y_max - self.y_min) / self.height_bins
