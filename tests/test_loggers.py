"""The trackers: W&B offline by itself, TensorBoard and MLflow read back with their own clients across a
resume, an unreachable MLflow server, a tracker without its package, the terminal's start-up summary and bar."""

import csv
import dataclasses
import io
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

import rsb_composer.loggers.trackers as trackers
import rsb_composer.loggers.wandb_run as wandb_run
from rsb_composer import train
from rsb_composer.config import ConfigError, load_config
from rsb_composer.data.batching import BatchGeometry
from rsb_composer.loggers import TRACKERS, Start, check_loggers, startup_lines
from rsb_composer.loggers.hparams import flat_hyperparameters
from rsb_composer.loggers.mlflow_run import MlflowOptions, build_mlflow, continue_or_create_run, local_store
from rsb_composer.loggers.progress_bar import MetricsProgressBar
from rsb_composer.loggers.wandb_run import wandb_offline_reason
from rsb_composer.run_folder import GPU_ONLY_KEYS, METRIC_KEYS, RunFolder
from tests.helpers import free_port

CPU_KEYS = set(METRIC_KEYS) - set(GPU_ONLY_KEYS)


class _Connection:
    def close(self) -> None:
        pass


def test_wandb_goes_offline_without_a_key_or_when_told(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline_reason() == "WANDB_MODE=offline"
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_offline_reason() == "no W&B API key (set WANDB_API_KEY or run `wandb login`)"


@pytest.mark.parametrize("reachable", [False, True])
def test_with_a_key_the_route_to_wandb_decides(tmp_path, monkeypatch, reachable):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    asked = []

    def connect(address, timeout):
        asked.append((address, timeout))
        if not reachable:
            raise OSError("Network is unreachable")
        return _Connection()

    monkeypatch.setattr(wandb_run.socket, "create_connection", connect)
    assert wandb_offline_reason() == (None if reachable else "api.wandb.ai is unreachable")
    assert asked == [(("api.wandb.ai", 443), 3)]  # one short probe, never a wait on a login


def test_the_checked_section_lists_every_tracker_with_its_defaults(write_recipe):
    config = load_config(write_recipe(), ["loggers.wandb.tags=[ci, 8gpu]", "loggers.mlflow={experiment: 5}"])
    check_loggers(config.loggers)
    assert config.to_dict()["loggers"] == {  # config.yaml's shape: every tracker, null when off
        "wandb": {"project": None, "name": None, "entity": None, "group": None, "tags": ["ci", "8gpu"]},
        "tensorboard": None,
        "mlflow": {"tracking_uri": None, "experiment": "5", "run_name": None},
    }
    assert list(config.loggers) == list(TRACKERS) == ["wandb", "tensorboard", "mlflow"]


@pytest.mark.parametrize(("override", "message"), [
    ("loggers.wandbb.project=x", "unknown config key 'loggers.wandbb'; did you mean 'loggers.wandb'?"),
    ("loggers.wandb.projet=x", "unknown config key 'loggers.wandb.projet'; did you mean 'loggers.wandb.project'?"),
    ("loggers.mlflow=5", "loggers.mlflow must be a mapping of keys, got 5"),
    ("loggers.wandb.tags=true", "loggers.wandb.tags must be a list"),
])
def test_a_wrong_tracker_key_or_value_is_one_line_naming_it(write_recipe, override, message):
    config = load_config(write_recipe(), [override])
    with pytest.raises(ConfigError) as err:
        check_loggers(config.loggers)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("name, extra", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_tracker_without_its_package_is_refused_naming_the_extra(write_recipe, monkeypatch, name, extra):
    config = load_config(write_recipe(), [f"loggers.{name}={{}}"])
    check_loggers(config.loggers)  # installed here ([dev] includes both extras)
    missing = name  # each tracker's package has the tracker's name
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda mod: None if mod == missing else real(mod))
    with pytest.raises(ConfigError) as err:
        check_loggers(config.loggers)
    assert str(err.value) == (f"loggers.{name} is on but the {missing} package is not installed: "
                              f'pip install -e ".[{extra}]" (or set loggers.{name}=null)')


def test_the_resolved_config_as_flat_hyper_parameters():
    flat = flat_hyperparameters({"seed": 3, "data": {"batch_size": 8, "crop_scale": [0.08, 1.0], "path": None},
                                 "algorithms": {"channels_last": {}, "mixup": {"alpha": 0.2}}})
    assert flat == {"seed": 3, "data.batch_size": 8, "data.crop_scale": "[0.08, 1.0]", "data.path": None,
                    "algorithms.channels_last": "{}", "algorithms.mixup.alpha": 0.2}


def _mlflow_sets_its_variables_in_the_process(monkeypatch):
    """MLflow (through Composer's logger) sets these in os.environ; take them away again after the test."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"):
        monkeypatch.delenv(name, raising=False)


def test_an_unreachable_mlflow_server_means_one_warning_and_the_local_store(tmp_path, caplog, monkeypatch):
    _mlflow_sets_its_variables_in_the_process(monkeypatch)
    run = RunFolder(tmp_path / "run")
    run.create()
    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with caplog.at_level(logging.WARNING):
        logger, where = build_mlflow(MlflowOptions(tracking_uri=server), run, "tiny", {"seed": 1})
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "is unreachable" in warnings[0] and "logging to the local store" in warnings[0]
    assert logger.tracking_uri == local_store(run) and where.endswith(f"at {local_store(run)}")
    run_id = logger.continue_run_id
    assert run.mlflow_run_ids.read_text() == f"{run_id} {local_store(run)}\n"
    # The next start (server still away) continues the same local run.
    assert continue_or_create_run(local_store(run), "rsb-composer", "tiny", run) == run_id


def test_the_progress_bar_shows_images_per_second_and_no_hyper_parameter_dump():
    bar = MetricsProgressBar()
    bar.stream = io.StringIO()
    bar.log_hyperparameters({"composer_commit_hash": None, "node_name": "unknown"})
    bar.fit_start(None, None)
    assert bar.stream.getvalue() == ""  # Composer would print the dump and a row of stars here
    shown = []
    bar.train_pbar = SimpleNamespace(keys_to_log=[], log_data=shown.append)
    bar.log_metrics({"throughput/samples_per_sec": 1234.6, "loss/train/total": 0.5})
    assert shown == [{"train/loss": 0.5, "images/s": 1235}]
    assert bar.train_pbar.keys_to_log == ["train/loss", "images/s", "val/acc1"]


def test_the_start_up_summary_says_what_runs_where(tmp_path):
    start = Start(recipe="yamls/a2.yaml", run_dir=Path("runs/a2"), resumed_from=None, epoch=0, batch=0,
                  max_duration="300ep", world_size=16, nodes=2, device="gpu", precision="amp_fp16",
                  batching=BatchGeometry(world_size=16, per_device=128, microbatch_size=64, eval_batch_size=64,
                                         global_fixed=True).describe(),
                  global_batch=2048, lr=0.005, base_lr=0.005, reference_batch=2048,
                  algorithms={"channels_last": {}, "mixup": {"alpha": 0.1}, "stochastic_depth": None},
                  trackers={"TensorBoard": "runs/a2/tensorboard"})
    lines = startup_lines(start)
    assert lines[0] == "recipe yamls/a2.yaml -> runs/a2: new run, to 300ep"
    assert lines[1] == "world: 16 processes on 2 nodes, gpu, amp_fp16"
    assert lines[2] == ("global batch 2048 (128 per device x 16 devices, 2 microbatches of 64): LR 0.005 = 0.005 x "
                        "2048 / 2048")
    assert lines[3] == "algorithms: channels_last, mixup(alpha=0.1)"
    assert lines[-1] == "TensorBoard: runs/a2/tensorboard"
    resumed = dataclasses.replace(start, resumed_from=Path("runs/a2/checkpoints/ep7-ba4375-rank0.pt"), epoch=7,
                                  batch=4375)
    assert "resuming from ep7-ba4375-rank0.pt (epoch 7, batch 4375)" in startup_lines(resumed)[0]


def _scalars(folder: Path) -> dict[str, list[int]]:
    """Steps of each scalar in TensorBoard's event files, as TensorBoard itself reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_tensorboard_and_mlflow_hold_every_key_across_a_resume(write_recipe, tmp_path, monkeypatch, caplog):
    from mlflow import MlflowClient

    _mlflow_sets_its_variables_in_the_process(monkeypatch)
    monkeypatch.chdir(tmp_path)
    recipe = str(write_recipe())
    on = ["loggers.tensorboard={}", "loggers.mlflow={}"]
    with caplog.at_level(logging.INFO):
        assert train.main([recipe, *on]) == 0  # 2 epochs of 8 steps
        assert train.main([recipe, *on, "max_duration=3ep"]) == 0
    run = RunFolder(tmp_path / "runs" / "tiny")
    start_lines = [r.getMessage() for r in caplog.records if r.name == "rsb_composer.train"]
    assert any("tiny.yaml -> runs/tiny: new run, to 2ep" in line for line in start_lines)
    assert any("resuming from ep2-ba16-rank0.pt (epoch 2, batch 16), to 3ep" in line for line in start_lines)
    assert any(line.startswith("TensorBoard: runs/tiny/tensorboard") for line in start_lines)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams_run = EventAccumulator(str(run.tensorboard / "tiny" / "tiny"))  # Composer's HParams tab
    hparams_run.Reload()
    session = plugin_data_pb2.HParamsPluginData.FromString(
        hparams_run.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["data.batch_size"].string_value == "8"  # the resolved config

    steps = _scalars(run.tensorboard / "tiny")
    assert set(steps) >= CPU_KEYS
    assert steps["val/acc1"] == [8, 16, 24]
    assert steps["train/lr"] == list(range(24))  # the resumed launch continues the axis, no step twice

    client = MlflowClient(local_store(run))
    experiment = client.get_experiment_by_name("rsb-composer")
    (only,) = client.search_runs([experiment.experiment_id])  # the resume continued the first run
    assert only.info.status == "FINISHED"
    assert set(only.data.metrics) >= CPU_KEYS
    assert [m.step for m in client.get_metric_history(only.info.run_id, "val/acc1")] == [8, 16, 24]
    assert only.data.params["data.batch_size"] == "8" and only.data.params["loggers.tensorboard"] == "{}"
    assert only.data.params["max_duration"] == "2ep"  # MLflow keeps the first start's parameters

    with open(run.metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for row in rows:
        assert float(row["perf/images_per_sec"]) > 0 and 0 <= float(row["perf/data_wait"]) <= 1
        assert row["perf/gpu_mem_peak_gib"] == ""  # a CPU run
        mlflow_wait = [m for m in client.get_metric_history(only.info.run_id, "perf/data_wait")]
    assert [round(m.value, 5) for m in mlflow_wait] == [round(float(r["perf/data_wait"]), 5) for r in rows]
