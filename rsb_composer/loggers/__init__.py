"""Where a run reports: metrics.csv and plots in the run folder, the progress bar and start-up summary on the
terminal, and the tracking services a recipe switches on (W&B, TensorBoard, MLflow).

``trackers`` holds the registry and builds the destinations; each service has its own module (``wandb_run``,
``tensorboard_events``, ``mlflow_run``), named so that none shadows the service's own package.
"""

from rsb_composer.loggers.startup import Start, startup_lines
from rsb_composer.loggers.trackers import TRACKERS, RunLoggers, build_loggers, check_loggers

__all__ = ["TRACKERS", "RunLoggers", "Start", "build_loggers", "check_loggers", "startup_lines"]
