"""SLURM as the launcher, on a real one-node cluster started for this module (tests/slurm_cluster.py): `srun -n 2`
of the trainer forms one world of two ranks, a second srun finds the run complete, the shipped batch script runs
under `sbatch --wait` and requeues itself at the time-limit signal, and a batch script that forgets srun is told
so. Skipped, with the reason, where SLURM and munge are not installed (`apt-get install slurm-wlm munge`); the
environment mapping itself is tested everywhere (tests/test_launch.py)."""

import os
import re
import subprocess
import sys
import time

import pytest

from rsb_composer.slurm_lists import expand_hostlist
from tests.helpers import REPO, RUN, TRAIN_PY, finish, metrics_table, same_weights, wait_for
from tests.slurm_cluster import SlurmCluster, missing

SBATCH_SCRIPT = REPO / "scripts" / "slurm" / "train.sbatch"
# The shipped script asks for GPU nodes; the test cluster's one node has 4 CPUs and no GPU.
ON_THIS_CLUSTER = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1", "--time=20"]


@pytest.fixture(scope="module")
def slurm():
    why = missing()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster()
    cluster.start()
    yield cluster
    cluster.stop()


def _env(slurm, reference_env):
    """The reference run's environment, talking to the test cluster, with this interpreter first on PATH (the
    batch script runs `python`)."""
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{reference_env.get('PATH', '')}"
    return {**reference_env, **slurm.env, "PATH": path}


