"""The metrics every evaluation reports, ``val/NAME`` (training's evaluations and ``rsb-composer eval``).

``registry`` holds the registry (EVAL_METRICS); each metric has its own module here that registers itself. Every
module of this package is imported here, so a new metric is one new file.
"""

import sys

from rsb_composer.config import import_submodules
from rsb_composer.eval_metrics.registry import EVAL_METRICS, EvalMetric, build_eval_metrics, val_keys

# The metric keys' published order: val/loss, val/acc1, val/acc5; the others by file name after them.
import_submodules(sys.modules[__name__], first=("cross_entropy", "accuracy"))

__all__ = ["EVAL_METRICS", "EvalMetric", "build_eval_metrics", "val_keys"]
