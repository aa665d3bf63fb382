"""Tokenizers behind one interface: char, word, and sentencepiece bpe/unigram.

Every kind has the same special tokens at fixed ids (`tok.pad_id` … `tok.mask_id`) and a newline
token (`tok.newline_id`) so language models can train on multi-line text. A tokenizer lives in a
directory: tokenizer.json (kind, options, and the vocabulary for char/word) plus spm.model for
the sentencepiece kinds. No torch here; sentencepiece is imported only when needed.

Round trips: `decode(encode(x)) == x` for char, bpe and unigram whenever every character of x is
in the vocabulary, except that U+2581 "▁" (sentencepiece's visible space) always reads back as a
space (see spm_tokenizer.py for sentencepiece's few other limits; vocab_tokenizer.py holds char and
word). For word, decode returns the *normalised* text (`vocab_tokenizer.normalize_words`): one space
between tokens, punctuation split off, other whitespace dropped. Unknown pieces decode to "<unk>", but
`decode_pieces(encode_pieces(x))` keeps them: pieces carry the original text.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from seqtool.config import MAX_VOCAB, check_between
from seqtool.data.io import batches, sample_lines
from seqtool.errors import InputError
from seqtool.storage import temp_dir_beside, write_error

KINDS = ("char", "word", "bpe", "unigram")
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")  # ids 0..4 in every kind
NEWLINE = "\n"  # the newline piece of char and word; sentencepiece kinds call it <nl>
SPACE_PIECE = "▁"  # U+2581: how a space is written as a piece (as sentencepiece does)
FORMAT_VERSION = 1
DEFAULT_SPM_VOCAB = 8000
BATCH_LINES = 1000
CONFIG_FILE = "tokenizer.json"
# A word: newline | a run of dashes | a run of letters/digits | any other single non-space character
WORD = r"\n|-{2,}|[^\W_]+|\S"


class Tokenizer:
    """The interface every kind implements. Ids of the specials are the same for all kinds."""

    kind: str
    pad_id, unk_id, bos_id, eos_id, mask_id = range(5)
    newline_id: int
    options: dict

    # implemented by each kind --------------------------------------------------------------
    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False
                     ) -> list[list[int]]:
        raise NotImplementedError

    def encode_pieces(self, text: str) -> list[str]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; pad, bos, eos and mask are skipped, newline_id becomes "\\n"."""
        raise NotImplementedError

    def decode_pieces(self, pieces: Sequence[str]) -> str:
        raise NotImplementedError

    def piece_to_id(self, piece: str) -> int:
        raise NotImplementedError

    def id_to_piece(self, id_: int) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def unknown(self, text: str) -> Counter:
        """The characters (char, bpe, unigram) or words (word) of `text` that become <unk>."""
        raise NotImplementedError

    def _save_files(self, directory: Path) -> dict:
        raise NotImplementedError

    # shared -------------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        return self.encode_batch([text], add_bos, add_eos)[0]

    def encode_pieces_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False
                            ) -> list[list[str]]:
        bos = [SPECIALS[self.bos_id]] if add_bos else []
        eos = [SPECIALS[self.eos_id]] if add_eos else []
        return [bos + self.encode_pieces(text) + eos for text in texts]

    def encode_stream(self, lines: Iterable[str]) -> Iterator[int]:
        """Ids of every line, each followed by newline_id: the token stream an LM trains on."""
        nl = [self.newline_id]
        for batch in batches(lines, BATCH_LINES):
            for ids in self.encode_batch(batch):
                yield from ids
                yield from nl

    def save(self, directory: str | os.PathLike) -> None:
        """Writes tokenizer.json (and spm.model) into `directory`, creating it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"kind": self.kind, "format_version": FORMAT_VERSION, "vocab_size": self.vocab_size,
                  "specials": {"pad": self.pad_id, "unk": self.unk_id, "bos": self.bos_id,
                               "eos": self.eos_id, "mask": self.mask_id, "newline": self.newline_id},
                  "options": self.options, **self._save_files(directory)}
        text = json.dumps(config, ensure_ascii=False, indent=1)
        (directory / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")

    def _check_ids(self, ids: Sequence[int]) -> None:
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise InputError(f"token id {bad} is out of range for this tokenizer "
                             f"(vocabulary size {self.vocab_size})",
                             hint="decode with the tokenizer that produced the ids")


# training and loading -----------------------------------------------------------------------
def train_tokenizer(
    kind: str,
    lines: Iterable[str],
    vocab_size: int | None = None,
    min_count: int = 1,
    lowercase: bool = False,
    character_coverage: float = 1.0,
    user_symbols: Sequence[str] = (),
    sample: int | None = None,
    seed: int = 0,
) -> Tokenizer:
    """Learns a tokenizer of `kind` from `lines` (one pass, or a seeded sample of `sample` lines).

    `vocab_size` counts every piece, specials included: a cap for char/word (None: keep all),
    the target for bpe/unigram (None: 8000). `min_count` applies to char/word only.
    """
    if kind not in KINDS:
        raise InputError(f"unknown tokenizer kind {kind!r}", hint=f"choose one of {', '.join(KINDS)}")
    if min_count < 1:
        raise InputError(f"--min-count must be at least 1, not {min_count}")
    if vocab_size is not None:
        check_between("--vocab-size", vocab_size, 1, MAX_VOCAB)
    if not 0.0 < character_coverage <= 1.0:
        raise InputError(f"--character-coverage must be in (0, 1], not {character_coverage}",
                         hint="1.0 keeps every character; 0.9995 is usual for large character sets")
    user_symbols = _check_user_symbols(user_symbols)
    options = {"lowercase": lowercase, "min_count": min_count, "vocab_size": vocab_size,
               "character_coverage": character_coverage, "user_symbols": user_symbols,
               "sample": sample, "seed": seed}
    if sample is not None:
        lines = sample_lines(lines, sample, seed)
    if kind in ("char", "word"):
        from seqtool.data.vocab_tokenizer import train_vocab

        return train_vocab(kind, lines, vocab_size, min_count, options)
    from seqtool.data.spm_tokenizer import train_spm

    return train_spm(kind, lines, vocab_size or DEFAULT_SPM_VOCAB, options)


def _check_user_symbols(symbols: Sequence[str]) -> list[str]:
    result = []
    for symbol in symbols:
        if not symbol or symbol in result:
            continue
        if any(c.isspace() for c in symbol):
            raise InputError(f"user symbol {symbol!r} contains whitespace", hint="use symbols like <sep>")
        if symbol in (*SPECIALS, "<nl>"):
            raise InputError(f"user symbol {symbol!r} is already a special token")
        result.append(symbol)
    return result


def find_tokenizer_dir(path: str | os.PathLike, side: str | None = None) -> Path:
    """The tokenizer directory meant by `path`: a tokenizer directory itself, or a workspace (its
    tokenizer/), or a parallel one with src/ and tgt/ (then `side` picks one)."""
    from seqtool.workspace import TOKENIZER_DIR

    path = Path(path)
    if not path.exists():
        raise InputError(f"tokenizer directory {path} does not exist",
                         hint=f"build one with: seqtool build-vocab CORPUS -o {path}")
    if not path.is_dir():
        raise InputError(f"{path} is not a directory", hint="pass the tokenizer directory (or a workspace)")
    if (path / CONFIG_FILE).exists():
        return path
    if (path / "src").is_dir() or (path / "tgt").is_dir():
        if side is None:
            raise InputError(f"{path} holds separate src and tgt tokenizers", hint="pass --side src or tgt")
        if side not in ("src", "tgt"):
            raise InputError(f"--side must be src or tgt, not {side!r}")
        return find_tokenizer_dir(path / side)
    if (path / TOKENIZER_DIR).is_dir():
        return find_tokenizer_dir(path / TOKENIZER_DIR, side)
    raise InputError(f"{path} is not a tokenizer directory: {CONFIG_FILE} is missing",
                     hint=f"build one with: seqtool build-vocab CORPUS -o {path}")


def load_tokenizer(directory: str | os.PathLike, side: str | None = None) -> Tokenizer:
    """Loads what `Tokenizer.save` wrote; `directory` may also be a workspace (see find_tokenizer_dir)."""
    directory = find_tokenizer_dir(directory, side)
    config_path = directory / CONFIG_FILE

    def corrupt(what: str) -> InputError:
        return InputError(f"{config_path} is corrupt: {what}",
                          hint="rebuild the tokenizer with seqtool build-vocab")

    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise corrupt(f"not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise corrupt("not a JSON object")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(f"{config_path} has format_version {version!r}; this seqtool reads "
                         f"version {FORMAT_VERSION}", hint="upgrade seqtool, or rebuild the tokenizer")
    kind, options = config.get("kind"), config.get("options")
    if kind == "gpt2-bpe":  # an imported GPT-2's byte-level BPE (seqtool[hf]), see gpt2_tokenizer.py
        from seqtool.data.gpt2_tokenizer import load_gpt2_tokenizer

        return load_gpt2_tokenizer(directory, options if isinstance(options, dict) else {})
    if kind not in KINDS:
        raise corrupt(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    if not isinstance(options, dict):
        raise corrupt("'options' is missing")
    if kind in ("char", "word"):
        pieces = config.get("vocab")
        fixed = [*SPECIALS, NEWLINE]
        if (not isinstance(pieces, list) or not all(isinstance(p, str) for p in pieces)
                or pieces[: len(fixed)] != fixed or len(set(pieces)) != len(pieces)):
            raise corrupt("'vocab' must list distinct pieces, starting with the special tokens")
        from seqtool.data.vocab_tokenizer import CharTokenizer, WordTokenizer

        return (CharTokenizer if kind == "char" else WordTokenizer)(pieces, options)
    from seqtool.data.spm_tokenizer import load_spm

    return load_spm(directory, kind, options)


def is_tokenizer_dir(path: Path) -> bool:
    """True for a directory that `save_tokenizers` wrote (joint, or separate src/ and tgt/)."""
    return any((path / sub / CONFIG_FILE).is_file() for sub in ("", "src", "tgt"))


def save_tokenizers(target: str | os.PathLike, tokenizers: dict[str, Tokenizer]) -> None:
    """Saves each tokenizer into `target`/key ("" is `target` itself), replacing `target` whole.

    Everything is written to a temporary directory beside `target` and renamed into place, so an
    error or a kill never leaves a half-written tokenizer. A `target` that exists and holds
    something other than a tokenizer is left alone.
    """
    target = Path(target)
    if target.exists() and not is_tokenizer_dir(target) and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"refusing to replace {target}: it exists and is not a tokenizer directory",
                         hint="choose a new or empty output directory")
    tmp = temp_dir_beside(target)
    try:
        for sub, tok in tokenizers.items():
            tok.save(tmp / sub)
        if target.exists():
            old = tmp.with_name(tmp.name + ".old")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise write_error(err, target) from None
        raise
