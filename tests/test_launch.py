"""The launcher environment: what each launcher sets, what rsb_composer.launch completes for Composer, and the
launch mistakes refused in one line. The mapping is tested on environments alone, so it runs everywhere; the real
launchers run in tests/test_torchrun.py and tests/test_slurm.py."""

import sys

import pytest

from rsb_composer import launch, train
from rsb_composer.launch import LaunchError, detect, prepare
from rsb_composer.slurm_lists import SlurmListError, expand_hostlist, tasks_per_node
from tests.helpers import REPO, TRAIN_PY, free_port, run

# What `srun -N 2 --ntasks-per-node 4` gives task 6 (measured on the test cluster for one node; the variables
# are SLURM's, the values of a second node as SLURM numbers them).
SLURM_TASK_6 = {
    "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "6", "SLURM_LOCALID": "2", "SLURM_NODEID": "1",
    "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_NNODES": "2",
    "SLURM_STEP_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu-[07-08]", "SLURM_STEP_NODELIST": "gpu-[07-08]",
}
TORCHRUN = {  # torchrun --nnodes 2 --nproc_per_node 2, second node, second worker
    "TORCHELASTIC_RUN_ID": "none", "GROUP_RANK": "1", "GROUP_WORLD_SIZE": "2", "RANK": "3", "LOCAL_RANK": "1",
    "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "ROLE_RANK": "3", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500",
}
COMPOSER = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "0",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "12355"}
PYTORCHJOB_WORKER_2 = {  # the training operator's variables in the pod of worker 2 (rank 3 of 4 pods)
    "KUBERNETES_SERVICE_HOST": "10.96.0.1", "MASTER_ADDR": "rsb-master-0", "MASTER_PORT": "23456",
    "WORLD_SIZE": "4", "RANK": "3", "PYTHONUNBUFFERED": "0",
}


def test_slurm_one_task_per_device_becomes_composers_environment():
    found = detect(SLURM_TASK_6)
    assert found.launcher == "slurm"
    port = str(launch.slurm_port(SLURM_TASK_6))
    assert found.added == {"RANK": "6", "WORLD_SIZE": "8", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4",
                           "NODE_RANK": "1", "MASTER_ADDR": "gpu-07", "MASTER_PORT": port}
    assert found.nodes == 2
    assert found.summary() == f"launch: slurm, world size 8 (4 per node here, 2 nodes), master gpu-07:{port}"