@pytest.mark.slow
def test_srun_two_tasks_train_one_run_like_composer_n2_and_the_sbatch_script_then_finds_it_complete(
        slurm, reference, tmp_path):
    recipe, ref_dir, env = reference
    env = _env(slurm, env)
    run_dir, output = tmp_path / "run", tmp_path / "slurm.out"
    args = [str(recipe), *RUN, f"run_dir={run_dir}", "checkpoints.save_interval=1ep"]  # last checkpoint: the end
    out = finish(subprocess.Popen(["srun", "-n", "2", sys.executable, str(TRAIN_PY), *args], env=env, cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    assert f"launch: slurm, world size 2 (2 per node here, 1 node), master {slurm.host}:" in out
    same_weights(run_dir, ref_dir)
    assert metrics_table(run_dir) == metrics_table(ref_dir)

    # The same run again, as the shipped batch script starts it: one world again, and nothing left to do.
    result = subprocess.run(["sbatch", "--wait", *ON_THIS_CLUSTER, f"--output={output}", str(SBATCH_SCRIPT), *args],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    log = output.read_text()
    assert result.returncode == 0, result.stderr + log[-4000:]
    assert "launch: slurm, world size 2" in log and "is already complete" in log
    assert metrics_table(run_dir) == metrics_table(ref_dir)


@pytest.mark.slow
def test_the_sbatch_script_saves_requeues_and_resumes_at_the_time_limit_signal(slurm, reference, tmp_path):
    recipe, ref_dir, env = reference
    run_dir, output = tmp_path / "run", tmp_path / "slurm.out"
    # Not `sbatch --wait`: it may return while a requeued job passes through its "requeued" state.
    job = subprocess.run(["sbatch", "--parsable", *ON_THIS_CLUSTER, f"--output={output}", str(SBATCH_SCRIPT),
                          str(recipe), *RUN, f"run_dir={run_dir}"], env=_env(slurm, env), cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.strip()
    deadline = time.time() + 300

    def state() -> str:
        assert time.time() < deadline, (output.read_text()[-4000:] if output.exists() else "", slurm.logs())
        time.sleep(0.2)
        return slurm.run("scontrol", "show", "job", job)

    while not (run_dir / "checkpoints" / "ep0-ba2-rank0.pt").exists():  # training, 10 batches to go
        job_state = re.search(r"JobState=(\S+)", info := state())
        # Before training: PENDING, then CONFIGURING (nodes being readied) or RUNNING; anything else ended the job.
        assert job_state and job_state.group(1) in ("PENDING", "CONFIGURING", "RUNNING"), (
            info, output.read_text()[-4000:] if output.exists() else "")
    slurm.run("scancel", "--batch", "--signal=USR1", job)  # what `--signal=B:USR1@120` sends near the time limit
    while "Restarts=1" not in (info := state()) or "JobState=PENDING" not in info:  # saved, stopped, requeued
        pass
    # SLURM holds a requeued job back two minutes before it may start again; let this one start sooner, but not
    # within the second slurmd revoked the killed start's credential: revocation is kept in whole seconds, and a
    # new credential of the same job from that second is refused ("Job N already killed, do not launch batch job").
    # slurmd revokes it first thing when told to end the start, and the node is idle once that has finished; the
    # wait after that is for the clock to leave that whole second.
    wait_for(slurm.node_idle, 120, "the node to be idle after the requeue")
    revoked_by = int(time.time())
    wait_for(lambda: int(time.time()) > revoked_by, 5, "the clock's next whole second")
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    while "JobState=COMPLETED" not in (info := state()):
        assert "JobState=FAILED" not in info and "JobState=CANCELLED" not in info, (
            info, output.read_text()[-4000:], slurm.logs())
    log = output.read_text()
    assert "ExitCode=0:0" in info, log[-4000:]
    assert "SIGTERM: saved" in log and f"requeueing job {job}" in log
    same_weights(run_dir, ref_dir)  # resumed in the requeued job from the checkpoint saved at the signal
    assert metrics_table(run_dir) == metrics_table(ref_dir)


@pytest.mark.slow
def test_a_batch_script_that_runs_the_trainer_without_srun_is_told_in_one_line(slurm, write_recipe, tmp_path,
                                                                               subprocess_env):
    output = tmp_path / "slurm.out"
    result = subprocess.run(["sbatch", "--wait", "-n", "2", f"--output={output}", "--wrap",
                             f"{sys.executable} {TRAIN_PY} {write_recipe()} run_dir={tmp_path / 'run'}"],
                            env=_env(slurm, subprocess_env), cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    lines = output.read_text().strip().splitlines()
    assert lines[-1].startswith("error: SLURM_NTASKS=2 but this process was not started by srun"), lines[-5:]


def test_host_lists_expand_as_scontrol_does(slurm):
    hostlist = "gpu-[01-04,07],login1,rack[1-2]-n[08-10]"
    assert expand_hostlist(hostlist) == slurm.run("scontrol", "show", "hostnames", hostlist).split()


@pytest.mark.slow
def test_the_sbatch_script_gives_each_task_the_cpus_the_job_asked_for(slurm, write_recipe, tmp_path, subprocess_env):
    """SLURM 22.05 to 23.02's srun does not take sbatch's --cpus-per-task (it reads SRUN_CPUS_PER_TASK, not
    SLURM_CPUS_PER_TASK): with task/affinity each task, its data workers included, was then bound to one CPU. This
    cluster's SLURM (Debian's 22.05.8) happens to pass it on anyway, so the test checks what the srun step received
    (a `python` first on PATH notes the step's environment, then runs the real one) as well as the binding the
    training process reports (its affinity mask, under task/affinity as on real clusters)."""
    assert slurm.task_plugin == "task/affinity" and slurm.cpus >= 2, "needs a bound cluster of 2 or more CPUs"
    probe, bin_dir = tmp_path / "step.env", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/bash\necho "SRUN_CPUS_PER_TASK=${{SRUN_CPUS_PER_TASK:-unset}}" >> '
                                     f'{probe}\nexec {sys.executable} "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env = _env(slurm, subprocess_env)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    output, asked = tmp_path / "slurm.out", slurm.cpus
    result = subprocess.run(["sbatch", "--wait", "--nodes=1", "--ntasks-per-node=1", "--gpus-per-node=0",
                             f"--cpus-per-task={asked}", "--time=20", f"--output={output}", str(SBATCH_SCRIPT),
                             str(write_recipe()), f"run_dir={tmp_path / 'run'}", "max_duration=1ba",
                             "data.num_workers=1"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    log = output.read_text()
    assert result.returncode == 0, result.stderr + log[-4000:]
    assert probe.read_text().split() == [f"SRUN_CPUS_PER_TASK={asked}"]  # srun was given the job's CPUs per task
    assert f"CPUs: {asked} usable by this process (its affinity mask) for it and data.num_workers=1" in log, log[-3000:]
    assert "share them" not in log
