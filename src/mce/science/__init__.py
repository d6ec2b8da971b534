"""MCE's own science: coalition plans and Shapley values (:mod:`~mce.science.shapley`, Eqs.
4-5, exact or Monte Carlo through :mod:`~mce.science.sampling`), the LCE factors A and B
(:mod:`~mce.science.lce`, Eqs. 3 and 8) and the RCE losses (:mod:`~mce.science.rce`, Eqs.
10-16).

It sees rows of a batched forward and their utilities, never modules or data sets: it may
import the kernel ops (:mod:`mce.ops`) and the floor (:mod:`mce.support.bits`,
:mod:`mce.support.typing`), nothing of the model, the tasks or training.
"""
