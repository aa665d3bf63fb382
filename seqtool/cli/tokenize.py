"""`seqtool tokenize`: text → pieces, ids or JSON lines (and back with --decode), streamed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from seqtool.cli.options import EncodingErrors, global_options, reporter
from seqtool.data.tokenized import FORMATS

MaxLineChars = Annotated[
    int, typer.Option("--max-line-chars", help="Longest line accepted, in characters.")
]


def tokenize(
    ctx: typer.Context,
    files: Annotated[
        Optional[list[str]],
        typer.Argument(help="Text files, globs or .gz files; - or nothing reads stdin.", show_default=False),
    ] = None,
    tokenizer: Annotated[
        Optional[Path],
        typer.Option("--tokenizer", "-t", help="Tokenizer directory (from build-vocab) or a workspace.",
                     show_default=False),
    ] = None,
    side: Annotated[
        Optional[Literal["src", "tgt"]], typer.Option("--side", help="The tokenizer of a parallel workspace.")
    ] = None,
    fmt: Annotated[Literal[(*FORMATS, "store")], typer.Option(
        "--format", help="What to write; store: a token store in -o DIR for train-* --data-store DIR "
        "(encoded once, in parallel, memory-mapped by every run and rank).")] = "pieces",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="--format store: the store "
                                                   "directory (created; other corpora in it are kept).",
                                                   show_default=False)] = None,
    src: Annotated[Optional[str], typer.Option("--src", help="--format store: the source side of parallel "
                                               "text (with --tgt), for train-seq2seq / encoder-decoder "
                                               "--data-store DIR.", show_default=False)] = None,
    tgt: Annotated[Optional[str], typer.Option("--tgt", help="--format store: the target side (line-aligned "
                                               "with --src).", show_default=False)] = None,
    tsv: Annotated[Optional[str], typer.Option("--tsv", help="--format store: parallel text as one "
                                               "source<TAB>target file.", show_default=False)] = None,
    prune: Annotated[bool, typer.Option("--prune", help="--format store: also remove the entries of -o DIR "
                                        "built earlier from any of these files (their older contents, "
                                        "another tokenizer); other corpora's entries are kept.")] = False,
    decode: Annotated[bool, typer.Option("--decode", help="Turn ids or pieces back into text.")] = False,
    source: Annotated[Literal[FORMATS], typer.Option("--from", help="What --decode reads.")] = "ids",
    add_bos: Annotated[bool, typer.Option("--add-bos", help="Start every line with <s>.")] = False,
    add_eos: Annotated[bool, typer.Option("--add-eos", help="End every line with </s>.")] = False,
    encoding_errors: EncodingErrors = "strict",
    max_line_chars: MaxLineChars = 1_000_000,
) -> None:
    """Tokenize text, one output line per input line (empty lines kept).

    Example: seqtool tokenize corpus.txt -t tok/ --format ids | seqtool tokenize -t tok/ --decode --from ids

    Before a batch job: seqtool tokenize big/*.txt -t tok/ --format store -o /scratch/store, then
    seqtool train-transformer big/*.txt -t tok/ --data-store /scratch/store ... After the corpus or the
    tokenizer changed, add --prune to drop its older entries (a workspace's own WS/store prunes itself).

    Parallel text (a translation workspace or tokenizer with src/ and tgt/): seqtool tokenize --src train.en
    --tgt train.fr -t runs/enfr --format store -o /scratch/store, then train-seq2seq or train-transformer
    --arch encoder-decoder --src train.en --tgt train.fr -t runs/enfr --data-store /scratch/store ...
    """
    from seqtool.data.io import iter_lines, open_output
    from seqtool.data.tokenized import StreamStats, decode_lines, encode_lines
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.errors import InputError

    workspace = global_options(ctx).workspace  # `seqtool -w WS tokenize`: the workspace's tokenizer
    tokenizer = tokenizer or (Path(workspace) if workspace else None)
    if tokenizer is None:
        raise InputError("no tokenizer given", hint="pass -t DIR, a directory written by seqtool build-vocab")
    if decode and (add_bos or add_eos):
        raise InputError("--add-bos and --add-eos apply only when encoding", hint="drop them with --decode")
    if prune and fmt != "store":
        raise InputError("--prune goes with --format store",
                         hint="pass --format store -o DIR, or drop --prune")
    if src or tgt or tsv:
        if fmt != "store" or files or side:
            raise InputError("--src, --tgt and --tsv go with --format store (without FILES or --side)",
                             hint="pass --format store -o DIR, or tokenize each side as FILES with --side")
        _parallel_store(ctx, tokenizer, src, tgt, tsv, output, encoding_errors, prune)
        return
    tok = load_tokenizer(tokenizer, side)
    if fmt == "store" or output is not None:
        _store(ctx, files or [], tok, output, fmt, decode, add_bos or add_eos, encoding_errors, prune)
        return
    lines = iter_lines(files or ["-"], encoding_errors, max_line_chars)
    stats = StreamStats()
    chunks = (decode_lines(tok, lines, source) if decode
              else encode_lines(tok, lines, fmt, add_bos, add_eos, stats))
    with open_output("-") as out:
        for chunk in chunks:
            out.write(chunk)
    if stats.unk:
        common = ", ".join(f"{s!r} ×{n}" for s, n in stats.unknown.most_common(5))
        reporter(ctx).warn(f"{stats.unk:,} of {stats.tokens:,} tokens are <unk> "
                           f"(not in the vocabulary: {common})")



def _store(ctx: typer.Context, files: list[str], tok, output: Path | None, fmt: str, decode: bool,
           specials: bool, encoding_errors: str, prune: bool = False) -> None:
    """--format store: encode FILES into the token store in --output (reused when already there); with
    `prune`, remove the entries built earlier from any of them."""
    from seqtool.data.io import expand_paths, file_fingerprint
    from seqtool.data.store import ensure_corpus, known_sources
    from seqtool.errors import InputError

    if fmt != "store" or output is None:
        raise InputError("--output goes with --format store (the other formats write to stdout)",
                         hint="pass both --format store and -o DIR, or neither")
    if decode or specials:
        raise InputError("--decode, --add-bos and --add-eos do not apply to --format store")
    if not files or "-" in files:
        raise InputError("--format store needs files: stdin cannot be hashed or read again",
                         hint="save the text to a file first")
    paths = expand_paths(files)
    report = reporter(ctx)
    known = known_sources(output)  # the sha256 of a file unchanged since an entry was built: not read again
    sources = [{"role": "train", **file_fingerprint(str(Path(p).resolve()), known)} for p in paths]
    corpus, built = ensure_corpus(output, paths, sources, tok, encoding_errors, progress=report.info)
    m = corpus.manifest
    report.info(f"token store {corpus.path}: {'built' if built else 'already there'}, {m['tokens']:,} "
                f"tokens ({m['dtype']}), {m['lines']:,} lines from {len(paths)} file(s); train with "
                f"--data-store {output}")
    if prune:
        _prune(report, output, [corpus.path], paths)


def _prune(report, output: Path, keep: list[Path], paths: list[str]) -> None:
    """--prune: remove the entries of the store `output` other than `keep` built from any of `paths`."""
    from seqtool.data.store_prune import describe_removed, prune_files

    removed = prune_files(output, keep, paths)
    report.info(describe_removed(removed, "built earlier from these files") if removed
                else f"token store {output}: no other entry was built from these files")


def _parallel_store(ctx: typer.Context, tokenizer: Path, src: str | None, tgt: str | None, tsv: str | None,
                    output: Path | None, encoding_errors: str, prune: bool = False) -> None:
    """--format store --src/--tgt (or --tsv): encode both sides of parallel text into the store in
    --output, each with its side's tokenizer (data/stored_pairs.py)."""
    from seqtool.data.io import file_fingerprint
    from seqtool.data.parallel import sides
    from seqtool.data.stored_pairs import ensure_sides
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.errors import InputError

    if output is None:
        raise InputError("--format store needs -o DIR, the store directory")
    pair_sides = sides(src, tgt, tsv)
    if "-" in (path for path, _ in pair_sides):
        raise InputError("--format store needs files: stdin cannot be hashed or read again",
                         hint="save the text to a file first")
    report = reporter(ctx)
    sources = [{"role": "train", **file_fingerprint(str(Path(path).resolve()))} for path, _ in pair_sides]
    toks = (load_tokenizer(tokenizer, "src"), load_tokenizer(tokenizer, "tgt"))
    source, target = ensure_sides(output, pair_sides, sources, toks, encoding_errors, progress=report.info)
    report.info(f"token store {output}: {source.lines:,} pairs; train with --data-store {output}")
    if prune:
        _prune(report, output, [source.path, target.path], [path for path, _ in pair_sides])
