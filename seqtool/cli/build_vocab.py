"""`seqtool build-vocab`: learn a char, word, bpe or unigram tokenizer from a corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from seqtool.cli.options import EncodingErrors, Json, Seed, Workspace, pick, reporter
from seqtool.cli.tokenize import MaxLineChars
from seqtool.data.tokenizers import KINDS


def build_vocab(
    ctx: typer.Context,
    corpus: Annotated[
        Optional[list[str]],
        typer.Argument(help="Text files, globs, .gz files, or - for stdin.", show_default=False),
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Directory to write the tokenizer to.")
    ] = None,
    workspace: Workspace = None,
    kind: Annotated[Literal[KINDS], typer.Option("--kind", help="Tokenizer to learn.")] = "bpe",
    vocab_size: Annotated[
        Optional[int],
        typer.Option("--vocab-size", help="Pieces, specials included: a cap for char/word (default: all), "
                     "the target for bpe/unigram (default: 8000).", show_default=False),
    ] = None,
    min_count: Annotated[
        Optional[int], typer.Option("--min-count", help="char/word: rarer pieces become <unk> [default: 1].")
    ] = None,
    lowercase: Annotated[bool, typer.Option("--lowercase", help="Lower-case the text first.")] = False,
    character_coverage: Annotated[
        float, typer.Option("--character-coverage",
                            help="bpe/unigram: share of characters kept (0.9995 suits large alphabets).")
    ] = 1.0,
    user_symbols: Annotated[
        Optional[str],
        typer.Option("--user-symbols", help="Comma-separated tokens kept whole, e.g. <sep>,<cls>."),
    ] = None,
    sample: Annotated[
        Optional[int], typer.Option("--sample", help="Learn from N lines sampled at random (seeded).")
    ] = None,
    stats_lines: Annotated[
        int, typer.Option("--stats-lines", help="Measure the <unk> rate and the most frequent pieces on at "
                          "most N lines: a seeded random sample of a bigger corpus (0: every line).")
    ] = 100_000,
    seed: Seed = None,
    src: Annotated[Optional[str], typer.Option("--src", help="Parallel data: the source-side file.")] = None,
    tgt: Annotated[Optional[str], typer.Option("--tgt", help="Parallel data: the target-side file.")] = None,
    joint: Annotated[
        bool,
        typer.Option("--joint", help="With --src/--tgt: one tokenizer for both (else DIR/src, DIR/tgt)."),
    ] = False,
    encoding_errors: EncodingErrors = "strict",
    max_line_chars: MaxLineChars = 1_000_000,
    force: Annotated[bool, typer.Option("--force", help="Replace the tokenizer of a trained workspace (its "
                                        "model will no longer match it).")] = False,
    as_json: Json = False,
) -> None:
    """Learn a tokenizer from a corpus and save it to a directory (or a workspace's tokenizer/).

    Example: seqtool build-vocab corpus.txt --kind bpe --vocab-size 8000 -o tok/
    """
    from seqtool.data.io import check_encoding_errors, describe, require_nonempty, sample_lines, two_passes
    from seqtool.data.tokenizers import KINDS, save_tokenizers, train_tokenizer
    from seqtool.errors import InputError

    if kind not in KINDS:
        raise InputError(f"unknown --kind {kind!r}", hint=f"choose one of {', '.join(KINDS)}")
    check_encoding_errors(encoding_errors)
    if stats_lines < 0:
        raise InputError(f"--stats-lines must be 0 (every line) or a positive number of lines, not "
                         f"{stats_lines}", hint="e.g. --stats-lines 100000")
    sides = _sides(corpus, src, tgt, joint)
    target, ws = _target(ctx, output, workspace, force)
    rep = reporter(ctx)
    if min_count is not None and kind in ("bpe", "unigram"):
        rep.warn("--min-count applies to char and word tokenizers only; ignored")
    options = dict(vocab_size=vocab_size, min_count=1 if min_count is None else min_count,
                   lowercase=lowercase, character_coverage=character_coverage, sample=sample,
                   seed=pick(seed, ctx, "seed") or 0,
                   user_symbols=[s.strip() for s in (user_symbols or "").split(",") if s.strip()])

    tokenizers, stats = {}, {}
    for side, paths in sides.items():
        with two_passes(paths, encoding_errors, max_line_chars) as (lines, again):
            tok = train_tokenizer(kind, require_nonempty(lines, describe(paths)), **options)
            # Statistics over what was learnt from: the corpus, or the same seeded sample of it.
            learnt = again() if sample is None else iter(sample_lines(again(), sample, options["seed"]))
            tokenizers[side], stats[side] = tok, _stats(tok, learnt, stats_lines, options["seed"])
        stats[side]["corpus"] = describe(paths)
    _check_parallel(stats, rep)
    with _workspace_lock(ws):
        save_tokenizers(target, tokenizers)

    if as_json:
        typer.echo(json.dumps({"output": str(target), **stats.get("", stats)}))
    if not rep.quiet:
        for side, st in stats.items():
            _report(rep, st, target / side)


def _sides(corpus: list[str] | None, src: str | None, tgt: str | None, joint: bool) -> dict[str, list[str]]:
    from seqtool.errors import InputError

    if (src is None) != (tgt is None):
        raise InputError("--src and --tgt go together", hint="pass both files of the parallel corpus")
    if src is not None:
        if corpus:
            raise InputError("pass either CORPUS files or --src/--tgt, not both")
        if src == tgt == "-":
            raise InputError("--src and --tgt cannot both be stdin")
        return {"": [src, tgt]} if joint else {"src": [src], "tgt": [tgt]}
    if joint:
        raise InputError("--joint needs --src and --tgt")
    if not corpus:
        raise InputError("no corpus given",
                         hint="pass text files, e.g. seqtool build-vocab corpus.txt -o tok/")
    return {"": corpus}


def _target(ctx: typer.Context, output: Path | None, workspace: Path | None,
            force: bool) -> tuple[Path, Path | None]:
    """(the tokenizer directory to write, the workspace it belongs to or None). A trained workspace's
    tokenizer is replaced only with --force: its model would no longer match the new vocabulary."""
    from seqtool.errors import InputError
    from seqtool.workspace import TOKENIZER_DIR, is_workspace
    from seqtool.workspace import Workspace as WS

    ws = pick(workspace, ctx, "workspace")
    if output is not None and ws is not None:
        raise InputError("pass either -o DIR or -w WORKSPACE, not both")
    if output is None and ws is None:
        raise InputError("no output directory",
                         hint="pass -o DIR, or -w WORKSPACE to write WORKSPACE/tokenizer/")
    if output is not None and is_workspace(output):
        raise InputError(f"-o {output} is a workspace, not a tokenizer directory",
                         hint=f"pass -w {output} to write its tokenizer/, or a new -o directory")
    if output is not None and Path(output).name == TOKENIZER_DIR and is_workspace(Path(output).parent):
        ws = Path(output).parent  # -o WS/tokenizer: the same as -w WS
    if ws is None:
        return Path(output), None
    if not force and is_workspace(ws) and ((run := WS.open(ws)).has_weights() or run.checkpoint_dirs()):
        raise InputError(f"workspace {ws} holds a trained {run.kind} model: a new tokenizer would no longer "
                         "match it", hint="write to a new -o directory and train with -t DIR, or pass "
                         "--force to replace it anyway")
    return Path(ws) / TOKENIZER_DIR, Path(ws)


def _workspace_lock(ws: Path | None):
    """Hold the workspace's lock while its tokenizer is replaced, if it is a workspace already."""
    import contextlib

    from seqtool.lock import WorkspaceLock
    from seqtool.workspace import is_workspace

    if ws is None or not is_workspace(ws):
        return contextlib.nullcontext()
    return WorkspaceLock.of(ws)


def _stats(tok, lines, limit: int, seed: int) -> dict:
    """corpus_stats over `lines`, or over a seeded sample of `limit` of them when there are more: encoding
    a whole big corpus again only to report its <unk> rate would cost as much as tokenizing it.
    "lines" stays the number of lines read; "measured_lines" says how many were encoded."""
    from seqtool.data.io import sample_lines
    from seqtool.data.tokenized import corpus_stats

    if not limit:
        return corpus_stats(tok, lines)
    total = 0

    def counted():
        nonlocal total
        for total, line in enumerate(lines, 1):  # noqa: B007 (total is read after the loop)
            yield line

    measured = sample_lines(counted(), limit, seed)
    stats = corpus_stats(tok, measured)
    if total > stats["lines"]:
        stats.update(lines=total, measured_lines=len(measured))
    return stats


def _check_parallel(stats: dict, rep) -> None:
    if "src" in stats and stats["src"]["lines"] != stats["tgt"]["lines"]:
        rep.warn(f"--src has {stats['src']['lines']:,} lines but --tgt has {stats['tgt']['lines']:,}; "
                 "parallel files should align line by line")


def _report(rep, st: dict, directory: Path) -> None:
    from rich.table import Table
    from rich.text import Text

    rep.info(f"{st['kind']} tokenizer, {st['vocab_size']:,} pieces → {directory}")
    lines = (f"a seeded sample of {st['measured_lines']:,} of {st['lines']:,} lines (--stats-lines)"
             if "measured_lines" in st else f"{st['lines']:,} lines")
    rep.info(f"<unk> rate on {st['corpus']}: {st['unk_rate']:.3%} "
             f"({st['unk']:,} of {st['tokens']:,} tokens, {lines})")
    if rep.log_format == "json":
        return
    table = Table(title="most frequent tokens", title_justify="left")
    for column in ("id", "piece", "count"):
        table.add_column(column, justify="left" if column == "piece" else "right")
    for row in st["top"]:
        piece = row["piece"] if row["piece"].isprintable() else repr(row["piece"])
        table.add_row(str(row["id"]), Text(piece), f"{row['count']:,}")
    rep.console.print(table)
