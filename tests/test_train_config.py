"""TrainConfig: one set of defaults for the parser and the Python API, the order in which the
command line, `--config` and the defaults win, and log files closed when a run stops early."""

from __future__ import annotations

import gc
import io
import json
from argparse import Namespace
from dataclasses import asdict, fields, replace

import pytest
import torch

import train.loop
import weakly.cli
from train.cli import build_parser
from train.cli import main as train_main
from train.config import DEFAULTS, TrainConfig
from train.loop import NonFiniteLoss
from weakly.fixtures import build_fixture

torch.set_num_threads(1)
REQUIRED = ["--data", "d", "--model", "tiny", "--out", "o", "--steps", "3"]


def test_parser_dests_and_defaults_are_the_dataclass_fields():
    actions = [a for a in build_parser()._actions if a.dest not in ("help", "config")]
    assert [a.dest for a in actions] == [f.name for f in fields(TrainConfig)]
    assert {a.dest: a.default for a in actions} == asdict(DEFAULTS)
    assert DEFAULTS.workers >= 1 and DEFAULTS.draft is True and DEFAULTS.eval is True


def test_from_namespace_ignores_other_attributes():
    args = Namespace(**asdict(DEFAULTS), config=None, func=print, command="train")
    assert TrainConfig.from_namespace(args) == DEFAULTS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": None}, "--data is required"),
        ({"out": ""}, "--out is required"),
        ({"steps": None}, "give --steps, --samples or --epochs"),
        ({"samples": 10}, "give one of --steps, --samples, --epochs, not --steps and --samples"),
        ({"epochs": 2}, "give one of --steps, --samples, --epochs, not --steps and --epochs"),
        ({"steps": None, "epochs": 0}, "--epochs must be at least 1, not 0"),
        ({"open_shards": 0}, "--open-shards must be at least 1, not 0"),
        ({"reset_head": True}, "--reset-head needs --init CKPT"),
        ({"batch_size": 0}, "--batch-size must be at least 1, not 0"),
        ({"eval_max_samples": 0}, "--eval-max-samples must be at least 1, not 0"),
        ({"loss": "hinge"}, "--loss must be one of softmax, bce, not 'hinge'"),
    ],
)
def test_validated_names_the_flag(change, message):
    good = TrainConfig(data="d", model="tiny", out="o", steps=3)
    assert good.validated() is good
    with pytest.raises(ValueError) as exc:
        replace(good, **change).validated()
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


@pytest.fixture
def trained(monkeypatch):
    """The TrainConfigs that `train` was called with, instead of training."""
    calls: list[TrainConfig] = []
    monkeypatch.setattr(train.loop, "train", lambda config: calls.append(config) or {})
    return calls


def _both(argv: list[str]) -> list[int]:
    """Exit codes of `python -m train ARGV` and `weakly train ARGV`."""
    return [train_main(argv), weakly.cli.main(["train", *argv])]


def test_flag_given_with_its_default_value_beats_the_config_file(tmp_path, trained):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("batch_size: 3\nschedule: step\nlr: 0.5\n")
    argv = [*REQUIRED, "--config", str(cfg), "--batch-size", "32", "--schedule", "cosine"]
    assert _both(argv) == [0, 0]
    for config in trained:
        assert (config.batch_size, config.schedule, config.lr) == (32, "cosine", 0.5)
    assert len(trained) == 2


def test_config_file_beats_the_default_when_the_flag_is_absent(tmp_path, trained):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"batch-size": 3, "eval": False, "samples": 90}))
    assert _both(["--data", "d", "--model", "tiny", "--out", "o", "--config", str(cfg)]) == [0, 0]
    for config in trained:
        assert (config.batch_size, config.eval, config.samples, config.steps) == (
            3,
            False,
            90,
            None,
        )
        assert config.workers == DEFAULTS.workers
    assert len(trained) == 2


@pytest.mark.parametrize(
    ("text", "words"),
    [("batch_size: 4\nbatch_sise: 3\n", ["unknown", "batch_sise"]), ("batch_size: many\n", ["batch_size", "many"])],
)  # fmt: skip
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, capsys, trained, text, words):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert _both([*REQUIRED, "--config", str(cfg)]) == [2, 2]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("train: error:") and lines[1].startswith("weakly train: error:")
    for line in lines:
        assert str(cfg) in line and all(w in line for w in words), line
    assert len(lines) == 2 and not trained


def _open_files(path) -> list:
    return [o for o in gc.get_objects() if type(o) is io.TextIOWrapper and o.name == str(path)]


def test_log_files_are_closed_and_flushed_when_a_step_is_not_finite(tmp_path, monkeypatch):
    """The third step's loss is NaN: the run stops with NonFiniteLoss, and while the exception
    (and with it the loop's frames) is still alive, every log file is closed and holds the
    rows of the steps before it."""
    data = build_fixture(tmp_path / "ds", samples=24, seed=4, max_side=40)
    real = train.loop.get_loss

    def poisoned(name):
        loss_fn, calls = real(name), []

        def loss(logits, targets):
            calls.append(1)
            value = loss_fn(logits, targets)
            return value * float("nan") if len(calls) == 3 else value

        return loss

    monkeypatch.setattr(train.loop, "get_loss", poisoned)
    out = tmp_path / "run"
    config = TrainConfig(
        data=str(data), model="tiny", out=str(out), steps=5, batch_size=4, image_size=16,
        device="cpu", workers=0, shuffle_buffer=8, log_every=1, record_keys=True, eval=False,
    )  # fmt: skip
    with pytest.raises(NonFiniteLoss, match="at step 3") as excinfo:
        train.loop.train(config)
    assert excinfo.value.__traceback__ is not None
    for name in ("metrics.jsonl", "keys-rank0.jsonl"):
        path = out / name
        assert all(f.closed for f in _open_files(path)), name
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2], name


def test_epochs_set_the_run_length_and_say_when_too_short(fixture_dataset, tmp_path, capsys):
    """`--epochs 2`: the run takes the first two epochs' exact sample counts over the global
    batch (rounded down) in steps, and the keys it trained on are those two epochs' (all but
    the remainder); an epoch smaller than one global batch is one line."""
    from collections import Counter

    from train.cli import main as train_main
    from train.data import epoch_keys, make_plan
    from train.epoch_plan import steps_for_epochs
    from train.shards import Dataset

    data = str(fixture_dataset(samples=200, seed=1))  # weights sum to ~39 per epoch
    out = tmp_path / "run"
    argv = ["--data", data, "--model", "tiny", "--out", str(out), "--epochs", "2",
            "--batch-size", "6", "--image-size", "16", "--device", "cpu", "--workers", "0",
            "--shuffle-buffer", "1", "--log-every", "1", "--record-keys", "--no-eval"]  # fmt: skip
    assert train_main(argv) == 0
    plan = make_plan(Dataset(data), 0, "weighted", 1)
    steps = steps_for_epochs(plan, 2, 6)
    assert json.loads((out / "config.json").read_text())["total_steps"] == steps >= 10
    rows = [json.loads(x) for x in (out / "keys-rank0.jsonl").read_text().splitlines()]
    trained = Counter(k for r in rows for k in r["keys"])
    both = Counter(epoch_keys(data, 0)[0]) + Counter(epoch_keys(data, 1)[0])
    assert sum(trained.values()) == 6 * steps and not trained - both  # within the 2 epochs
    capsys.readouterr()
    big = [*argv[:5], str(tmp_path / "big"), *argv[6:]]
    big[big.index("--batch-size") + 1] = "64"
    big[big.index("--epochs") + 1] = "1"
    assert train_main(big) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "less than one global batch of 64" in err, err
