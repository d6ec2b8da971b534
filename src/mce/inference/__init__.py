"""Inference on a trained run: :func:`load` a run's model, predict from any subset of
modalities, attribute each prediction to the modalities (:mod:`mce.inference.predictor`), and
the command ``python -m mce.predict`` (:mod:`mce.inference.cli`).

Inference sits above training: it reads what a run recorded (:mod:`mce.training.records`) and
uses the tasks, methods and model; nothing below it imports it.
"""

from mce.inference.predictor import WEIGHTS, Prediction, Predictor, load, save_model

__all__ = ["Prediction", "Predictor", "load", "save_model", "WEIGHTS"]
