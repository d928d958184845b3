"""A real one-node SLURM cluster on this machine, for the tests: munged, slurmctld and slurmd on localhost.

Debian's ``slurm-wlm`` and ``munge`` packages provide the daemons (``.ci/run`` installs them). Everything the
cluster writes (configuration, state, spool, logs, munge's key and socket) lives in one fresh folder under /tmp,
and the daemons run in the foreground as children of the test process, so stopping them is killing known pids.
What made SLURM work on these machines (DESIGN.md, "Facts measured"): munged as user munge with its socket in a
folder that user owns and others can traverse, ``ProctrackType=proctrack/linuxproc`` (no cgroups in a container),
and a slurm.conf naming this host. ``TaskPlugin=task/affinity`` binds each task to its CPUs as real clusters do
(``task/none`` leaves tasks unbound); the node then declares the CPUs the machine has, which the binding uses.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port

DAEMONS = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "scontrol", "sinfo")

SLURM_CONF = """\
ClusterName=rsbtest
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin={task_plugin}
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=10
InactiveLimit=0
MinJobAge=10
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> str | None:
    """Why a cluster cannot start here (packages not installed, not root), or None."""
    absent = [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if absent:
        return f"SLURM/munge not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (the munge package creates it)"
    host = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(host)
    except OSError:
        return f"this host's name {host!r} does not resolve (SLURM's node name is the master address)"
    return None


class SlurmCluster:
    """One node, this host: with ``task/affinity`` (the default) the CPUs this process may use, each task bound to
    its own; with ``task/none``, ``cpus`` CPUs (SLURM's count, not checked against the hardware)."""

    def __init__(self, cpus: int = 4, task_plugin: str = "task/affinity"):
        self.host = socket.gethostname().split(".")[0]
        self.root = Path(tempfile.mkdtemp(prefix="rsb-slurm-"))
        self.task_plugin = task_plugin
        # Bound tasks need CPUs that exist; unbound ones may be given more than the machine has.
        self.cpus = len(os.sched_getaffinity(0)) if task_plugin == "task/affinity" else cpus
        self.conf = self.root / "slurm.conf"
        self.daemons: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """What a client command (srun, sbatch, ...) needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60) -> None:
        munge = self.root / "munge"  # munge's own folder: its user owns it, others may only traverse it
        munge.mkdir()
        (munge / "munge.key").write_bytes(os.urandom(1024))
        (munge / "munge.key").chmod(0o600)
        user = pwd.getpwnam("munge")
        for path in (munge, munge / "munge.key"):
            os.chown(path, user.pw_uid, user.pw_gid)
        self.root.chmod(0o755)
        socket_path = munge / "munge.socket"
        self._spawn(["munged", "--foreground", f"--socket={socket_path}", f"--key-file={munge}/munge.key",
                     f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/munged.seed",
                     f"--log-file={munge}/munged.log"], user="munge", group="munge", extra_groups=[])
        self._wait(socket_path.exists, timeout, "munged did not create its socket")
        for sub in ("state", "spool"):
            (self.root / sub).mkdir()
        self.conf.write_text(SLURM_CONF.format(host=self.host, root=self.root, munge_socket=socket_path,
                                               ctld_port=free_port(), slurmd_port=free_port(), cpus=self.cpus,
                                               task_plugin=self.task_plugin))
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn(["slurmd", "-D", "-f", str(self.conf)])
        self._wait(self.node_idle, timeout, "the node did not become idle")

    def stop(self) -> None:
        try:
            if self.daemons and self.daemons[0].poll() is None:
                subprocess.run(["scancel", "--full", "--quiet", "--partition=debug"], env=self._client_env(),
                               timeout=20, capture_output=True)
        finally:
            for process in reversed(self.daemons):  # slurmd, slurmctld, then munged: by pid, our own children
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        """The daemons' logs' tails, for a failing test's message."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munge/munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(parts)

    def _client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def run(self, *args: str, timeout: float = 60) -> str:
        """A SLURM client command (squeue, scontrol, scancel, ...) against this cluster; its stdout."""
        result = subprocess.run(list(args), env=self._client_env(), capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
        return result.stdout

    def _spawn(self, args: list[str], **popen) -> None:
        log = open(self.root / f"{Path(args[0]).name}.out", "w")  # noqa: SIM115 - closed with the folder
        self.daemons.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **popen))

    def node_idle(self) -> bool:
        """The node is up and runs nothing (a daemon that exited raises, with the logs)."""
        for process in self.daemons:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with {process.returncode}\n{self.logs()}")
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self._client_env(), capture_output=True,
                                text=True, timeout=20)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                logs = self.logs()
                self.stop()
                raise RuntimeError(f"SLURM test cluster: {what} within {timeout:.0f} s\n{logs}")
            time.sleep(0.3)
