"""Reports an evaluation can also write, by flag: ``train.py --eval-only --model-dir DIR --draw`` calls
``EVAL_REPORTS["draw"](trainer, out_dir)`` once the evaluation has recorded its result.

The runner names no package that makes reports. Such a package registers its reports when it is imported
(``analysis/draw.py`` registers ``draw_report`` as "draw"), and the command line that offers the flag imports that
package (``train.py`` imports ``analysis.draw``): the entry point puts the program together, so the layers below it
(runs, trainers, the engine) never import a higher one.
"""

EVAL_REPORTS = {}  # flag name -> report(trainer, out_dir) -> [paths written]


def register_eval_report(flag, report):
    """Offer ``report(trainer, out_dir)`` to evaluations run with ``--<flag>``; returns ``report``."""
    EVAL_REPORTS[flag] = report
    return report
