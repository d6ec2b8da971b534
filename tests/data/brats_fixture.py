"""A tiny BraTS2020 training folder in the real on-disk layout (NIfTI via nibabel), for tests.

Import it from a test in ``tests/data`` as ``from brats_fixture import write_brats_fixture``
(pytest puts the test file's folder on ``sys.path``); from ``tests/`` as
``from data.brats_fixture import write_brats_fixture``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np

MODALITIES = ("t1", "t1ce", "flair", "t2")
# BraTS-like affine: 1 mm voxels, x and y flipped (LPS-ish), an offset origin
AFFINE = np.array(
    [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
# per modality: (on-disk dtype, brain base intensity, edema gain, core gain, enhancing gain)
# the tumour is bright in flair (edema) and t1ce (enhancing), faint in t1
CONTRAST: dict[str, tuple[type, float, float, float, float]] = {
    "t1": (np.int16, 400.0, -10.0, -20.0, 5.0),
    "t1ce": (np.float32, 500.0, 20.0, -50.0, 600.0),
    "flair": (np.float32, 300.0, 500.0, 200.0, 300.0),
    "t2": (np.int16, 600.0, 300.0, 150.0, 100.0),
}


def case_id(index: int) -> str:
    """``BraTS20_Training_XXX`` for ``index`` (1-based, as in the release)."""
    return f"BraTS20_Training_{index:03d}"


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    """Writes ``data`` (its dtype kept) as a NIfTI-1 file (``.nii.gz`` compresses it)."""
    image = nibabel.Nifti1Image(data, affine)
    image.header.set_data_dtype(data.dtype)
    nibabel.save(image, path)


def _case(rng: np.random.Generator, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """The 4 sequences and the seg of one case: an ellipsoid brain with a nested tumour."""
    grid = np.stack(np.meshgrid(*(np.arange(s, dtype=np.float64) for s in shape), indexing="ij"))
    size = np.array(shape, dtype=np.float64)
    centre = size / 2 + rng.uniform(-1.5, 1.5, size=3)
    radii = size * rng.uniform(0.28, 0.38, size=3)  # the brain stays off the volume's border
    distance = np.sqrt(
        (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0)
    )
    brain = distance <= 1.0
    # tumour: a ball inside the brain; ET at its centre, inside TC (NCR + ET), inside WT
    tumour_centre = centre + rng.uniform(-0.3, 0.3, size=3) * radii
    r = np.sqrt(((grid - tumour_centre[:, None, None, None]) ** 2).sum(0))
    scale = min(radii) * rng.uniform(0.45, 0.6)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[(r <= scale) & brain] = 2  # edema
    seg[(r <= 0.6 * scale) & brain] = 1  # necrotic / non-enhancing core
    seg[(r <= 0.3 * scale) & brain] = 4  # enhancing tumour
    out: dict[str, np.ndarray] = {}
    for modality, (dtype, base, edema, core, enhancing) in CONTRAST.items():
        volume = base * (1.0 + 0.1 * rng.normal(size=shape)) + 0.2 * base * (1.0 - distance)
        volume += np.select([seg == 2, seg == 1, seg == 4], [edema, core, enhancing], 0.0)
        volume = np.where(brain, np.maximum(volume, 1.0), 0.0)
        out[modality] = volume.astype(dtype)
    out["seg"] = seg
    return out


def write_brats_fixture(
    root: Path, cases: int = 6, shape: tuple[int, int, int] = (24, 24, 16), seed: int = 0
) -> Path:
    """Writes ``cases`` case folders ``BraTS20_Training_001..`` under ``root``; returns ``root``.

    Each folder holds ``<case>_{t1,t1ce,flair,t2,seg}.nii.gz``: t1 and t2 int16, t1ce and flair
    float32, seg uint8, all with ``AFFINE``. The brain is a jittered ellipsoid (zeros outside,
    intensities >= 1 inside, so the brain mask is exactly the ellipsoid); the tumour is a ball
    with labels 4 (centre) inside 1 inside 2, brightest in flair and t1ce, faint in t1.
    A ``name_mapping.csv`` beside the folders mimics the release (the reader ignores it).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(1, cases + 1):
        case = case_id(index)
        folder = root / case
        folder.mkdir(exist_ok=True)
        for kind, volume in _case(rng, shape).items():
            write_nifti(folder / f"{case}_{kind}.nii.gz", volume)
    (root / "name_mapping.csv").write_text("Grade,BraTS_2020_subject_ID\n")
    return root


def flip_case(root: Path, case: str, axes: tuple[int, ...]) -> None:
    """Rewrites every file of ``case`` under ``root`` with its voxels flipped along ``axes`` and
    its affine changed to match: the same images in world space, stored in another orientation.
    """
    for path in sorted((Path(root) / case).glob(f"{case}_*.nii.gz")):
        image = nibabel.load(path)
        data = np.asarray(image.dataobj)
        affine = np.array(image.affine, dtype=np.float64)
        for axis in axes:
            data = np.flip(data, axis)
            flip = np.eye(4)  # stored voxel i along ``axis`` is the old voxel n - 1 - i
            flip[axis, axis] = -1.0
            flip[axis, 3] = data.shape[axis] - 1
            affine = affine @ flip
        write_nifti(path, np.ascontiguousarray(data), affine)
