"""The container and cluster files in docker/, checked without a Docker engine: hadolint on both
Dockerfiles, Ray's own schema on the launcher YAML, and every command in compose.yaml, the
launcher YAML and the sbatch script parsed by the real parser of the tool it calls."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
HADOLINT = str(Path(sys.executable).with_name("hadolint"))


def _hadolint(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [HADOLINT, "--no-color", *map(str, files)], capture_output=True, text=True, timeout=60
    )


def test_hadolint_is_clean_on_both_dockerfiles():
    proc = _hadolint(DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_really_checks(tmp_path):
    """The clean result above means something: the same linter flags a careless Dockerfile."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y wordnet\n")
    proc = _hadolint(bad)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3008" in proc.stdout


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_run_as_non_root_and_copy_what_exists(name):
    text = (DOCKER / name).read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    ignore = (ROOT / ".dockerignore").read_text().split()
    for sources in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.M):
        for src in sources.split():
            assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"
            assert f"!{src}" in ignore or f"!{src}/" in ignore or src.startswith("docker/")
    for req in re.findall(r"docker/(requirements[^ ]*\.txt)", text):
        lines = [x for x in (DOCKER / req).read_text().splitlines() if x and x[0] != "#"]
        assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[\w.]+", x) for x in lines)


def _ray_start(command: str) -> None:
    """Parse a `ray start ...` line with Ray's own CLI definition (nothing is started)."""
    from ray.scripts.scripts import start

    words = shlex.split(command.split(";")[-1])
    assert words[:2] == ["ray", "start"], command
    args = [w.replace("$RAY_HEAD_IP", "10.0.0.1") for w in words[2:]]
    start.make_context("start", args)  # raises click.UsageError on an unknown or bad option


def _weakly(command: str) -> None:
    from weakly.cli import parse

    words = shlex.split(command)
    assert words[0] == "weakly", command
    args = parse(words[1:])  # SystemExit on a bad flag
    assert callable(args.func)


def _names(requirements: list[str]) -> set[str]:
    """Distribution names, normalised, without versions or extras."""
    return {
        re.split(r"[\[<>=;\s]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements
    }


def test_cpu_image_is_the_ingest_extra_alone():
    """The CPU image pins exactly pyproject's core dependencies plus the `ingest` extra (with
    the extras it names), so it runs every data-side command and carries no torch."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = list(project["dependencies"])
    for req in extras["ingest"]:
        m = re.fullmatch(r"weakly\[(\w+)\]", req)
        wanted += extras[m.group(1)] if m else [req]
    pinned = [
        x for x in (DOCKER / "requirements.txt").read_text().splitlines() if x and x[0] != "#"
    ]
    assert _names(pinned) == _names(wanted)
    assert not _names(pinned) & {"torch", "torchvision"}


def test_compose_services_and_commands():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"ray-head", "ray-worker", "demo-ingest"}
    for service in services.values():
        assert (
            ROOT / "docker" / service["build"]["context"] / service["build"]["dockerfile"]
        ).exists()
        assert "data:/data" in service["volumes"]
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
    _ray_start(services["ray-head"]["command"])
    _ray_start(services["ray-worker"]["command"])
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    submit = shlex.split(services["demo-ingest"]["command"])
    assert submit[:3] == ["ray", "job", "submit"] and "--" in submit
    script_path = submit[submit.index("--") + 2]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["ray-head"]["volumes"]}
    script = DOCKER / mounted[script_path]  # the job runs on the head: the script must be there
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    lines = [x for x in script.read_text().splitlines() if x.startswith("weakly ")]
    for line in lines:
        _weakly(line)
    assert [x.split()[1] for x in lines] == ["synth", "eval-index", "ingest"]
    assert "--address auto" in lines[-1]


def test_ray_launcher_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((DOCKER / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert config["docker"]["image"].endswith(":cpu-0.1.0")
    for line in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in line:
            _ray_start(line)


def test_sbatch_script_is_valid_bash_and_its_torchrun_line_parses():
    from torch.distributed.run import get_args_parser

    from train.cli import build_parser
    from train.config import TrainConfig
    from weakly_base.config import parse_with_config

    path = DOCKER / "train.sbatch"
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    text = path.read_text()
    assert re.search(r"^#SBATCH --nodes=\d+", text, re.M)
    command = re.search(r"^srun .*?(torchrun .*?)(?:\n\n|\Z)", text, re.M | re.S).group(1)
    values = {"$SLURM_NNODES": "4", "$HEAD_NODE": "node1", "$SLURM_JOB_ID": "7", "$DATA": "d"}
    values["$RUN"] = "r"
    flat = command.replace("\\\n", " ")
    for var, value in values.items():
        flat = flat.replace(var, value)
    words = shlex.split(flat)[1:]
    launcher = get_args_parser().parse_args(words)
    assert (launcher.nnodes, launcher.rdzv_backend, launcher.module) == ("4", "c10d", True)
    assert launcher.training_script == "train"
    args = parse_with_config(build_parser(), launcher.training_script_args)
    args = TrainConfig.from_namespace(args).validated()
    assert args.resume == "auto" and args.data == "d" and args.out == "r"
