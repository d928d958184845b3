"""Where a run reports: metrics.csv and plots in the run folder, the progress bar and start-up summary on the
terminal, and the tracking services a recipe switches on (W&B, TensorBoard, MLflow, ...).

``trackers`` holds the registry (TRACKERS) and builds the destinations; each service has its own module
(``wandb_run``, ``tensorboard_events``, ``mlflow_run``, named so that none shadows the service's own package) that
registers itself. Every module of this package is imported here, so a new tracker is one new file.
"""

import sys

from rsb_composer.config import import_submodules
from rsb_composer.loggers.startup import Start, startup_lines
from rsb_composer.loggers.trackers import TRACKERS, RunLoggers, build_loggers, check_loggers

# The built-in trackers first, in the order config.yaml and preflight list them; the others by file name.
import_submodules(sys.modules[__name__], first=("wandb_run", "tensorboard_events", "mlflow_run"))

__all__ = ["TRACKERS", "RunLoggers", "Start", "build_loggers", "check_loggers", "startup_lines"]
