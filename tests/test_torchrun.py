"""torchrun as the launcher: one node with two workers (preempted, resumed, then found complete) and two nodes on
loopback, static and with the c10d rendezvous, each ending with exactly the weights and metrics of `composer -n 2`
(the session's `reference` run, tests/conftest.py)."""

import signal
import subprocess
import sys

import pytest

from tests.helpers import RUN, TRAIN_PY, finish, free_port, metrics_table, same_weights, wait_for

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # the `torchrun` command of this interpreter


def _torchrun(launcher_args, recipe, run_dir, env, cwd, extra=()):
    return subprocess.Popen([*TORCHRUN, *launcher_args, str(TRAIN_PY), str(recipe), *RUN, f"run_dir={run_dir}",
                             *extra], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_torchrun_two_workers_preempted_resume_like_composer_n2_and_a_rerun_finds_the_run_complete(reference,
                                                                                                    tmp_path):
    recipe, ref_dir, env = reference
    run_dir = tmp_path / "run"
    one_node = ["--nproc_per_node", "2", "--master_port", str(free_port())]
    # Checkpoints at epoch ends only: the one in the middle of epoch 3 is the preemption's.
    extra = ["checkpoints.save_interval=1ep"]
    agent = _torchrun(one_node, recipe, run_dir, env, tmp_path, extra)
    wait_for((run_dir / "checkpoints" / "ep1-ba4-rank0.pt").exists, 240, "epoch 1's checkpoint", agent)
    agent.send_signal(signal.SIGTERM)  # as a scheduler stops a job: to the launcher, which passes it on
    out, _ = agent.communicate(timeout=120)
    assert "launch: torchrun, world size 2 (2 per node here, 1 node)" in out
    assert "SIGTERM: saved" in out, out[-4000:]  # the ranks agree every 10 batches: batch 10 of 12
    assert (run_dir / "checkpoints" / "ep2-ba10-rank0.pt").exists()
    assert not (run_dir / "checkpoints" / "ep3-ba12-rank0.pt").exists()

    finish(_torchrun(one_node, recipe, run_dir, env, tmp_path, extra))
    same_weights(run_dir, ref_dir)
    assert metrics_table(run_dir) == metrics_table(ref_dir)

    again = finish(_torchrun(one_node, recipe, run_dir, env, tmp_path, extra))
    assert "is already complete" in again
    assert metrics_table(run_dir) == metrics_table(ref_dir)


@pytest.mark.slow
@pytest.mark.parametrize("rendezvous", ["static", "c10d"])
def test_two_torchrun_nodes_on_loopback_train_one_run_like_composer_n2(reference, tmp_path, rendezvous):
    recipe, ref_dir, env = reference
    run_dir = tmp_path / "run"
    port = str(free_port())
    if rendezvous == "static":  # torchrun --nnodes 2 --node_rank K --master_addr A --master_port P on each node
        nodes = [["--nnodes", "2", "--node_rank", str(k), "--master_addr", "127.0.0.1", "--master_port", port]
                 for k in (0, 1)]
    else:  # the same command on every node; the rendezvous numbers the nodes
        nodes = [["--nnodes", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                  "--rdzv_id", "rsb-test"]] * 2
    agents = [_torchrun([*args, "--nproc_per_node", "1"], recipe, run_dir, env, tmp_path) for args in nodes]
    outs = [finish(agent) for agent in agents]
    assert any("launch: torchrun, world size 2 (1 per node here, 2 nodes)" in out for out in outs)
    same_weights(run_dir, ref_dir)
    assert metrics_table(run_dir) == metrics_table(ref_dir)
