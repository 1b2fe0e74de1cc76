"""`weakly lexicon ...` end to end through the real entry point."""

from __future__ import annotations

import io
import json
import sys

from weakly.cli import main


def test_lookup_prints_id_name_and_how(lexicon_dir, capsys):
    assert (
        main(
            ["lexicon", "lookup", "--lexicon-dir", str(lexicon_dir), "#BrownBear", "geese", "#2020"]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[:3] == ["#BrownBear", "n02132136", "brown_bear"]
    assert "lemma of brown_bear" in lines[0]
    assert "inflection of goose" in lines[1]
    assert lines[2].endswith("not a word")


def test_lookup_json_and_vocab(lexicon_dir, capsys):
    main(
        [
            "lexicon",
            "lookup",
            "--lexicon-dir",
            str(lexicon_dir),
            "--vocab",
            "in1k",
            "--json",
            "plane",
        ]
    )
    match = json.loads(capsys.readouterr().out)
    assert match["wnid"] == "n03954731" and match["n_in_vocab"] == 1


def test_lookup_reads_stdin_and_reports_undecodable_lines(lexicon_dir, capsys, monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO(b"#sofa\n\xff\xfe\ncouch\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["lexicon", "lookup", "--lexicon-dir", str(lexicon_dir)]) == 0
    captured = capsys.readouterr()
    assert [line.split("\t")[1] for line in captured.out.splitlines()] == ["n04256520", "n04256520"]
    assert "stdin line 2: not UTF-8" in captured.err


def test_stats_and_bad_vocab(lexicon_dir, capsys):
    assert main(["lexicon", "stats", "--lexicon-dir", str(lexicon_dir), "--vocab", "in1k"]) == 0
    stats = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert stats["synsets_in_vocabulary"] == "1000" and int(stats["ambiguous_forms"]) > 1000
    assert main(["lexicon", "stats", "--lexicon-dir", str(lexicon_dir), "--vocab", "top:x"]) == 2
    assert "in1k, in21k, nouns, or top:K" in capsys.readouterr().err


def test_build_to_folder_and_not_a_lexicon(tmp_path, lexicon_dir, capsys):
    assert main(["lexicon", "stats", "--lexicon-dir", str(tmp_path)]) == 2
    assert "not a compiled lexicon" in capsys.readouterr().err
    assert main(["lexicon", "build", "--out", str(lexicon_dir)]) == 0  # already built: reused
    assert capsys.readouterr().out.strip() == str(lexicon_dir)
