"""The PyTorchJob pod command (scripts/kubernetes/train.sh) without a cluster: run as a pod runs it, with the
operator's variables, as the first process of its own PID namespace where this machine allows it, and stopped as
Kubernetes stops a pod. The manifest users apply (scripts/kubernetes/pytorchjob.yaml) against what
docs/launching.md says of it and what train.sh and rsb_composer/launch.py read. (The operator's variables mapped
for a pod of one process: tests/test_launch.py.)"""

import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import PurePosixPath

import psutil
import pytest
import yaml

from rsb_composer import launch
from rsb_composer.config import load_config
from tests.helpers import REPO, RUN, free_port, wait_for

POD_SCRIPT = REPO / "scripts" / "kubernetes" / "train.sh"
MANIFEST = REPO / "scripts" / "kubernetes" / "pytorchjob.yaml"
LAUNCHING = REPO / "docs" / "launching.md"
OPERATOR_PORT = 23456  # the training operator's default for the port named pytorchjob-port (its MASTER_PORT)


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
    wait_for((run_dir / "checkpoints" / "ep0-ba2-rank0.pt").exists, 240, "the first checkpoint", pod)
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


def _job() -> dict:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]
    assert len(documents) == 1, f"{MANIFEST.name}: one PyTorchJob expected, found {len(documents)} documents"
    return documents[0]


def _pods(job: dict) -> list[tuple[str, dict, dict]]:
    """(replica type, pod spec, its container) for each pod, in the operator's RANK order: Master, then Workers."""
    specs = job["spec"]["pytorchReplicaSpecs"]
    pods = []
    for kind in ("Master", "Worker"):
        pod = specs[kind]["template"]["spec"]
        (container,) = pod["containers"]
        pods += [(kind, pod, container)] * specs[kind]["replicas"]
    return pods


def _mount_of(pod: dict, container: dict, path: str) -> tuple[dict, dict]:
    """The volume mount holding ``path`` and its volume."""
    mounts = [m for m in container["volumeMounts"] if PurePosixPath(path).is_relative_to(m["mountPath"])]
    assert mounts, f"{path} is on no volume of the pod"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return mount, next(v for v in pod["volumes"] if v["name"] == mount["name"])


def _kubernetes_section() -> str:
    return LAUNCHING.read_text().split("\n## Kubernetes\n", 1)[1].split("\n## ", 1)[0]


def test_the_manifest_runs_the_pod_script_with_a_recipe_on_every_pod():
    job = _job()
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    assert job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    pods = _pods(job)
    commands = {tuple(container["command"]) for _, _, container in pods}
    assert len(commands) == 1, "every pod runs the same command (its RANK tells them apart)"
    bash, script, n_pods, gpus, recipe, *overrides = commands.pop()
    assert (bash, script) == ("bash", "scripts/kubernetes/train.sh") and (REPO / script).exists()
    assert int(n_pods) == len(pods), "train.sh's N is the number of pods"
    for kind, pod, container in pods:
        assert container["name"] == "pytorch", "the training operator looks for the container named pytorch"
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == int(gpus), f"{kind}: G is its GPU count"
        assert pod["terminationGracePeriodSeconds"] > 30, "longer than Kubernetes' default, to save on SIGTERM"
    assert all(job["spec"]["pytorchReplicaSpecs"][k]["restartPolicy"] == "OnFailure" for k in ("Master", "Worker"))
    assert recipe.startswith("yamls/") and (REPO / recipe).exists()
    config = load_config(REPO / recipe, overrides)  # every override is a key the recipe takes
    for kind, pod, container in pods:
        mount, volume = _mount_of(pod, container, config.run_dir)
        assert "persistentVolumeClaim" in volume and not mount.get("readOnly"), f"{kind}: run_dir on a shared claim"
        assert "persistentVolumeClaim" in _mount_of(pod, container, config.data.path)[1], f"{kind}: data on a claim"
        _, shm = _mount_of(pod, container, "/dev/shm")
        assert shm.get("emptyDir") == {"medium": "Memory"}, f"{kind}: a memory-backed /dev/shm for the workers"


