"""Training: the command line (:mod:`~mce.training.cli`), one run of a task with one or more
methods (:mod:`~mce.training.run`), the epoch loop (:mod:`~mce.training.trainer`), the frozen
unimodal models behind the upper bounds U (:mod:`~mce.training.pretrain`), the typed settings
(:mod:`~mce.training.config`) and what a run leaves behind: its folder, record, step logs and
activity log (:mod:`~mce.training.run_folder`, :mod:`~mce.training.records`,
:mod:`~mce.training.loggers`, :mod:`~mce.training.activity`).

Training may import everything below it (tasks, methods, evaluation, model, science, data,
support), never inference or the experiments; the settings (:mod:`~mce.training.config`) are
plain data that the tasks and evaluation read, and import nothing of tasks or methods.
"""
