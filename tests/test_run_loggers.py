"""W&B goes offline by itself (never a login prompt, never a wait) and says why."""

import pytest

import rsb_composer.run_loggers as run_loggers
from rsb_composer.run_loggers import wandb_offline_reason


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

    monkeypatch.setattr(run_loggers.socket, "create_connection", connect)
    assert wandb_offline_reason() == (None if reachable else "api.wandb.ai is unreachable")
    assert asked == [(("api.wandb.ai", 443), 3)]  # one short probe, never a wait on a login
