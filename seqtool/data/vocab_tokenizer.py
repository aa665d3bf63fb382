"""The vocabulary kinds (char, word) behind seqtool's `Tokenizer` interface: a piece list, counted from
the training text (most frequent first, ties in code-point order, so the same corpus gives the same ids).
char: one piece per character (a space is "▁"). word: words, runs of dashes and single punctuation marks
(`WordTokenizer.split`); it decodes to the normalised text (`normalize_words`). Both may be grown later
(finetune --extend-vocab appends pieces).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from seqtool.data.tokenizers import NEWLINE, SPACE_PIECE, SPECIALS, WORD, Tokenizer
from seqtool.errors import InputError


class VocabTokenizer(Tokenizer):
    """Char and word tokenizers: a piece list; `split` cuts text into surface pieces."""

    def __init__(self, pieces: list[str], options: dict):
        self.pieces = pieces
        self.options = options
        self.newline_id = pieces.index(NEWLINE)
        self._ids = {p: i for i, p in enumerate(pieces)}
        self._lower = bool(options.get("lowercase"))

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def piece_to_id(self, piece: str) -> int:
        return self._ids.get(piece, self.unk_id)

    def id_to_piece(self, id_: int) -> str:
        return self.pieces[id_]

    def split(self, text: str) -> list[str]:
        """The pieces of `text` (after optional lower-casing), known to the vocabulary or not."""
        raise NotImplementedError

    def encode_batch(self, texts, add_bos=False, add_eos=False):
        get, unk = self._ids.get, self.unk_id
        bos = [self.bos_id] if add_bos else []
        eos = [self.eos_id] if add_eos else []
        return [bos + [get(p, unk) for p in self.split(text)] + eos for text in texts]

    def encode_pieces(self, text: str) -> list[str]:
        return self.split(text)

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        skip = {self.pad_id, self.bos_id, self.eos_id, self.mask_id}
        return self.decode_pieces([self.pieces[i] for i in ids if i not in skip])

    def unknown(self, text: str) -> Counter:
        return Counter(p for p in self.split(text) if p not in self._ids)

    def _save_files(self, directory: Path) -> dict:
        return {"vocab": self.pieces}


class CharTokenizer(VocabTokenizer):
    """One piece per character; a space is the piece "▁", so pieces never contain a space."""

    kind = "char"

    def __init__(self, pieces: list[str], options: dict):
        super().__init__(pieces, options)
        symbols = options.get("user_symbols")
        self._re = _symbols_first(symbols, ".") if symbols else None

    def split(self, text: str) -> list[str]:
        if self._lower:
            text = text.lower()
        if self._re is not None:
            return [p.replace(" ", SPACE_PIECE) for p in self._re.findall(text)]
        return list(text.replace(" ", SPACE_PIECE))

    def decode_pieces(self, pieces: Sequence[str]) -> str:
        return "".join(p for p in pieces if p not in SPECIALS or p == SPECIALS[self.unk_id]
                       ).replace(SPACE_PIECE, " ")


class WordTokenizer(VocabTokenizer):
    """Words as the lecture's recipe LSTM saw them (see `split`); decode joins them with spaces."""

    kind = "word"

    def __init__(self, pieces: list[str], options: dict):
        super().__init__(pieces, options)
        self._re = _symbols_first(options.get("user_symbols", []), WORD)

    def split(self, text: str) -> list[str]:
        """ "Hot-water -- sponge cake!" → Hot - water -- sponge cake ! : punctuation split off,
        runs of dashes kept whole, "\\n" its own token, other whitespace dropped."""
        return self._re.findall(text.lower() if self._lower else text)

    def decode_pieces(self, pieces: Sequence[str]) -> str:
        words = [p for p in pieces if p not in SPECIALS or p == SPECIALS[self.unk_id]]
        return NEWLINE.join(_join_lines(words))


def _join_lines(words: list[str]) -> list[str]:
    lines, current = [], []
    for word in words:
        if word == NEWLINE:
            lines.append(" ".join(current))
            current = []
        else:
            current.append(word)
    lines.append(" ".join(current))
    return lines


def normalize_words(text: str, lowercase: bool = False) -> str:
    """The text a word tokenizer reads back: `decode(encode(text))` when no word is unknown."""
    return NEWLINE.join(_join_lines(re.findall(WORD, text.lower() if lowercase else text)))


def _symbols_first(user_symbols: Sequence[str], rest: str) -> re.Pattern:
    """A regex matching any user symbol whole (longest first) before it tries `rest`."""
    alternatives = [re.escape(s) for s in sorted(user_symbols, key=len, reverse=True)]
    return re.compile("|".join([*alternatives, rest]), re.S)


def train_vocab(kind: str, lines: Iterable[str], vocab_size: int | None, min_count: int,
                 options: dict) -> VocabTokenizer:
    cls = CharTokenizer if kind == "char" else WordTokenizer
    probe = cls(list(SPECIALS) + [NEWLINE] + options["user_symbols"], options)
    counts: Counter = Counter()
    for line in lines:
        counts.update(probe.split(line))
    fixed = probe.pieces
    for piece in fixed:
        counts.pop(piece, None)
    # Most frequent first; ties in code-point order, so the same corpus gives the same ids.
    ranked = sorted((p for p, c in counts.items() if c >= min_count), key=lambda p: (-counts[p], p))
    if vocab_size is not None:
        if vocab_size < len(fixed) + 1:
            raise InputError(f"--vocab-size {vocab_size} is too small: the special tokens alone take "
                             f"{len(fixed)}", hint=f"pass --vocab-size {len(fixed) + 1} or more")
        ranked = ranked[: vocab_size - len(fixed)]
    return cls(fixed + ranked, options)
