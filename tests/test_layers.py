"""The package layering: the data side never needs torch, `pipeline` and `train` never import
each other, nothing below the app layer imports it, and the shard format lives in one place."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each package may import from the project's own packages and from the heavy libraries.
FORBIDDEN = {
    "weakly_base": {"weakly", "pipeline", "train", "wordnet_tools", "torch", "torchvision", "ray"},
    "wordnet_tools": {"weakly", "pipeline", "train", "torch", "torchvision"},
    "pipeline": {"weakly", "train", "torch", "torchvision"},
    "train": {"weakly", "pipeline"},
}


def _imported_packages(path: Path) -> set[str]:
    """Top-level names of every import in the file, at any depth (lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_layers(package):
    bad = {
        str(path.relative_to(ROOT)): sorted(_imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {f: names for f, names in bad.items() if names} == {}


def test_layer_check_sees_a_lazy_import(tmp_path):
    """The check above would catch an import hidden inside a function."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from train.loop import train\n    import torch.nn\n")
    assert _imported_packages(module) >= {"train", "torch"}


NO_TORCH = textwrap.dedent(
    """
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "cv2"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
    """
)


# Runs each command through `weakly.cli.main` in one interpreter (a subprocess per command
# would spend most of the test starting Pythons) and prints exit codes and stderr as JSON.
DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from weakly.cli import main

    results = []
    for argv in json.loads(sys.argv[1]):
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as exc:  # --help
                code = exc.code
        results.append({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue()})
    print(json.dumps(results))
    """
)


def test_data_side_commands_run_with_torch_absent(tmp_path, lexicon_dir):
    """`weakly[ingest]` without torch: every data-side command works, end to end, on a real
    local Ray whose workers cannot import torch either; a training command says what to
    install in one line. OpenCV is hidden too: ingest then takes the Pillow image path for
    every image (pipeline/fast_images.py is optional)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_TORCH)  # every Python process, Ray workers too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    lex = ["--lexicon-dir", str(lexicon_dir)]
    commands = [
        ["--help"],
        *[[name, "--help"] for name in ("lexicon", "synth", "eval-index", "ingest")],
        ["lexicon", "lookup", "#BrownBear", "--vocab", "in1k", *lex],
        ["synth", "--n", "16", "--out", "syn", "--eval-out", "ev", "--max-px", "400",
         "--eval-images", "4", "--planted-fraction", "0.25"],
        ["eval-index", "build", "--eval", "ev=ev", "--out", "ev.idx"],
        ["ingest", "syn/manifest.parquet", "--out", "ds", "--eval-index", "ev.idx",
         "--num-cpus", "1", "--no-progress", "--shard-size", "8", *lex],
        ["train", "--data", "ds", "--model", "tiny", "--out", "run", "--steps", "1"],
        ["eval", "--help"],
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True
    )
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr
    done = subprocess.run(
        [sys.executable, "-c", "from pipeline import fast_images; print(fast_images.available())"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(commands)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for r in results[:-2]:
        assert r["code"] in (0, None), (r["argv"], r["err"])
    assert "n02132136" in results[5]["out"]
    assert (tmp_path / "ds" / "dataset.json").exists()
    assert list((tmp_path / "ds" / "shards").glob("train-*.tar"))
    for r in results[-2:]:
        lines = r["err"].strip().splitlines()
        assert r["code"] == 2 and len(lines) == 1, (r["argv"], r["err"])
        assert "'torch'" in lines[0] and "weakly[train]" in lines[0]
