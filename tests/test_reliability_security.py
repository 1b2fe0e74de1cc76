"""Nobody gets in: no code runs from checkpoints or configs, no shell, and the shard reader never
touches the filesystem with member names. Part static (the source never calls what could run
code), part live (hostile files are refused and their payload never runs)."""

from __future__ import annotations

import ast
import io
import os
import tarfile
from pathlib import Path

import pytest
import torch

from train.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, sha256_file
from train.shards import iter_tar_samples

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "train", "wordnet_tools", "benchmarks")


def _calls():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    yield f"{path.relative_to(ROOT)}:{node.lineno}", node


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return ""


def _kw(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_source_never_calls_what_runs_code():
    banned = {"eval", "exec", "compile", "os.system", "os.popen", "pickle.load", "pickle.loads",
              "yaml.load", "yaml.unsafe_load", "yaml.full_load", "marshal.loads", "__import__",
              "tar.extractall", "tar.extract", "shutil.unpack_archive"}  # fmt: skip
    found = []
    for where, node in _calls():
        name = _name(node.func)
        if name in banned or name.endswith((".extractall", ".unpack_archive")):
            found.append(f"{where} {name}()")
        if _kw(node, "shell") is True:
            found.append(f"{where} shell=True")
        if name == "torch.load" and _kw(node, "weights_only") is not True:
            found.append(f"{where} torch.load without weights_only=True")
        if name.endswith("np.load") and _kw(node, "allow_pickle") is not False:
            found.append(f"{where} np.load without allow_pickle=False")
    assert not found, found


def test_the_static_check_sees_what_it_bans(tmp_path):
    """The walker must not be blind: the same rules flag a file full of offences."""
    code = "import torch, yaml, os\ntorch.load(f)\nyaml.load(s)\nos.system('x')\neval('1')\n"
    tree = ast.parse(code)
    names = [_name(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert {"torch.load", "yaml.load", "os.system", "eval"} <= set(names)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "owned"
    path = checkpoint_path(tmp_path / "run", 7)
    path.parent.mkdir(parents=True)
    torch.save({"step": 7, "model": _Payload(marker)}, path)
    # a valid checksum: the attacker controls the whole folder
    path.with_name(path.name + ".sha256").write_text(f"{sha256_file(path)}  {path.name}\n")
    assert latest_checkpoint(tmp_path / "run") == path
    with pytest.raises(ValueError, match="not a loadable weakly checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def _yaml_bomb(tmp_path: Path, marker: Path) -> Path:
    config = tmp_path / "evil.yaml"
    config.write_text(f'steps: !!python/object/apply:os.system ["touch {marker}"]\n')
    return config


def test_yaml_configs_cannot_run_code(tmp_path, capsys):
    from train.cli import main as train
    from weakly.cli import main as weakly

    marker = tmp_path / "owned"
    config = _yaml_bomb(tmp_path, marker)
    assert weakly(["ingest", "--config", str(config)]) == 2
    assert train(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count(str(config)) == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2  # one line each
    assert not marker.exists()


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = size, kind, link
    return info


def test_tar_reader_never_touches_the_filesystem(tmp_path, monkeypatch):
    jpg, meta = b"\xff\xd8 not decoded here \xff\xd9", b'{"labels": [2], "weight": 1.0}'
    members = [
        (_info("/etc/evil.jpg", len(jpg)), jpg),
        (_info("/etc/evil.json", len(meta)), meta),
        (_info("../../up.jpg", len(jpg)), jpg),
        (_info("../../up.json", len(meta)), meta),
        (_info("link.jpg", kind=tarfile.SYMTYPE, link="/etc/passwd"), None),
        (_info("link.json", len(meta)), meta),
        (_info("hard.jpg", kind=tarfile.LNKTYPE, link="/etc/shadow"), None),
        (_info("hard.json", len(meta)), meta),
        (_info("dev.jpg", kind=tarfile.CHRTYPE), None),
        (_info("dev.json", len(meta)), meta),
        (_info("dir.jpg", kind=tarfile.DIRTYPE), None),
        (_info("fifo.jpg", kind=tarfile.FIFOTYPE), None),
        (_info("huge.jpg", 3 << 20), b"\0" * (3 << 20)),
        (_info("huge.json", len(meta)), meta),
        (_info("ok.jpg", len(jpg)), jpg),
        (_info("ok.json", len(meta)), meta),
    ]
    stream = _tar(members)
    monkeypatch.chdir(tmp_path)
    opened = []
    real_open = open

    def spy(file, *args, **kwargs):  # the reader gets a stream; it must never open a path
        opened.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    got = list(iter_tar_samples(stream, max_member_bytes=1 << 20))
    monkeypatch.undo()
    assert [s.key for s in got] == ["ok"] and got[0].jpg == jpg
    assert opened == [] and list(tmp_path.iterdir()) == []
