"""The PyTorchJob pod command (scripts/kubernetes/train.sh) without a cluster: run as a pod runs it, with the
operator's variables, as the first process of its own PID namespace where this machine allows it, and stopped as
Kubernetes stops a pod. (The operator's variables mapped for a pod of one process: tests/test_launch.py.)"""

import os
import shutil
import signal
import subprocess
import time

import psutil
import pytest

from tests.helpers import REPO, RUN, free_port

POD_SCRIPT = REPO / "scripts" / "kubernetes" / "train.sh"


def _own_pid_namespace() -> list[str]:
    """`unshare` as a pod's runtime would start the command (PID 1 of a new PID namespace), where allowed."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return []
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return ["unshare", "--pid", "--fork", "--mount-proc"] if probe.returncode == 0 else []


@pytest.mark.slow
def test_the_pod_command_hands_sigterm_to_the_training_processes_which_save(reference, tmp_path):
    recipe, _, env = reference
    run_dir = tmp_path / "run"
    operator = {"RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "1",
                "KUBERNETES_SERVICE_HOST": "10.96.0.1"}  # one pod of two "GPUs"
    wrapper = _own_pid_namespace()
    pod = subprocess.Popen([*wrapper, "bash", str(POD_SCRIPT), "1", "2", str(recipe), *RUN, f"run_dir={run_dir}"],
                           env={**env, **operator}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "ep0-ba2-rank0.pt").exists():
        assert time.time() < deadline and pod.poll() is None, pod.stdout.read()[-4000:]
        time.sleep(0.1)
    first = psutil.Process(pod.pid).children()[0].pid if wrapper else pod.pid  # the pod's first process
    os.kill(first, signal.SIGTERM)  # what the kubelet sends when it stops the pod
    out, _ = pod.communicate(timeout=120)
    assert pod.returncode == 0, out[-4000:]
    assert "launch: composer, world size 2 (2 per node here, 1 node)" in out
    assert "SIGTERM: saved" in out  # the ranks agree every 10 batches: batch 10 of 12
    assert (run_dir / "checkpoints" / "ep2-ba10-rank0.pt").exists()


def test_the_pod_command_needs_the_operators_variables(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "MASTER_ADDR", "MASTER_PORT")}
    result = subprocess.run(["bash", str(POD_SCRIPT), "2", "8", "yamls/a2.yaml"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: RANK is not set: run this as the command of a PyTorchJob's pods "
                                     "(it sets it)")