def test_slurm_keeps_a_master_address_and_port_given_by_hand():
    found = detect({**SLURM_TASK_6, "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "29400"})
    assert "MASTER_ADDR" not in found.added and found.master == "10.1.2.3:29400"


def test_slurm_port_is_one_per_step_and_shared_by_its_tasks():
    ports = {launch.slurm_port({**SLURM_TASK_6, "SLURM_PROCID": str(r)}) for r in range(8)}
    assert len(ports) == 1 and 10000 <= ports.pop() < 30000
    assert launch.slurm_port(SLURM_TASK_6) != launch.slurm_port({**SLURM_TASK_6, "SLURM_STEP_ID": "1"})


def test_slurm_uneven_nodes_take_each_nodes_own_task_count():
    env = {**SLURM_TASK_6, "SLURM_STEP_TASKS_PER_NODE": "5,3", "SLURM_PROCID": "6", "SLURM_LOCALID": "1"}
    assert detect(env).added["LOCAL_WORLD_SIZE"] == "3"


def test_slurm_step_counts_win_over_the_batch_scripts_stale_ones():
    # sbatch --ntasks-per-node=4, then `srun -n 2`: SLURM_NTASKS_PER_NODE still says 4 inside the step.
    env = {**SLURM_TASK_6, "SLURM_NTASKS_PER_NODE": "4", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2",
           "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0",
           "SLURM_STEP_NODELIST": "gpu-07"}
    assert detect(env).added["LOCAL_WORLD_SIZE"] == "2" and detect(env).added["WORLD_SIZE"] == "2"


@pytest.mark.parametrize("change, words", [
    ({"SLURM_NTASKS": "16"}, "SLURM_NTASKS=16 does not match the 8 tasks srun started"),
    ({"SLURM_STEP_TASKS_PER_NODE": "4"}, "does not describe the 8 tasks"),
    ({"SLURM_PROCID": "9"}, "SLURM_PROCID=9"),
])
def test_slurm_counts_that_disagree_are_refused_in_one_line(change, words):
    with pytest.raises(LaunchError, match=words) as err:
        detect({**SLURM_TASK_6, **change})
    assert "\n" not in str(err.value)


def test_the_batch_script_itself_is_not_a_world_of_ntasks():
    batch = {k: v for k, v in SLURM_TASK_6.items() if not k.startswith("SLURM_STEP")}
    with pytest.raises(LaunchError, match="SLURM_NTASKS=8 but this process was not started by srun"):
        detect(batch)
    single = detect({**batch, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"})
    assert single.launcher == "slurm" and single.world_size == 1 and single.added == {}


def test_srun_running_composers_launcher_per_node_is_left_to_the_launcher():
    found = detect({**SLURM_TASK_6, **COMPOSER})
    assert found.launcher == "composer" and found.added == {}


def test_torchrun_gets_node_rank_from_group_rank():
    found = detect(TORCHRUN)
    assert found.launcher == "torchrun" and found.added == {"NODE_RANK": "1"} and found.nodes == 2
    assert found.summary() == "launch: torchrun, world size 4 (2 per node here, 2 nodes), master 10.0.0.1:29500"


def test_pytorchjob_pod_is_one_node_of_one_process():
    found = detect(PYTORCHJOB_WORKER_2)
    assert found.launcher == "kubernetes" and found.nodes == 4
    assert found.added == {"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "NODE_RANK": "3"}


def test_pytorchjob_expecting_several_processes_per_pod_is_refused():
    with pytest.raises(LaunchError, match="PET_NPROC_PER_NODE=8 but this pod started one process"):
        detect({**PYTORCHJOB_WORKER_2, "PET_NPROC_PER_NODE": "8"})


def test_composers_launcher_and_a_plain_process_need_nothing():
    assert detect(COMPOSER).added == {} and detect(COMPOSER).nodes == 1
    plain = detect({"HOME": "/root"})
    assert plain.launcher == "single" and plain.world_size == 1 and plain.summary().endswith("(one process)")
    # What Composer writes into os.environ for one process: a second trainer in the process is still one process.
    assert detect(launch.ONE_PROCESS).launcher == "single"
    assert detect({**SLURM_TASK_6, **launch.ONE_PROCESS}).launcher == "single"


@pytest.mark.parametrize("env, words", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK are not"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "LOCAL_RANK, LOCAL_WORLD_SIZE"),
    ({**COMPOSER, "RANK": "2"}, "RANK=2 is outside WORLD_SIZE=2"),
    ({**COMPOSER, "MASTER_ADDR": ""}, "MASTER_ADDR is not set"),
    ({**COMPOSER, "WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({**COMPOSER, "LOCAL_RANK": "2"}, "LOCAL_RANK=2, LOCAL_WORLD_SIZE=2"),
])
def test_a_partial_or_inconsistent_environment_is_one_line(env, words):
    with pytest.raises(LaunchError, match=words) as err:
        detect(env)
    assert "\n" not in str(err.value)


def test_prepare_completes_the_environment_it_is_given():
    env = dict(TORCHRUN)
    prepare(env)
    assert env["NODE_RANK"] == "1"
    assert prepare(env).launcher == "torchrun"  # idempotent: a second start in the process finds the same


def test_a_process_must_see_the_gpu_of_its_local_rank(caplog):
    with pytest.raises(LaunchError, match="LOCAL_RANK=1 but this process sees 1 GPU"):
        launch.check_devices(detect(COMPOSER), gpus=1)
    launch.check_devices(detect(COMPOSER), gpus=2)
    launch.check_devices(detect({**COMPOSER, "RANK": "0", "LOCAL_RANK": "0"}), gpus=8)
    assert "this node has 8 GPUs but runs 2 process(es)" in caplog.text


@pytest.mark.parametrize("hostlist, hosts", [
    ("gpu-[01-04,07]", ["gpu-01", "gpu-02", "gpu-03", "gpu-04", "gpu-07"]),
    ("vm", ["vm"]),
    ("a1,b[8-10]", ["a1", "b8", "b9", "b10"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
    ("node[009-011].cluster", ["node009.cluster", "node010.cluster", "node011.cluster"]),
])
def test_slurm_host_lists_expand_like_scontrol_show_hostnames(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


def test_slurm_task_counts_expand():
    assert tasks_per_node("2(x3),1") == [2, 2, 2, 1] and tasks_per_node("8") == [8]
    with pytest.raises(SlurmListError, match=r"cannot read SLURM tasks per node '2\(y3\)'"):
        tasks_per_node("2(y3)")


def test_the_trainer_refuses_a_partial_environment_before_any_work(write_recipe, tmp_path, monkeypatch, capsys):
    for name in launch.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert train.main([str(write_recipe()), f"run_dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: WORLD_SIZE is set but RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK are not: launch with composer, "
        "torchrun or srun, which set them all, or unset them to run one process (docs/launching.md)"]
    assert not (tmp_path / "run").exists()


def test_a_rank_variable_that_is_no_integer_stops_before_composer_reads_it(tmp_path, subprocess_env):
    """Composer's own import reads RANK as an integer: the script must check it first (a subprocess, as the
    check runs before the imports)."""
    result = run([sys.executable, TRAIN_PY, REPO / "yamls" / "quickstart.yaml", f"run_dir={tmp_path / 'run'}"],
                 env={**subprocess_env, **COMPOSER, "RANK": "first"}, expect=2)
    assert result.stderr.strip().splitlines() == ["error: RANK='first' is not an integer"]
    assert not (tmp_path / "run").exists()


def test_the_one_process_tools_refuse_a_launchers_world(write_recipe, tmp_path, monkeypatch, capsys):
    """`rsb-composer eval` inside an 8-pod job would evaluate an eighth of val: refused, naming the launch."""
    from rsb_composer import cli

    for name in launch.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    for name, value in {"RANK": "0", "WORLD_SIZE": "8", "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456"}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["eval", str(write_recipe()), str(tmp_path / "missing.pt")]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: rsb-composer eval runs in one process, but this environment describes a kubernetes launch of world "
        "size 8 (WORLD_SIZE, RANK, ...): run it outside the launcher, or unset those variables")


def _rank(rank: int, port: int, subprocess_env: dict[str, str]) -> dict[str, str]:
    return {**subprocess_env, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
            "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


@pytest.mark.slow
def test_a_master_that_does_not_answer_within_dist_timeout_is_one_line(write_recipe, tmp_path, subprocess_env):
    port = free_port()  # nothing listens there
    result = run([sys.executable, TRAIN_PY, write_recipe(), f"run_dir={tmp_path / 'run'}", "dist_timeout=3"],
                 env=_rank(1, port, subprocess_env), expect=2, timeout=120)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: rank 0 at MASTER_ADDR=127.0.0.1 MASTER_PORT={port} did not answer within dist_timeout=3 s")


@pytest.mark.slow
def test_a_rank_0_left_alone_stops_after_dist_timeout_in_one_line(write_recipe, tmp_path, subprocess_env):
    result = run([sys.executable, TRAIN_PY, write_recipe(), f"run_dir={tmp_path / 'run'}", "dist_timeout=3"],
                 env=_rank(0, free_port(), subprocess_env), expect=2, timeout=120)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: distributed start failed within dist_timeout=3 s (launch: composer, world size 2")
    assert "1/2 clients joined" in last
