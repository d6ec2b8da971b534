"""Evaluation over every modality combination: per-combination scores and their average
(:mod:`~mce.evaluation.combinations`) and the classification metrics that are not accuracy
(:mod:`~mce.evaluation.metrics`).

It serves every task, so it never imports one: it may import the model, the data, the settings
and the process group (:mod:`mce.support.distributed`).
"""
