"""What every part may use: atomic checkpoints and files (:mod:`~mce.support.checkpoint`),
seeding (:mod:`~mce.support.seeding`), the torchrun process group
(:mod:`~mce.support.distributed`), optional extras (:mod:`~mce.support.optional`), the version
(:mod:`~mce.support.version`) and the floor: bitmask helpers and the Shapley weight
(:mod:`~mce.support.bits`), tensor aliases (:mod:`~mce.support.typing`), the BEV grid
(:mod:`~mce.support.grid`).

Its modules are leaves: they import nothing of ``mce`` outside this package, and the floor
(bits, typing, grid) nothing at all. The one exception, :mod:`~mce.support.moved`, keeps the old
top-level import paths of the modules that moved into packages working for one release: it
imports a moved module when an old path is read.
"""
