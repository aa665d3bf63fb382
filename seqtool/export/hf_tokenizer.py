"""seqtool's tokenizers → Hugging Face tokenizer files (tokenizer.json + tokenizer_config.json) that
`AutoTokenizer` loads and that encode text to the same ids.

- gpt2-bpe (an imported GPT-2): its `tokenizers` file as is, plus vocab.json/merges.txt;
- char and word: a `tokenizers` WordLevel model over the same pieces at the same ids, with the same
  splitting (spaces → "▁" for char; the word regex for word), lower-casing and user symbols;
- bpe and unigram (sentencepiece) are refused: seqtool cuts newlines out before sentencepiece sees a
  line and codes them as <nl>, and no `tokenizers` pipeline reproduces sentencepiece's BPE merges
  exactly, so ids could differ silently.
The `tokenizers` library is needed for char and word (the `hf` extra), imported here only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from seqtool.data.tokenizers import NEWLINE, SPACE_PIECE, SPECIALS, WORD
from seqtool.errors import InputError

EXPORTABLE = ("gpt2-bpe", "char", "word")


def check_exportable(tokenizer: Any) -> None:
    if tokenizer.kind not in EXPORTABLE:
        raise InputError(f"a {tokenizer.kind} (sentencepiece) tokenizer cannot be written as a Hugging Face "
                         "tokenizer that gives the same ids (seqtool codes newlines as <nl> outside "
                         "sentencepiece, and its BPE merges have no exact `tokenizers` equivalent)",
                         hint="train with --tokenizer char or word, fine-tune an imported GPT-2 "
                              "(finetune --from hf:DIR), or export --format onnx (ids in, logits out)")


def save_hf_tokenizer(tokenizer: Any, directory: Path, model_max_length: int) -> None:
    """Write tokenizer.json and tokenizer_config.json (and, for GPT-2, vocab.json + merges.txt)."""
    check_exportable(tokenizer)
    if tokenizer.kind == "gpt2-bpe":
        hf = tokenizer.hf
        hf.model.save(str(directory))  # vocab.json, merges.txt: what older readers (and hf:DIR) need
        end = hf.id_to_token(tokenizer.eos_id)
        specials = {"bos_token": end, "eos_token": end, "unk_token": end}
        extra = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False}
    else:
        hf = _word_level(tokenizer)
        names = ("pad", "unk", "bos", "eos", "mask")
        specials = {f"{name}_token": SPECIALS[getattr(tokenizer, f"{name}_id")] for name in names}
        extra = {"tokenizer_class": "PreTrainedTokenizerFast"}
    hf.save(str(directory / "tokenizer.json"))
    config = {**extra, **specials, "model_max_length": model_max_length,
              "clean_up_tokenization_spaces": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                     encoding="utf-8")


def _word_level(tokenizer: Any) -> Any:
    """A char or word tokenizer as a `tokenizers.Tokenizer` over the same pieces and ids."""
    try:
        from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    except ImportError:
        raise InputError(f"exporting a {tokenizer.kind} tokenizer needs the `tokenizers` library, which is "
                         "not installed", hint="pip install 'seqtool[export]'") from None
    vocab = {piece: i for i, piece in enumerate(tokenizer.pieces)}
    hf = Tokenizer(models.WordLevel(vocab, unk_token=SPECIALS[tokenizer.unk_id]))
    user_symbols = sorted(tokenizer.options.get("user_symbols") or [], key=len, reverse=True)
    space = SPACE_PIECE if tokenizer.kind == "char" else " "  # char: symbols are matched after the spaces
    symbols = [re.escape(s.replace(" ", space)) for s in user_symbols]
    steps = [normalizers.Lowercase()] if tokenizer.options.get("lowercase") else []
    if tokenizer.kind == "char":
        # a space is the piece "▁"; a user symbol, or any other character (newline too), is one piece
        steps.append(normalizers.Replace(" ", SPACE_PIECE))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex("|".join([*symbols, r"[\s\S]"])), behavior="isolated")
        hf.decoder = decoders.Sequence([decoders.Replace(SPACE_PIECE, " "), decoders.Fuse()])
    else:
        # spaces and tabs separate words and vanish; newline is a word; then seqtool's word regex
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
            pre_tokenizers.Split(Regex("|".join([*symbols, WORD])), behavior="isolated")])
        # decode as WordTokenizer does: words joined by one space, no space around a newline
        hf.decoder = decoders.Sequence([
            decoders.Replace(Regex("^"), " "), decoders.Fuse(),
            decoders.Replace(Regex(f" ?{NEWLINE} ?"), NEWLINE), decoders.Strip(" ", 1, 0)])
    if steps:
        hf.normalizer = normalizers.Sequence(steps)
    hf.add_special_tokens(list(SPECIALS))
    return hf
