"""A small torch sampler for checking checkpoints (the real-time sampler is the engine's, on ONNX).

`sample(model, prefix, n)` continues a conditioning prefix (``vocab.conditioning(style, instruments)``) by up to
n tokens with the model's KV cache. Conditioning tokens (PAD, BOS, STYLE, SET) are never generated. With
`instruments`, note and pedal tokens of every other instrument class are masked out (a hard constraint);
without it the model's own choice is sampled, which is what tests use to check that it follows the prefix.
When the context fills, the window restarts from the prefix and the most recent tokens.
"""

from __future__ import annotations

import torch
from musebridge.engine.tokens import vocab as V


def allowed_mask(instruments: list[int] | tuple[int, ...] | None) -> torch.Tensor:
    """Boolean (vocab,) mask of tokens that may be generated after the prefix."""
    mask = torch.ones(V.VOCAB_SIZE, dtype=torch.bool)
    mask[V.PAD] = mask[V.BOS] = False
    mask[V.OFFSETS["style"] : V.OFFSETS["set"] + V.N_INSTRUMENTS] = False
    if instruments is not None:
        for inst in range(V.N_INSTRUMENTS):
            if inst in instruments:
                continue
            mask[V.pedal_token(inst, True)] = mask[V.pedal_token(inst, False)] = False
            for base in (V.note_on_token(inst, 0), V.note_off_token(inst, 0)):
                mask[base : base + V.N_PITCHES] = False
    return mask


@torch.no_grad()
def sample(model, prefix: list[int], max_tokens: int, temperature: float = 1.0, top_k: int | None = None,
           instruments: list[int] | None = None, seed: int = 0, stop_at_eos: bool = True) -> list[int]:
    """Generated tokens (without the prefix). Same seed, same model, same arguments -> same tokens."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    mask = allowed_mask(instruments)
    block = model.config.block_size
    out: list[int] = []
    logits, k, v = model.forward_cached(torch.tensor([prefix]), *model.empty_cache())
    while len(out) < max_tokens:
        scores = logits[0, -1].float() / max(temperature, 1e-6)
        scores = scores.masked_fill(~mask, float("-inf"))
        if top_k:
            kth = torch.topk(scores, min(top_k, int(mask.sum()))).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        token = int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen))
        out.append(token)
        if token == V.EOS and stop_at_eos:
            break
        if k.shape[3] + 1 > block:  # slide: prefix + the most recent three quarters of the window
            recent = out[-(block * 3 // 4 - len(prefix)):]
            logits, k, v = model.forward_cached(torch.tensor([prefix + recent]), *model.empty_cache())
        else:
            logits, k, v = model.forward_cached(torch.tensor([[token]]), k, v)
    return out
