"""MLflow, through Composer's MLFlowLogger.

The tracking store is ``loggers.mlflow.tracking_uri``, else a file store in ``run_dir/mlruns``, which needs no
server (``$MLFLOW_TRACKING_URI`` is not read: MLflow sets it in the process, where it would outlive the run). A
server that cannot be reached (or refuses the run) never stops or stalls training: one warning line, and the run
logs to ``run_dir/mlruns`` instead. The MLflow run id is kept in
the run folder, one per store, so an autoresumed run continues the same MLflow run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composer.core import State
from composer.loggers import Logger, MLFlowLogger
from composer.utils import dist

from rsb_composer.config import OK, WARN, Config, PreflightCheck
from rsb_composer.loggers.hparams import flat_hyperparameters
from rsb_composer.loggers.trackers import TRACKERS, Tracker, needs_package
from rsb_composer.run_folder import RunFolder

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "rsb-composer"
RUN_ID_VARIABLE = "MLFLOW_RUN_ID"  # Composer's MLFlowLogger starts the run this names (mlflow's own variable)


@dataclass
class MlflowOptions:
    """``loggers.mlflow``."""

    tracking_uri: str | None = None  # http(s)://server:port, databricks, ...; default: a file store in run_dir/mlruns
    experiment: str | None = None  # default: rsb-composer
    run_name: str | None = None  # default: run_name


def tracking_uri(cfg: MlflowOptions, run: RunFolder) -> str:
    return cfg.tracking_uri or local_store(run)


def local_store(run: RunFolder) -> str:
    return run.mlruns.resolve().as_uri()


def unreachable_reason(uri: str) -> str | None:
    """Why an http(s) tracking server cannot be reached (one short probe, never MLflow's minutes of retries);
    None when it can, or when the store is not a server."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=3).close()
    except OSError as err:
        return f"{parsed.hostname}:{port} is unreachable ({err.strerror or err})"
    return None


def stored_run_id(run: RunFolder, uri: str) -> str | None:
    if run.mlflow_run_ids.is_file():
        for line in run.mlflow_run_ids.read_text().splitlines():
            run_id, _, store = line.partition(" ")
            if store == uri:
                return run_id
    return None


def store_run_id(run: RunFolder, uri: str, run_id: str) -> None:
    lines = run.mlflow_run_ids.read_text().splitlines() if run.mlflow_run_ids.is_file() else []
    lines = [line for line in lines if line.partition(" ")[2] != uri] + [f"{run_id} {uri}"]
    run.mlflow_run_ids.write_text("\n".join(lines) + "\n")


def continue_or_create_run(uri: str, experiment: str, run_name: str, run: RunFolder) -> str:
    """The id of this run folder's MLflow run in the store at ``uri``: the one kept from an earlier start when
    the store still has it (in ``experiment``), else a new one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    kept = stored_run_id(run, uri)
    if kept is not None:
        try:
            info = client.get_run(kept).info
            if info.experiment_id == experiment_id and info.lifecycle_stage == "active":
                return kept
        except MlflowException:
            pass
        log.warning("MLflow: run %s is not in experiment %s at %s any more; starting a new MLflow run", kept,
                    experiment, uri)
    run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
    store_run_id(run, uri, run_id)
    return run_id


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    saved = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


class RunFolderMLFlowLogger(MLFlowLogger):
    """Composer's MLFlowLogger, starting the MLflow run chosen by :func:`continue_or_create_run`.

    MLflow parameters cannot change once logged; a resume that changed a value (a longer ``max_duration``, another
    node's name) keeps the first start's value in MLflow, says so in the log, and goes on (MLflow would refuse the
    whole batch of parameters). The run folder's config.yaml always holds the current values.
    """

    def __init__(self, run_id: str | None, params: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.continue_run_id = run_id
        self.config_params = params  # logged once the run has started (MLflow would start a run of its own)
        self._params: dict[str, str] = {}

    def init(self, state: State, logger: Logger) -> None:
        with _environment(RUN_ID_VARIABLE, self.continue_run_id):
            super().init(state, logger)
        if self._enabled:
            assert self._run_id is not None
            self._params = dict(self._mlflow_client.get_run(self._run_id).data.params)
        self.log_hyperparameters(self.config_params)

    def log_hyperparameters(self, hyperparameters: dict[str, Any]) -> None:
        new = {}
        for key, value in hyperparameters.items():
            kept = self._params.get(key)
            if kept is None:
                new[key] = value
                self._params[key] = str(value)
            elif kept != str(value) and self._enabled:
                log.info("MLflow: parameter %s stays %r from the run's first start (now %r)", key, kept, str(value))
        if new:
            super().log_hyperparameters(new)


def build_mlflow(cfg: MlflowOptions, run: RunFolder, run_name: str,
                 resolved: dict[str, Any]) -> tuple[MLFlowLogger, str]:
    """The logger and where it writes; ``resolved`` (the resolved config) becomes its parameters."""
    from mlflow.exceptions import MlflowException
    from requests import RequestException

    uri = tracking_uri(cfg, run)
    experiment = cfg.experiment or DEFAULT_EXPERIMENT
    name = cfg.run_name or run_name
    run_id = None
    if dist.get_global_rank() == 0:  # the others log nothing (rank_zero_only)
        reason = unreachable_reason(uri)
        if reason is None:
            try:
                run_id = continue_or_create_run(uri, experiment, name, run)
            except (MlflowException, RequestException, OSError) as err:
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if reason is not None:
            log.warning("MLflow: %s; logging to the local store %s instead (browse it with `mlflow ui "
                        "--backend-store-uri %s`)", reason, run.mlruns, run.mlruns)
            uri = local_store(run)
            run_id = continue_or_create_run(uri, experiment, name, run)
    logger = RunFolderMLFlowLogger(
        run_id, flat_hyperparameters(resolved), experiment_name=experiment, run_name=name, tracking_uri=uri,
        # The same keys as every destination: no system/* metrics of MLflow's own sampling thread.
        log_system_metrics=False,
        # Composer drops a value equal to the key's previous one within this many steps: a val/acc1 that repeats
        # from one epoch to the next would go missing.
        log_duplicated_metric_every_n_steps=0,
    )
    return logger, f"run {run_id} in experiment {experiment} at {uri}"


def preflight_mlflow(cfg: MlflowOptions | None, config: Config) -> PreflightCheck:
    """Where MLflow will log: the tracking server, or the local store when the server cannot be reached."""
    if cfg is None:
        return PreflightCheck(OK, "MLflow", "off (add 'loggers.mlflow={}' to log to MLflow)")
    run = RunFolder(Path(config.run_dir or "."))
    uri = tracking_uri(cfg, run)
    reason = unreachable_reason(uri)
    if reason is None:
        return PreflightCheck(OK, "MLflow", f"logging to {uri}")
    return PreflightCheck(WARN, "MLflow", f"{reason}: the run will log to {run.mlruns} instead")


TRACKERS.add(
    "mlflow", Tracker("MLflow", MlflowOptions, build_mlflow),
    doc="MLflow (``loggers.mlflow.{tracking_uri,experiment,run_name}``, the [mlflow] extra): every metric key and "
        "the resolved config as parameters, on a tracking server or a file store in run_dir/mlruns; a server that "
        "cannot be reached means one warning and the local store, and an autoresumed run continues its MLflow run.",
    check=needs_package("mlflow", "mlflow", "mlflow"),
    preflight=preflight_mlflow,
)
