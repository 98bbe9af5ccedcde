"""Deployment files: cluster launcher YAML, KubeRay manifests, Dockerfile and jobs/ scripts.

The manifests cannot be applied here (no AWS, no Kubernetes), so they are parsed and checked
for what a cluster needs: the Ray version of pyproject.toml everywhere, a head that schedules
nothing, GPU workers that request GPUs and tolerate GPU taints, and one shared volume mounted
on every node. The job scripts are run for --help and their small helpers are called directly.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
SHARED = "/mnt/shared"


def _pins() -> dict[str, str]:
    """pyproject dependencies pinned with == : {normalised name: version}."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for d in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^,;\s]+)", d.strip())
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(3)
    return pins


PINS = _pins()
RAY = PINS["ray"]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _check_image(image: str, where: str) -> None:
    # Our image's tag carries the package and Ray versions (cluster/Dockerfile says how).
    tag = image.rsplit(":", 1)[-1]
    assert f"ray{RAY}" in tag and tag.startswith(VERSION), f"{where}: image {image} is not " \
        f"tagged {VERSION}-ray{RAY}-..."


def _load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------

def test_dockerfile_base_image_and_pins_match_pyproject():
    text = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+rayproject/ray:(\S+)", text, re.M)
    assert base, "cluster/Dockerfile must start FROM rayproject/ray:<ray version>-py3XX-gpu"
    ray_tag, major, minor = re.fullmatch(r"(\d+\.\d+\.\d+)-py(\d)(\d+)-gpu", base.group(1)).groups()
    assert ray_tag == RAY
    # The image's Python must satisfy requires-python (">=3.11").
    need = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low = tuple(int(x) for x in re.fullmatch(r">=(\d+)\.(\d+)", need).groups())
    assert (int(major), int(minor)) >= low
    pinned = dict((n.lower(), v) for n, v in
                  re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^"\s]+)"', text))
    assert {"ray", "torch", "torchvision"} <= set(pinned)
    for name, version in pinned.items():
        assert PINS.get(name) == version, \
            f"cluster/Dockerfile pins {name}=={version}, pyproject.toml {PINS.get(name)}"
    assert re.search(r"^RUN pip install --no-cache-dir \.$", text, re.M), \
        "the package itself must be installed (with pyproject's other pins)"


# --------------------------------------------------------------------------------------------
# Ray cluster launcher (AWS)
# --------------------------------------------------------------------------------------------

def test_aws_launcher_config_passes_rays_schema_and_has_a_cpu_head_and_gpu_workers():
    from ray.autoscaler._private.util import validate_config
    cfg = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    validate_config(cfg)  # Ray's own JSON schema for `ray up`
    assert cfg["provider"]["type"] == "aws"
    _check_image(cfg["docker"]["image"], "aws.yaml docker.image")
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert any("--num-cpus=0" in c for c in cfg["head_start_ray_commands"])
    gpu = [t for n, t in types.items()
           if n != cfg["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert gpu, "aws.yaml needs a worker type with GPU resources"
    for t in gpu:
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cfg["max_workers"]
        assert t["node_config"]["InstanceType"].startswith(("g", "p"))  # GPU instance families


def test_aws_launcher_mounts_shared_storage_for_data_outputs_and_mlflow():
    cfg = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    assert any(f"-v {SHARED}:{SHARED}" in o for o in cfg["docker"]["run_options"])
    assert any("mount" in c and SHARED in c for c in cfg["initialization_commands"])
    mlflow = [c for c in cfg["head_start_ray_commands"] if "mlflow server" in c]
    assert mlflow and f"sqlite:///{SHARED}/" in mlflow[0]


# --------------------------------------------------------------------------------------------
# KubeRay
# --------------------------------------------------------------------------------------------

def _pvc_name() -> str:
    (pvc,) = _load(CLUSTER / "kuberay" / "shared-volume.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]  # every node mounts it at once
    return pvc["metadata"]["name"]


def _cluster_specs() -> dict[str, dict]:
    (rc,) = _load(CLUSTER / "kuberay" / "raycluster.yaml")
    (rj,) = _load(CLUSTER / "kuberay" / "rayjob.yaml")
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster")
    assert (rj["apiVersion"], rj["kind"]) == ("ray.io/v1", "RayJob")
    return {"raycluster.yaml": rc["spec"], "rayjob.yaml": rj["spec"]["rayClusterSpec"]}


def _mounts_shared(pod: dict, container: dict, claim: str) -> bool:
    vols = {v["name"] for v in pod.get("volumes", [])
            if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
    return any(m["name"] in vols and m["mountPath"] == SHARED
               for m in container.get("volumeMounts", []))


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_cluster_spec_pins_ray_and_keeps_work_off_the_head(name):
    spec = _cluster_specs()[name]
    assert spec["rayVersion"] == RAY
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    for c in head["template"]["spec"]["containers"]:
        _check_image(c["image"], f"{name} head container {c['name']}")
    assert _mounts_shared(head["template"]["spec"], head["template"]["spec"]["containers"][0],
                          _pvc_name()), f"{name}: head does not mount the shared volume"


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_gpu_worker_group_requests_gpus_tolerates_taints_and_mounts_shared(name):
    spec, claim = _cluster_specs()[name], _pvc_name()
    groups = spec["workerGroupSpecs"]
    assert groups
    for g in groups:
        pod = g["template"]["spec"]
        (worker,) = pod["containers"]
        _check_image(worker["image"], f"{name} worker group {g['groupName']}")
        res = worker["resources"]
        assert int(res["limits"]["nvidia.com/gpu"]) >= 1
        assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert _mounts_shared(pod, worker, claim), f"{name}: {g['groupName']} lacks {SHARED}"


def test_rayjob_runs_an_existing_job_script_and_cleans_up():
    (rj,) = _load(CLUSTER / "kuberay" / "rayjob.yaml")
    script = re.search(r"/home/ray/dc3ray/(jobs/\w+\.py)", rj["spec"]["entrypoint"])
    assert script and (REPO / script.group(1)).is_file()
    assert f"--out {SHARED}/" in rj["spec"]["entrypoint"]
    assert rj["spec"]["shutdownAfterJobFinishes"] is True
    assert "MLFLOW_TRACKING_URI" in yaml.safe_load(rj["spec"]["runtimeEnvYAML"])["env_vars"]


def test_runtime_env_ships_code_not_the_virtualenv_or_runs():
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert env["working_dir"] == "." and {".venv", "runs", ".git"} <= set(env["excludes"])


def test_readme_cluster_commands_name_files_that_exist():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Running on a cluster"):]
    section = section[:section.find("\n## ", 3)] if "\n## " in section[3:] else section
    scripts = re.findall(r"python (jobs/\w+\.py)", section)
    assert {f"jobs/{n}.py" for n in ("condense", "evaluate", "sweep", "imagenet1k")} <= set(scripts)
    for rel in set(scripts) | set(re.findall(r"(cluster/[\w./-]+\.ya?ml)", section)):
        assert (REPO / rel).is_file(), rel
    assert "ray job submit" in section and "--working-dir ." in section


# --------------------------------------------------------------------------------------------
# jobs/ entry scripts
# --------------------------------------------------------------------------------------------

def _job_module(name: str):
    spec = importlib.util.spec_from_file_location(f"dc3ray_job_{name}",
                                                  REPO / "jobs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses in the script look their module up
    spec.loader.exec_module(mod)
    return mod


def test_every_job_script_runs_standalone_and_explains_itself():
    names = ("condense", "evaluate", "sweep", "imagenet1k")
    procs = {n: subprocess.Popen([sys.executable, str(REPO / "jobs" / f"{n}.py"), "--help"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for n in names}
    for n, p in procs.items():
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 0, out
        assert f"usage: jobs/{n}.py" in out and "--set" in out


def test_imagenet_job_copies_a_folder_into_the_cache_once(tmp_path):
    job = _job_module("imagenet1k")
    src = tmp_path / "shards"
    (src / "sub").mkdir(parents=True)
    (src / "part-00000.parquet").write_bytes(b"x" * 10)
    (src / "sub" / "class_map.json").write_text("{}")
    logs: list[str] = []
    # A plain path is read in place unless asked to copy.
    assert job.stage_input(str(src), tmp_path / "cache", log=logs.append) == str(src)
    dest = Path(job.stage_input(src.as_uri(), tmp_path / "cache", copy_local=True, log=logs.append))
    assert dest.parent == (tmp_path / "cache").resolve() and dest.name.startswith("shards-")
    assert (dest / "part-00000.parquet").read_bytes() == b"x" * 10
    assert (dest / "sub" / "class_map.json").is_file() and (dest / job.STAGED_MARKER).is_file()
    stamp = (dest / "part-00000.parquet").stat().st_mtime_ns
    again = job.stage_input(src.as_uri(), tmp_path / "cache", copy_local=True, log=logs.append)
    assert again == str(dest) and (dest / "part-00000.parquet").stat().st_mtime_ns == stamp
    assert any("using the complete copy" in line for line in logs)
    assert not list((tmp_path / "cache").glob("*.partial"))


def test_imagenet_job_refuses_a_missing_input_folder(tmp_path):
    from dc3ray.errors import DataError
    job = _job_module("imagenet1k")
    with pytest.raises(DataError, match="not a folder"):
        job.stage_input((tmp_path / "nope").as_uri(), tmp_path / "cache", copy_local=True)


def test_imagenet_job_splits_gpus_between_pools_and_refuses_a_cluster_without_gpus():
    from dc3ray.config import ConfigError
    job = _job_module("imagenet1k")
    sizes = lambda *a: dict(o.split("=", 1) for o in job.gpu_overrides(*a))
    # VAE and ResNet-18 pools stream together: they share the GPUs; compensation gets all.
    ov = sizes(8, None, False, True)
    pools = (ov["embed.num_actors"], ov["grad.num_actors"], ov["compensate.num_actors"])
    assert pools == ("7", "1", "8")
    assert ov["eval.workers"] == "4" and ov["eval.use_gpu"] == "true"
    assert sizes(8, None, False, False)["grad.num_actors"] == "8"
    assert sizes(2, 1, False, True)["embed.num_actors"] == "1"  # --gpu-actors wins
    with pytest.raises(ConfigError, match="1 GPU cannot hold"):
        job.gpu_overrides(1, None, False, True)
    with pytest.raises(ConfigError, match="no GPU"):
        job.gpu_overrides(0, None, False, True)
    cpu = sizes(0, None, True, True)
    assert cpu["eval.use_gpu"] == "false"
    assert cpu["embed.num_actors"] == cpu["grad.num_actors"] == "1"


def test_imagenet_preset_streams_two_feature_pools_and_cifar_preset_one():
    from dc3ray.config import CondenseConfig, load_config
    job = _job_module("imagenet1k")
    assert job.two_feature_pools(load_config(CondenseConfig, REPO / "configs" / "imagenet1k.yaml"))
    assert not job.two_feature_pools(load_config(CondenseConfig, REPO / "configs" / "cifar10.yaml"))


def test_evaluate_job_takes_preset_eval_defaults_and_only_its_own_settings():
    from dc3ray.cli import command_config, command_parser
    from dc3ray.config import ConfigError
    parser = command_parser("evaluate", "jobs/evaluate.py")
    base = ["set", "--val", "v", "--out", "o", "--teacher", "t.pt"]
    cfg = command_config(parser.parse_args(
        base + ["--config", str(REPO / "configs" / "imagenet1k.yaml"), "--set", "eval.seeds=1"]))
    assert (cfg.eval.student, cfg.eval.image_size, cfg.eval.seeds, cfg.eval.use_gpu) == \
        ("resnet18", 224, 1, True)
    with pytest.raises(ConfigError, match="select"):
        command_config(parser.parse_args(base + ["--set", "select.ipc=2"]))
