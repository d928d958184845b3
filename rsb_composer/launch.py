"""Which launcher started this process, and the environment Composer needs from it.

Composer reads its distributed setup from five variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
NODE_RANK) plus MASTER_ADDR/MASTER_PORT, and only its own launcher sets all of them. :data:`LAUNCHERS` lists the
launchers recognised from the environment, in the order they are tried; each completes what it leaves out:

- ``torchrun``: everything but NODE_RANK, which is its GROUP_RANK (static ``--node_rank`` or c10d rendezvous).
- ``composer``: all five (also SLURM or Kubernetes running Composer's launcher on each node): nothing to add.
- ``slurm``: ``srun`` with one task per device: the ranks from SLURM_PROCID/LOCALID/NODEID, the sizes from the
  step's task counts, MASTER_ADDR the step's first host, MASTER_PORT from the job and step ids (unless set).
- ``kubernetes``: a PyTorchJob pod running one process: RANK and WORLD_SIZE count pods, so each pod is a node.
- ``single``: none of them set (or the values Composer fills in for one process): one process.

Anything else (some of the variables without the others, a world SLURM did not start) is a :class:`LaunchError`
naming the variables, before any waiting. Only the standard library is imported here: the environment must be
complete before Composer or torch.distributed read it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass

from rsb_composer.config import Choices, ConfigError, check, nothing_to_check
from rsb_composer.slurm_lists import expand_hostlist, tasks_per_node

log = logging.getLogger(__name__)

RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK")
ONE_PROCESS = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "NODE_RANK": "0"}
SBATCH_SCRIPT = "scripts/slurm/train.sbatch"


class LaunchError(ConfigError):
    """The environment does not describe one consistent world of processes; the message is one line."""


@dataclass(frozen=True)
class Launch:
    launcher: str
    env: dict[str, str]  # the complete distributed environment (what was found plus what was added)
    added: dict[str, str]  # what this module adds to os.environ
    nodes: int

    def get(self, name: str, default: int = 0) -> int:
        return int(self.env.get(name, default))

    @property
    def world_size(self) -> int:
        return self.get("WORLD_SIZE", 1)

    @property
    def master(self) -> str | None:
        return f"{self.env['MASTER_ADDR']}:{self.env['MASTER_PORT']}" if self.world_size > 1 else None

    def summary(self) -> str:
        if self.world_size == 1:
            return f"launch: {self.launcher}, world size 1 (one process)"
        per_node = self.get("LOCAL_WORLD_SIZE", 1)
        return (f"launch: {self.launcher}, world size {self.world_size} ({per_node} per node here, {self.nodes} "
                f"node{'s' if self.nodes != 1 else ''}), master {self.master}")


@dataclass(frozen=True)
class Launcher:
    name: str
    recognise: Callable[[Mapping[str, str]], bool]
    complete: Callable[[Mapping[str, str]], dict[str, str]]  # the variables to add (once its check passed)
    nodes: Callable[[Mapping[str, str]], int]


def _integer(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except KeyError:
        raise LaunchError(f"{name} is not set") from None
    except ValueError:
        raise LaunchError(f"{name}={env[name]!r} is not an integer") from None


def _first_integer(env: Mapping[str, str], names: tuple[str, ...], default: int) -> int:
    name = next((n for n in names if env.get(n)), None)  # the first one set and non-empty
    return default if name is None else _integer(env, name)


def check_integers(env: Mapping[str, str]) -> None:
    """A LaunchError for a rank variable set to a non-integer (Composer's import would raise on it)."""
    for name in (*RANK_VARIABLES, "GROUP_WORLD_SIZE"):
        _first_integer(env, (name,), 0)


def _torchrun(env: Mapping[str, str]) -> dict[str, str]:
    return {"NODE_RANK": env["GROUP_RANK"]} if "GROUP_RANK" in env else {}


def _slurm_tasks(env: Mapping[str, str]) -> tuple[int, list[int]]:
    """srun's step: its task count and tasks per node."""
    tasks = _integer(env, "SLURM_STEP_NUM_TASKS")
    return tasks, tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_NTASKS_PER_NODE") or "")


def _check_slurm(env: Mapping[str, str]) -> None:
    if "SLURM_STEP_NUM_TASKS" not in env:  # the batch script itself (or salloc's shell), not a task of srun
        tasks = _first_integer(env, ("SLURM_NTASKS",), 1)
        if tasks > 1:
            raise LaunchError(
                f"SLURM_NTASKS={tasks} but this process was not started by srun, so the other {tasks - 1} ranks "
                f"never start: run it as `srun python rsb_composer/train.py ...` (see {SBATCH_SCRIPT})")
        return
    tasks, per_node = _slurm_tasks(env)
    if "SLURM_NTASKS" in env and _integer(env, "SLURM_NTASKS") != tasks:
        raise LaunchError(f"SLURM_NTASKS={env['SLURM_NTASKS']} does not match the {tasks} tasks srun started "
                          "(SLURM_STEP_NUM_TASKS); do not set SLURM_NTASKS by hand, let srun set it")
    node, rank, local = _integer(env, "SLURM_NODEID"), _integer(env, "SLURM_PROCID"), _integer(env, "SLURM_LOCALID")
    if sum(per_node) != tasks or not 0 <= node < len(per_node):
        raise LaunchError(f"SLURM_STEP_TASKS_PER_NODE={env.get('SLURM_STEP_TASKS_PER_NODE')!r} does not describe "
                          f"the {tasks} tasks srun started (SLURM_NODEID={node})")
    if not (0 <= rank < tasks and 0 <= local < per_node[node]):
        raise LaunchError(f"SLURM_PROCID={rank}/SLURM_LOCALID={local} lie outside the step's {tasks} tasks")
    if tasks > 1 and "MASTER_ADDR" not in env and not (env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")):
        raise LaunchError("SLURM_STEP_NODELIST and SLURM_JOB_NODELIST are not set: set MASTER_ADDR to node 0")


def _slurm(env: Mapping[str, str]) -> dict[str, str]:
    if "SLURM_STEP_NUM_TASKS" not in env:
        return {}
    tasks, per_node = _slurm_tasks(env)
    node = _integer(env, "SLURM_NODEID")
    added = {"RANK": str(_integer(env, "SLURM_PROCID")), "WORLD_SIZE": str(tasks),
             "LOCAL_RANK": str(_integer(env, "SLURM_LOCALID")),
             "LOCAL_WORLD_SIZE": str(per_node[node]), "NODE_RANK": str(node)}
    if tasks > 1 and "MASTER_ADDR" not in env:
        # Task 0 runs on the step's first node (the job's, when the step spans the whole job).
        added["MASTER_ADDR"] = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"])[0]
    if tasks > 1 and "MASTER_PORT" not in env:
        added["MASTER_PORT"] = str(slurm_port(env))
    return added


def _check_kubernetes(env: Mapping[str, str]) -> None:
    processes = env.get("PET_NPROC_PER_NODE", "1")
    if processes.isdigit() and int(processes) > 1:
        raise LaunchError(f"PET_NPROC_PER_NODE={processes} but this pod started one process: start them with "
                          f"`composer -n {processes} ...` (docs/launching.md, Kubernetes)")


def _kubernetes(env: Mapping[str, str]) -> dict[str, str]:
    return {"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "NODE_RANK": env["RANK"]}


def _one_process(env: Mapping[str, str]) -> bool:
    return all(env.get(name, one) == one for name, one in ONE_PROCESS.items())


def _nodes_from_sizes(env: Mapping[str, str]) -> int:
    world = _first_integer(env, ("WORLD_SIZE",), 1)
    local = max(_first_integer(env, ("LOCAL_WORLD_SIZE",), 1), 1)
    return -(-world // local)


# Tried in this order (the first that recognises the environment wins). Each entry's check refuses an environment
# it recognises but cannot complete into one consistent world, before anything is added.
LAUNCHERS: Choices[Launcher] = Choices("launcher")
LAUNCHERS.add("torchrun", Launcher(
    "torchrun", lambda env: "TORCHELASTIC_RUN_ID" in env or "GROUP_RANK" in env, _torchrun,
    lambda env: _first_integer(env, ("GROUP_WORLD_SIZE",), 0) or _nodes_from_sizes(env)), check=nothing_to_check,
    doc="torchrun (static --node_rank or a c10d rendezvous): sets everything but NODE_RANK, taken from its "
        "GROUP_RANK.")
LAUNCHERS.add("composer", Launcher(
    "composer", lambda env: all(name in env for name in RANK_VARIABLES) and not _one_process(env), lambda env: {},
    _nodes_from_sizes), check=nothing_to_check,
    doc="Composer's launcher (also under SLURM or Kubernetes, one launcher per node): sets all five variables.")
LAUNCHERS.add("slurm", Launcher(
    "slurm", lambda env: "SLURM_PROCID" in env and not any(name in env for name in RANK_VARIABLES), _slurm,
    lambda env: _first_integer(env, ("SLURM_STEP_NUM_NODES", "SLURM_NNODES"), 1)), check=_check_slurm,
    doc="srun with one task per device: ranks from SLURM_PROCID/LOCALID/NODEID, sizes from the step's task "
        "counts, MASTER_ADDR the step's first host, MASTER_PORT from the job and step ids.")
LAUNCHERS.add("kubernetes", Launcher(
    "kubernetes", lambda env: "KUBERNETES_SERVICE_HOST" in env and {"RANK", "WORLD_SIZE"} <= set(env)
    and not {"LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK"} & set(env), _kubernetes,
    lambda env: _integer(env, "WORLD_SIZE")), check=_check_kubernetes,
    doc="A PyTorchJob pod running one process: RANK and WORLD_SIZE count pods, so each pod is a node.")
# Nothing set, or the values Composer itself fills in for one process (a second trainer in a process).
LAUNCHERS.add("single", Launcher("single", _one_process, lambda env: {}, lambda env: 1), check=nothing_to_check,
              doc="No launcher: one process.")


def detect(environ: Mapping[str, str]) -> Launch:
    """The launcher behind ``environ`` and the complete environment it implies; raises LaunchError."""
    for name, launcher in LAUNCHERS.items():
        if launcher.recognise(environ):
            LAUNCHERS.check(name, environ)
            added = launcher.complete(environ)
            env = {**{k: v for k, v in environ.items() if k in (*RANK_VARIABLES, "MASTER_ADDR", "MASTER_PORT")},
                   **added}
            check_integers({**environ, **env})
            launch = Launch(launcher.name, env, added, launcher.nodes(environ))
            _check_world(launch)
            return launch
    found = [name for name in RANK_VARIABLES if name in environ]
    absent = [name for name in RANK_VARIABLES if name not in environ]
    raise LaunchError(f"{', '.join(found)} {'is' if len(found) == 1 else 'are'} set but {', '.join(absent)} "
                      f"{'is' if len(absent) == 1 else 'are'} not: launch with composer, torchrun or srun, which set "
                      "them all, or unset them to run one process (docs/launching.md)")


def prepare(environ: MutableMapping[str, str] | None = None) -> Launch:
    """Recognise the launcher and complete ``environ`` (os.environ by default) for Composer, idempotently."""
    environ = os.environ if environ is None else environ
    launch = detect(environ)
    environ.update(launch.added)
    return launch


def _check_world(launch: Launch) -> None:
    if launch.launcher == "single":
        return
    world, rank = launch.get("WORLD_SIZE", 1), launch.get("RANK")
    local_world, local = launch.get("LOCAL_WORLD_SIZE", 1), launch.get("LOCAL_RANK")
    if world < 1 or not 0 <= rank < world:
        raise LaunchError(f"RANK={rank} is outside WORLD_SIZE={world} ({launch.launcher})")
    if not 0 <= local < local_world <= world:
        raise LaunchError(f"LOCAL_RANK={local}, LOCAL_WORLD_SIZE={local_world}, WORLD_SIZE={world} do not fit "
                          f"together ({launch.launcher})")
    if world > 1:
        absent = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not launch.env.get(name)]
        if absent:
            raise LaunchError(f"WORLD_SIZE={world} but {' and '.join(absent)} {'is' if len(absent) == 1 else 'are'} "
                              f"not set: every rank needs rank 0's address and port ({launch.launcher})")
        _integer(launch.env, "MASTER_PORT")


def check_devices(launch: Launch, gpus: int) -> None:
    """On GPUs, each local rank trains on the GPU of its number: the process must see that many."""
    local, local_world = launch.get("LOCAL_RANK"), launch.get("LOCAL_WORLD_SIZE", 1)
    if gpus and local >= gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all")
        raise LaunchError(f"LOCAL_RANK={local} but this process sees {gpus} GPU(s) (CUDA_VISIBLE_DEVICES={visible}): "
                          "give every process of a node all of its GPUs (SLURM: --gpus-per-node, not --gpus-per-task)")
    if gpus > local_world and local == 0:
        log.warning("this node has %d GPUs but runs %d process(es) of the run: start one per GPU", gpus, local_world)


def check_dist_timeout(timeout: float) -> None:
    check(timeout > 0, "dist_timeout", timeout, "seconds to wait for every rank at start; must be > 0")


def wait_for_master(launch: Launch, timeout: float) -> None:
    """Before torch.distributed connects (and, failing, prints C++ stack traces), check that rank 0's address
    answers within ``timeout`` seconds. Rank 0 itself opens the port, except under torchrun, whose agent does."""
    if launch.world_size == 1 or (launch.get("RANK") == 0 and launch.launcher != "torchrun"):
        return
    address, port = launch.env["MASTER_ADDR"], int(launch.env["MASTER_PORT"])
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=min(5.0, timeout)):
                return
        except OSError as err:
            if time.monotonic() + 1 > deadline:
                raise LaunchError(
                    f"rank 0 at MASTER_ADDR={address} MASTER_PORT={port} did not answer within dist_timeout="
                    f"{timeout:g} s ({type(err).__name__}: {err}; {launch.launcher}): start rank 0, check the address "
                    "is reachable from this node and the port open, or raise dist_timeout") from None
            time.sleep(1)


def init_distributed(launch: Launch, device: str, timeout: float) -> None:
    """Start torch.distributed through Composer (as its Trainer would), a failure in one line."""
    from composer.utils import dist  # imported here: reading this module's environment logic needs no torch

    wait_for_master(launch, timeout)
    try:
        dist.initialize_dist(device, timeout)
    except RuntimeError as err:  # torch's DistError, DistStoreError, DistNetworkError are RuntimeErrors
        message = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__
        raise LaunchError(f"distributed start failed within dist_timeout={timeout:g} s ({launch.summary()}): "
                          f"{message}; start all {launch.world_size} ranks with the same MASTER_ADDR and "
                          "MASTER_PORT, or raise dist_timeout") from None


def slurm_port(env: Mapping[str, str]) -> int:
    """A port every task of a step derives alike: from the job and step ids, in 10000-29999 (below Linux's
    ephemeral range), different for the steps of one job so a rerun inside the allocation never meets the last."""
    job, step = _first_integer(env, ("SLURM_JOB_ID",), 0), _first_integer(env, ("SLURM_STEP_ID",), 0)
    return 10000 + (job * 97 + step) % 20000
