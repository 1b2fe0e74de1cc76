"""`weakly lexicon ...`: build, look up and describe the compiled lexicon (thin over the API)."""

from __future__ import annotations

import argparse
import json
import sys

from .lexicon import load_lexicon
from .locate import WordNetNotFound, locate_wordnet
from .store import build_lexicon


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    lexicon = subparsers.add_parser("lexicon", help="WordNet lexicon: build, lookup, stats")
    commands = lexicon.add_subparsers(dest="lexicon_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--wordnet-dir", help="WordNet 3.0 folder (else WEAKLY_WORDNET, NLTK data, Debian)"
        )
        p.add_argument(
            "--lexicon-dir", help="a compiled lexicon folder to use instead of the cache"
        )

    def senses(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--vocab", default="nouns", help="in1k | in21k | nouns (top:K needs corpus counts)"
        )
        p.add_argument(
            "--sense-overrides",
            metavar="FILE",
            help="CSV of hashtag,synset[,reason] rows that beat the visual sense choice and the "
            "shipped overrides (synset: a wnid or a WordNet name like crane.n.05)",
        )

    build = commands.add_parser("build", help="compile the lexicon (once; cached)")
    common(build)
    build.add_argument("--out", help="write the compiled lexicon here instead of the cache")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(func=_build)

    lookup = commands.add_parser("lookup", help="print tag -> synset id, name, how it matched")
    common(lookup)
    lookup.add_argument(
        "tags", nargs="*", help="tags; '-' or none reads one tag per line from stdin"
    )
    senses(lookup)
    lookup.add_argument("--json", action="store_true", help="one JSON object per tag")
    lookup.add_argument(
        "--explain",
        action="store_true",
        help="also list every candidate sense with the parts of its visual score",
    )
    lookup.set_defaults(func=_lookup)

    stats = commands.add_parser("stats", help="sizes and ambiguity of the lexicon")
    common(stats)
    senses(stats)
    stats.set_defaults(func=_stats)


def _build(args: argparse.Namespace) -> int:
    folder = build_lexicon(
        out=args.out or args.lexicon_dir, wordnet_dir=args.wordnet_dir, force=args.force
    )
    print(folder)
    return 0


def _read_stdin_tags() -> list[str]:
    raw = sys.stdin.buffer.read()
    tags = []
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            tags.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            print(f"stdin line {number}: not UTF-8, skipped", file=sys.stderr)
    return tags


def _load(args: argparse.Namespace):
    return load_lexicon(
        args.vocab,
        lexicon_dir=args.lexicon_dir,
        wordnet_dir=args.wordnet_dir,
        sense_overrides=args.sense_overrides,
    )


def _lookup(args: argparse.Namespace) -> int:
    lex = _load(args)
    tags = args.tags if args.tags and args.tags != ["-"] else _read_stdin_tags()
    for tag in tags:
        match = lex.explain(tag)
        if args.json:
            fields = dict(match.__dict__)
            if not args.explain:
                fields.pop("candidates")
            print(json.dumps(fields, ensure_ascii=False))
            continue
        if match.wnid is None:
            print(f"{tag}\t-\t-\t{match.how}")
        elif match.lemma is None:
            print(f"{tag}\t{match.wnid}\t{match.name}\t{match.decided_by}")
        else:
            detail = (
                f"{match.how} of {match.lemma}, sense {match.sense_rank + 1} of "
                f"{match.n_senses}; {match.decided_by}"
            )
            print(f"{tag}\t{match.wnid}\t{match.name}\t{detail}")
        if args.explain:
            for line in explain_lines(match):
                print(line)
    return 0


def explain_lines(match) -> list[str]:
    """The candidate table under a lookup line: best first, the chosen one marked."""
    lines = []
    for c in match.candidates:
        mark = "*" if c["wnid"] == match.wnid else " "
        vocab = "" if c["in_vocab"] else "  (not in vocabulary)"
        parts = " ".join(f"{k}{v:+g}" for k, v in c["parts"].items())
        lines.append(
            f"  {mark} {c['score']:6.2f}  {c['wnid']} {c['name']:<24} {c['lexname']:<18} "
            f"{c['kind']} sense {c['sense_rank'] + 1}: {parts}{vocab}"
        )
    return lines


def _stats(args: argparse.Namespace) -> int:
    lex = _load(args)
    for key, value in lex.stats().items():
        print(f"{key}\t{value}")
    return 0


def locate_main(argv: list[str] | None = None) -> int:
    """`python -m wordnet_tools locate`: exit 0 and print where WordNet is, else 1 and why."""
    try:
        source = locate_wordnet()
    except WordNetNotFound as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{source.origin}\t{source.path}")
    return 0
