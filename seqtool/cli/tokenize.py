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
    fmt: Annotated[Literal[FORMATS], typer.Option("--format", help="What to write.")] = "pieces",
    decode: Annotated[bool, typer.Option("--decode", help="Turn ids or pieces back into text.")] = False,
    source: Annotated[Literal[FORMATS], typer.Option("--from", help="What --decode reads.")] = "ids",
    add_bos: Annotated[bool, typer.Option("--add-bos", help="Start every line with <s>.")] = False,
    add_eos: Annotated[bool, typer.Option("--add-eos", help="End every line with </s>.")] = False,
    encoding_errors: EncodingErrors = "strict",
    max_line_chars: MaxLineChars = 1_000_000,
) -> None:
    """Tokenize text, one output line per input line (empty lines kept).

    Example: seqtool tokenize corpus.txt -t tok/ --format ids | seqtool tokenize -t tok/ --decode --from ids
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
    tok = load_tokenizer(tokenizer, side)
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

