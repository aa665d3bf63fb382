"""GPT-2's byte-level BPE (Radford et al. 2019, §2.2) behind seqtool's `Tokenizer` interface, through
the `tokenizers` library (the optional extra `seqtool[hf]`, imported only here).

Byte-level BPE represents every string, so nothing is ever unknown. GPT-2 has one special token,
<|endoftext|>: it is bos, eos and pad at once. Padding with it is safe only because seqtool masks
padded positions out of the loss by an ignore index, never by the pad id (see models/gpt2.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from seqtool.data.tokenizers import NEWLINE, Tokenizer
from seqtool.errors import InputError

KIND = "gpt2-bpe"
END_OF_TEXT = "<|endoftext|>"
BPE_FILE = "bpe.json"  # the `tokenizers` serialisation (HF's tokenizer.json format), saved in WS/tokenizer/
HF_INSTALL_HINT = "install the Hugging Face extra: pip install 'seqtool[hf]'"


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise InputError("GPT-2 tokenizers need the `tokenizers` library, which is not installed",
                         hint=HF_INSTALL_HINT) from None
    return tokenizers


class GPT2Tokenizer(Tokenizer):
    """Byte-level BPE; <|endoftext|> is bos, eos and pad. unk and mask do not exist in GPT-2 and map to
    it too, so no id outside the vocabulary can ever reach an embedding."""

    kind = KIND

    def __init__(self, hf_tokenizer, options: dict | None = None):
        self.hf = hf_tokenizer
        self.options = options or {}
        eot = hf_tokenizer.token_to_id(END_OF_TEXT)
        if eot is None:
            raise InputError(f"the GPT-2 tokenizer has no {END_OF_TEXT} token",
                             hint="use the tokenizer files that came with the model")
        self.pad_id = self.unk_id = self.bos_id = self.eos_id = self.mask_id = eot
        newline = hf_tokenizer.encode(NEWLINE).ids
        if len(newline) != 1:
            raise InputError("the GPT-2 tokenizer cannot encode a newline as one token",
                             hint="use the tokenizer files that came with the model")
        self.newline_id = newline[0]

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def piece_to_id(self, piece: str) -> int:
        found = self.hf.token_to_id(piece)
        return self.unk_id if found is None else found

    def id_to_piece(self, id_: int) -> str:
        return self.hf.id_to_token(id_)

    def encode_batch(self, texts, add_bos=False, add_eos=False):
        bos = [self.bos_id] if add_bos else []
        eos = [self.eos_id] if add_eos else []
        return [bos + enc.ids + eos for enc in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def encode_pieces(self, text: str) -> list[str]:
        return self.hf.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        return self.hf.decode([i for i in ids if i != self.eos_id], skip_special_tokens=True)

    def decode_pieces(self, pieces: Sequence[str]) -> str:
        return self.decode([self.piece_to_id(p) for p in pieces])

    def unknown(self, text: str) -> Counter:
        return Counter()  # bytes: every string has a spelling

    def _save_files(self, directory: Path) -> dict:
        self.hf.save(str(directory / BPE_FILE))
        return {"model_file": BPE_FILE}


def from_hf_dir(directory: Path) -> GPT2Tokenizer:
    """The tokenizer of a Hugging Face GPT-2 directory: tokenizer.json, or vocab.json + merges.txt."""
    tokenizers = _tokenizers()
    if (directory / "tokenizer.json").is_file():
        try:
            hf = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as err:  # noqa: BLE001 - the library raises plain Exceptions for bad files
            raise InputError(f"{directory / 'tokenizer.json'} is not a valid tokenizer ({err})") from None
        return GPT2Tokenizer(hf, {"source": str(directory)})
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise InputError(f"{directory} has no GPT-2 tokenizer: tokenizer.json, or vocab.json and merges.txt, "
                         "is needed", hint="copy the tokenizer files that came with the model into it")
    try:
        json.loads(vocab.read_text(encoding="utf-8"))
        bpe = tokenizers.models.BPE.from_file(str(vocab), str(merges))
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{directory}: vocab.json / merges.txt cannot be read ({err})") from None
    # The settings of GPT-2's own tokenizer: byte-level pre-tokenizer with GPT-2's regex, no prefix space.
    hf = tokenizers.Tokenizer(bpe)
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    hf.add_special_tokens([END_OF_TEXT])
    return GPT2Tokenizer(hf, {"source": str(directory)})


def load_gpt2_tokenizer(directory: Path, options: dict) -> GPT2Tokenizer:
    """The tokenizer Tokenizer.save wrote into `directory` (its tokenizer.json already read)."""
    path = directory / BPE_FILE
    if not path.is_file():
        raise InputError(f"{directory} is not a complete tokenizer: {BPE_FILE} is missing",
                         hint="re-import the model with seqtool finetune --from hf:DIR")
    tokenizers = _tokenizers()
    try:
        hf = tokenizers.Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{path} is not a valid tokenizer file ({err})") from None
    return GPT2Tokenizer(hf, options)
