"""BraTS2020 (Section 4.1, Tables 1 and 4): brain-tumour segmentation from T1, T1c, FLAIR, T2.

``--data-dir`` is the official training folder (``BraTS20_Training_XXX/...nii.gz``, see
:mod:`mce.data.brats`). Every case is preprocessed once into a cache
(``$XDG_CACHE_HOME/mce/brats/<folder hash>``, or ``~/.cache``), and the paper's 219/50/100
train/validation/test split is drawn with seed 0 and saved there as ``split.json`` (reused while
the folder holds the same cases). The three splits are held in memory as float16, padded with
background to each split's largest brain crop (about 36 MB a case: some 13 GB for all 369).

Recipe: a 3D U-Net encoder per modality (mmFormer's: 5 levels from 8 channels, an intra-modal
Transformer at the bottleneck), the reconstruction Transformer on the bottleneck voxels, an
mmFormer fusion (inter-modal Transformer, per-scale fusion of the present modalities' skips), a
U-Net decoder. Unimodal heads (L_single) are light by default: per level a 1x1x1 conv to the
class logits, upsampled and summed, a read-out of what each encoder holds; ``head=decoder``
gives mmFormer's ``Decoder_sep`` instead, one shared U-Net decoder run on each modality's
features, at four decoder passes a sample (on the CPU at 32^3 it took 1.0 s of a 1.7 s MCE
step). The upper bounds U_m come from a separate 3D U-Net per sequence (encoder + decoder),
scored on every training step's own crop (:class:`mce.training.pretrain.BatchUpperBounds`). Loss:
cross-entropy + soft Dice per sample; utility: mean Dice over WT, TC and ET of the argmax, per
row. Training: random 80^3 crops, half of them centred on tumour; AdamW 2e-4 (weight decay
1e-4), poly decay 0.9, batch 1, 400 epochs (Table 1).
Evaluation: a sliding window (80^3, overlap 0.5) over whole volumes; Dice WT, TC, ET and
post-processed ET for each of the 15 combinations and averaged.

Missing rates are given per modality in the order (t1, t1ce, flair, t2). The presets a-f are
the paper's settings over (T1/T1c, FLAIR, T2), T1 and T1c sharing a rate: ``a`` = (0.2, 0.5, 0.8)
gives (0.2, 0.2, 0.5, 0.8); the default is Fig. 9's (0.8, 0.5, 0.2).

Options (``--task-option NAME=VALUE``, :class:`BratsOptions`): ``crop`` (80; the training
crop and window side, a multiple of 2^(levels-1)), ``base`` (8; channels of the first level),
``levels`` (5), ``head`` (light or decoder). Smaller values give a quick model for smoke tests
and CPU runs, e.g. ``crop=32 base=4 levels=4``.

Modules: :mod:`~mce.tasks.brats.options` (the options), :mod:`~mce.tasks.brats.data` (the
cache and the splits), :mod:`~mce.tasks.brats.model` (the networks),
:mod:`~mce.tasks.brats.evaluator` (whole-volume inference and evaluation),
:mod:`~mce.tasks.brats.recipe` (the task and its presets). The loss, utility, crops and sliding
window are :mod:`mce.tasks.brats.segmentation`'s.
"""

from mce.tasks.brats.data import SPLIT_SEED, cache_dir_for, load
from mce.tasks.brats.evaluator import BratsEvaluator
from mce.tasks.brats.model import NUM_CLASSES, ROW_MEMORY_GB, build_model, build_unimodal
from mce.tasks.brats.options import HEADS, BratsOptions
from mce.tasks.brats.recipe import OPTIONS, PRESETS, TASK, brats_task

__all__ = [
    "TASK",
    "PRESETS",
    "OPTIONS",
    "BratsOptions",
    "BratsEvaluator",
    "brats_task",
    "build_model",
    "build_unimodal",
    "load",
    "cache_dir_for",
    "HEADS",
    "NUM_CLASSES",
    "ROW_MEMORY_GB",
    "SPLIT_SEED",
]
