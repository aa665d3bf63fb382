"""The sentencepiece kinds (bpe, unigram) behind seqtool's `Tokenizer` interface.

Trained in-process from a line iterator with identity normalisation, no dummy prefix and extra
whitespace kept, so text comes back exactly as it went in: leading, trailing and repeated spaces,
tabs and no-break spaces included. `<mask>` and `<nl>` are control symbols (ids 4 and 5): a literal
"<nl>" in the text stays text, and newlines are cut out before sentencepiece sees the text.

Where sentencepiece itself falls short of an exact round trip (tests/test_tokenizers.py checks the
rest with hypothesis): U+2581 "▁" reads back as a space; U+001F, a carriage return (CR) and NUL are
never learnt (CR at a line end never gets this far: seqtool.data.io reads CRLF as a newline; NUL never
gets this far: seqtool.data.io rejects it); and the trainer skips the literal strings <pad>, <unk>,
<s>, </s>, <mask> and <nl> in training text, so characters seen only there become <unk>.

With `lowercase` the rule that lower-cases (Python's str.lower, character by character) is compiled
into spm.model as its normalisation, so the file alone encodes as seqtool does. Tokenizers saved
before that lower-case in Python, outside spm.model; they load and encode as they always did.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from seqtool.data.tokenizers import NEWLINE, SPACE_PIECE, SPECIALS, Tokenizer
from seqtool.errors import InputError

SPM_NEWLINE = "<nl>"
SPM_FILE = "spm.model"


class SentencePieceTokenizer(Tokenizer):
    """bpe and unigram through sentencepiece: text kept as is (identity normalisation) or lower-cased."""

    def __init__(self, kind: str, model: bytes, options: dict):
        import sentencepiece as spm

        self.kind = kind
        self.options = options
        self.model = model
        self.sp = spm.SentencePieceProcessor(model_proto=model)
        self.newline_id = self.sp.piece_to_id(SPM_NEWLINE)
        # older lowercase tokenizers: spm.model has the identity rule and the lower-casing happens here
        self._lower = bool(options.get("lowercase")) and not options.get("lowercase_in_model")
        self._chars: set[str] | None = None

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def piece_to_id(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)

    def id_to_piece(self, id_: int) -> str:
        return self.sp.id_to_piece(id_)

    def encode_batch(self, texts, add_bos=False, add_eos=False):
        if self._lower:
            texts = [t.lower() for t in texts]
        if any(NEWLINE in t for t in texts):
            return [self._encode_multiline(t, add_bos, add_eos) for t in texts]
        return self.sp.encode(list(texts), add_bos=add_bos, add_eos=add_eos)

    def _encode_multiline(self, text: str, add_bos: bool, add_eos: bool) -> list[int]:
        parts = self.sp.encode(text.split(NEWLINE))
        ids = [self.bos_id] if add_bos else []
        for i, part in enumerate(parts):
            if i:
                ids.append(self.newline_id)
            ids.extend(part)
        return ids + ([self.eos_id] if add_eos else [])

    def encode_pieces(self, text: str) -> list[str]:
        if self._lower:
            text = text.lower()
        parts = self.sp.encode(text.split(NEWLINE), out_type=str)
        return [p for i, part in enumerate(parts) for p in ([SPM_NEWLINE] if i else []) + part]

    def encode_pieces_batch(self, texts, add_bos=False, add_eos=False):
        if any(NEWLINE in t for t in texts):
            return super().encode_pieces_batch(texts, add_bos, add_eos)
        pieces = self.sp.encode([t.lower() for t in texts] if self._lower else list(texts), out_type=str)
        if add_bos or add_eos:
            bos, eos = [SPECIALS[self.bos_id]] * add_bos, [SPECIALS[self.eos_id]] * add_eos
            pieces = [bos + row + eos for row in pieces]
        return pieces

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        return NEWLINE.join(self.sp.decode(_split_at(list(ids), self.newline_id)))

    def decode_pieces(self, pieces: Sequence[str]) -> str:
        return NEWLINE.join(self.sp.decode_pieces(_split_at(list(pieces), SPM_NEWLINE)))

    def unknown(self, text: str) -> Counter:
        if self._chars is None:
            pieces = (self.sp.id_to_piece(i) for i in range(self.vocab_size))
            self._chars = {p.replace(SPACE_PIECE, " ") for p in pieces if len(p) == 1}
        if self.options.get("lowercase"):
            text = text.lower()
        return Counter(c for c in text if c not in self._chars and c != NEWLINE)

    def _save_files(self, directory: Path) -> dict:
        (directory / SPM_FILE).write_bytes(self.model)
        return {"model_file": SPM_FILE}


def _split_at(items: list, sep) -> list[list]:
    parts, start = [], 0
    for i, item in enumerate(items):
        if item == sep:
            parts.append(items[start:i])
            start = i + 1
    parts.append(items[start:])
    return parts


def train_spm(kind: str, lines: Iterable[str], vocab_size: int, options: dict
               ) -> SentencePieceTokenizer:
    import sentencepiece as spm

    failure: list[BaseException] = []

    def sentences() -> Iterator[str]:
        # sentencepiece swallows exceptions from the iterator: keep ours to raise it again.
        try:
            yield from lines
        except BaseException as err:
            failure.append(err)
            raise

    model = io.BytesIO()
    spm.set_random_generator_seed(options["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        # keep the text exactly as it is (lower-cased with `lowercase`), so decode(encode(x)) == x
        rule = {"normalization_rule_name": "identity"}
        if options["lowercase"]:
            options = {**options, "lowercase_in_model": True}
            rule = {"normalization_rule_tsv": _lowercase_rule(Path(tmp))}
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=sentences(), model_writer=model, model_type=kind,
                vocab_size=vocab_size, character_coverage=options["character_coverage"],
                pad_id=0, unk_id=1, bos_id=2, eos_id=3, unk_surface=SPECIALS[1],
                control_symbols=[SPECIALS[4], SPM_NEWLINE], user_defined_symbols=options["user_symbols"],
                **rule, add_dummy_prefix=False, remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True, byte_fallback=False, split_digits=False,
                max_sentence_length=1 << 20, num_threads=os.cpu_count() or 1, minloglevel=2)
        except RuntimeError as err:
            if failure:
                raise failure[0] from None
            raise _spm_error(str(err), vocab_size) from None
    return SentencePieceTokenizer(kind, model.getvalue(), options)


def _lowercase_rule(directory: Path) -> str:
    """A sentencepiece normalisation rule (TSV: code points → code points) applying str.lower to each
    character and leaving the rest as it is; sentencepiece compiles it into the model."""
    rows = (f"{ord(c):X}\t{' '.join(f'{ord(x):X}' for x in c.lower())}"
            for c in map(chr, range(sys.maxunicode + 1)) if c.lower() != c)
    path = directory / "lowercase.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def _spm_error(message: str, vocab_size: int) -> InputError:
    if m := re.search(r"Please set it to a value <= (\d+)", message):
        return InputError(f"--vocab-size {vocab_size} is too large for this corpus: at most "
                          f"{m[1]} pieces can be learned from it",
                          hint=f"pass --vocab-size {m[1]} or less, or train on more text")
    if m := re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message):
        return InputError(f"--vocab-size {vocab_size} is too small for the {m[2]} characters "
                          "(and special tokens) of this corpus",
                          hint=f"pass --vocab-size above {m[2]}, or --character-coverage 0.9995 "
                          "to map rare characters to <unk>")
    if "sentences_.empty()" in message or "all_chars_count" in message:
        return InputError("empty corpus: no line to learn a vocabulary from",
                          hint="pass a text file with at least one line of text")
    first = message.splitlines()[0] if message else "unknown error"
    return InputError(f"sentencepiece could not train: {first}")


def load_spm(directory: Path, kind: str, options: dict) -> SentencePieceTokenizer:
    """The sentencepiece tokenizer saved in `directory` (its tokenizer.json already read)."""
    model_path = directory / SPM_FILE
    if not model_path.is_file():
        raise InputError(f"{directory} is not a complete tokenizer: {SPM_FILE} is missing",
                         hint="rebuild the tokenizer with seqtool build-vocab")
    try:
        tok = SentencePieceTokenizer(kind, model_path.read_bytes(), options)
    except (RuntimeError, OSError) as err:
        raise InputError(f"{model_path} is not a valid sentencepiece model ({str(err).splitlines()[0]})",
                         hint="rebuild the tokenizer with seqtool build-vocab") from None
    if [tok.id_to_piece(i) for i in range(len(SPECIALS))] != list(SPECIALS) or tok.newline_id == tok.unk_id:
        raise InputError(f"{model_path} does not have seqtool's special tokens",
                         hint="rebuild the tokenizer with seqtool build-vocab")
    return tok
