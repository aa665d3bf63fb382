"""Language-model samples decoded together: many prompts (`generate --prompt-file`) and many samples of one
prompt (`--num-samples`) step as one batch through the model's start/step/reorder interface.

Prompts of different lengths need no padding: the rows read their prompts in lock step (the shortest
prompt in one call, then one token per step, each row fed its own next prompt token and its choice
ignored until its prompt is read), so every row sees exactly its own tokens at its own positions, and
greedy decoding gives what one prompt at a time gives. A row leaves the batch when it is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from seqtool.decoding import DecodeConfig, Sample, TextRow, choose, lm_prompt_ids


@torch.no_grad()
def sample_batch(model: Any, tokenizer: Any, prompts: Sequence[str], cfg: DecodeConfig,
                 generator: torch.Generator | None = None, stop: Sequence[str] = (),
                 newline_prefix: bool = True) -> list[Sample]:
    """One sample per prompt (repeat a prompt for several samples), decoded as one batch."""
    prompt_ids = [lm_prompt_ids(tokenizer, p, newline_prefix) for p in prompts]
    rows = [TextRow(tokenizer, p, ids, stop) for p, ids in zip(prompts, prompt_ids, strict=True)]
    device = next(model.parameters()).device
    read = min(len(ids) for ids in prompt_ids)  # prompt tokens every row has been fed
    inputs = torch.tensor([ids[:read] for ids in prompt_ids], device=device)  # (B, read)
    live = list(range(len(rows)))  # the row of each batch row
    state = model.start()
    while live:
        logits, state = model.step(inputs, state)
        chosen, logprobs = choose(logits, cfg, generator)
        keep, next_ids, reading = [], [], False
        for b, (r, i, lp) in enumerate(zip(live, chosen.tolist(), logprobs.tolist(), strict=True)):
            if read < len(prompt_ids[r]):  # still reading its prompt
                keep.append(b)
                next_ids.append(prompt_ids[r][read])
                reading = True
                continue
            row = rows[r]
            row.add(i, lp)
            if not row.done and len(row.sample.ids) < cfg.max_tokens:
                keep.append(b)
                next_ids.append(i)
        read += 1
        if len(keep) == len(live) and not reading:  # every row goes on with its choice: feed it as it is
            inputs = chosen.view(-1, 1)
            continue
        if len(keep) < len(live):  # rows that are done leave the batch
            live = [live[b] for b in keep]
            if not live:
                break
            state = model.reorder(state, torch.tensor(keep, device=device))
        inputs = torch.tensor(next_ids, device=device).view(-1, 1)  # (B', 1)
    return [row.sample for row in rows]