def test_each_pod_starts_composers_launcher_for_the_whole_world(tmp_path):
    """The operator's variables in each pod, through train.sh (Composer's launcher replaced by a recorder), give
    the launcher the whole world; the environment it then hands each process is one launch.py recognises."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "composer").write_text(f'#!/bin/bash\nprintf "%q " "$@" >> {calls}\necho >> {calls}\n')
    (bin_dir / "composer").chmod(0o755)
    job = _job()
    pods = _pods(job)
    master = f"{job['metadata']['name']}-master-0"  # the Master pod's service, which the operator names
    for rank, (kind, _, container) in enumerate(pods):
        own = {e["name"] for e in container.get("env", [])}
        assert not own & {*launch.RANK_VARIABLES, "MASTER_ADDR", "MASTER_PORT"}, f"{kind} sets the operator's {own}"
        ports = [p for p in container.get("ports", []) if p.get("name") == "pytorchjob-port"]
        port = ports[0]["containerPort"] if ports else OPERATOR_PORT
        operator = {"RANK": str(rank), "WORLD_SIZE": str(len(pods)), "MASTER_ADDR": master,
                    "MASTER_PORT": str(port), "KUBERNETES_SERVICE_HOST": "10.96.0.1"}
        env = {k: v for k, v in os.environ.items() if k not in (*launch.RANK_VARIABLES, "MASTER_ADDR", "MASTER_PORT")}
        env.update(operator, PATH=f"{bin_dir}:{env['PATH']}")
        result = subprocess.run(["bash", str(POD_SCRIPT), *container["command"][2:]], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    runs = [shlex.split(line) for line in calls.read_text().splitlines()]
    assert len(runs) == len(pods)
    gpus = int(pods[0][2]["resources"]["limits"]["nvidia.com/gpu"])
    for rank, args in enumerate(runs):
        options = dict(zip(args[:10:2], args[1:10:2], strict=True))
        assert options == {"-n": str(gpus), "--world_size": str(len(pods) * gpus), "--node_rank": str(rank),
                           "--master_addr": master, "--master_port": str(OPERATOR_PORT)}
        assert args[10:] == ["rsb_composer/train.py", *pods[rank][2]["command"][4:]]
        for local in range(gpus):  # what Composer's launcher sets for each of its processes
            process = {"RANK": str(rank * gpus + local), "WORLD_SIZE": options["--world_size"],
                       "LOCAL_RANK": str(local), "LOCAL_WORLD_SIZE": str(gpus), "NODE_RANK": str(rank),
                       "MASTER_ADDR": master, "MASTER_PORT": options["--master_port"],
                       "KUBERNETES_SERVICE_HOST": "10.96.0.1"}
            found = launch.detect(process)
            assert (found.launcher, found.world_size, found.nodes) == ("composer", len(pods) * gpus, len(pods))


def test_the_docs_include_the_manifest_by_name_and_name_its_placeholders():
    section = _kubernetes_section()
    apply = "kubectl apply -f scripts/kubernetes/pytorchjob.yaml"
    assert apply in section and apply in (REPO / "README.md").read_text()
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        assert "kind: PyTorchJob" not in page.read_text(), f"{page.name} inlines the manifest: name the file instead"
    job = _job()
    images = {c["image"] for _, _, c in _pods(job)}
    claims = {v["persistentVolumeClaim"]["claimName"] for _, pod, _ in _pods(job) for v in pod["volumes"]
              if "persistentVolumeClaim" in v}
    assert set(re.findall(r"`image: ([^`]+)`", section)) == images, "the docs name the image to change"
    assert set(re.findall(r"`claimName: ([^`]+)`", section)) == claims, "the docs name every claim to change"
    assert all("example" in image for image in images), "the image is a placeholder, not a real registry"
