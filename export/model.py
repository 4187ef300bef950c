"""The MuseBridge transformer: a GPT-style decoder with rotary positions (RoPE), in one readable file.

Positions are rotary, applied to queries and keys inside attention. The engine keeps the rotated keys in its
KV cache; when the context fills it drops old entries (keeping the conditioning prefix) and rotates the kept
recent keys back by the number of dropped positions (a rotation composes: R(p - d) = R(-d) R(p)), so the cache
stays compact at positions 0..n-1 without recomputing a single projection. See docs/architecture.md.

Token embeddings: one row per token, shared with the output layer. With `factorized_notes` a note token's row is
its own row plus an instrument part and a pitch part (separately for note-on and note-off): 3,259 = 32 instrument
classes x 128 pitches x 2 mostly, and most classes are rare in the data, so a pitch learned on piano or voice
also moves the same pitch on a rare class. `token_table()` gives the summed table; the exported graph holds it.

Shapes: B batch, T new tokens, P past (cached) tokens, L layers, H heads, D head size, C = H * D embedding size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from musebridge.engine.inference.graph import rope_frequencies
from musebridge.engine.tokens import vocab as V

from .config import GPTConfig

__all__ = ["GPT", "GPTConfig", "apply_rope", "rope_tables"]


def rope_tables(config: GPTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (block_size, D/2): angle[p, i] = p * base^(-2i/D)."""
    angles = torch.arange(config.block_size, dtype=torch.float32)[:, None] * _frequencies(config)[None, :]
    return torch.cos(angles), torch.sin(angles)


def _frequencies(config: GPTConfig) -> torch.Tensor:
    """(D/2,) the engine's rotary frequencies (engine/inference/graph.py), as a tensor."""
    return torch.from_numpy(rope_frequencies(config.head_size, config.rope_base))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :D/2], x[..., D/2:]) of x (B, H, T, D) by the angles in cos/sin (T, D/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x, cos, sin, past_k=None, past_v=None):
        """x (B, T, C); cos/sin (T, D/2) for the new positions; past_k/past_v (B, H, P, D) rotated keys and
        values. Returns y (B, T, C) and the full keys/values (B, H, P+T, D)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past_k is not None:
            k = torch.cat((past_k, k), dim=2)  # (B, H, P+T, D)
            v = torch.cat((past_v, v), dim=2)
        if past_k is None or past_k.shape[2] == 0:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )
        else:
            P = k.shape[2] - T
            # new token t may see every past token and new tokens up to itself
            mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y), k, v


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(approximate="tanh"),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.dropout),
        )

    def forward(self, x, cos, sin, past_k=None, past_v=None):
        a, k, v = self.attn(self.ln_1(x), cos, sin, past_k, past_v)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, k, v


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0 and config.head_size % 2 == 0
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.factorized_notes:
            inst, pitch = note_parts(config.vocab_size)
            self.register_buffer("note_inst", inst, persistent=False)
            self.register_buffer("note_pitch", pitch, persistent=False)
            # row 0 is the zero part of every other token (padding_idx keeps it zero)
            self.inst_part = nn.Embedding(2 * V.N_INSTRUMENTS + 1, config.n_embd, padding_idx=0)
            self.pitch_part = nn.Embedding(2 * V.N_PITCHES + 1, config.n_embd, padding_idx=0)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (with factorized notes: tied to token_table())
        cos, sin = rope_tables(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def token_table(self) -> torch.Tensor:
        """(vocab, C): every token's embedding, which is also the output layer's weight."""
        if not self.config.factorized_notes:
            return self.wte.weight
        return self.wte.weight + self.inst_part(self.note_inst) + self.pitch_part(self.note_pitch)

    def _embed(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (B, T, C), the token table) for token ids idx (B, T)."""
        table = self.token_table()
        return F.embedding(idx, table), table

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, ignore_index: int = V.PAD):
        """Training / scoring: idx (B, T) at positions 0..T-1. Returns logits (B, T, vocab) and the mean
        cross-entropy over targets (B, T) that are not `ignore_index` (None without targets)."""
        T = idx.shape[1]
        assert T <= self.config.block_size, f"sequence of {T} tokens exceeds block_size"
        x, table = self._embed(idx)
        x = self.drop(x)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        for block in self.blocks:
            x, _, _ = block(x, cos, sin)
        logits = F.linear(self.ln_f(x), table)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index
            )
        return logits, loss

    def forward_cached(self, idx: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        """Incremental decoding: idx (B, T) new tokens at positions P..P+T-1 after a cache of P tokens.
        past_k/past_v (L, B, H, P, D). Returns logits (B, T, vocab), present_k/present_v (L, B, H, P+T, D)."""
        P, T = past_k.shape[3], idx.shape[1]
        x, table = self._embed(idx)
        cos, sin = self.rope_cos[P : P + T], self.rope_sin[P : P + T]
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, cos, sin, past_k[i], past_v[i])
            keys.append(k)
            values.append(v)
        logits = F.linear(self.ln_f(x), table)
        return logits, torch.stack(keys), torch.stack(values)

    def empty_cache(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """A cache of zero tokens: two (L, B, H, 0, D) tensors."""
        c = self.config
        shape = (c.n_layer, batch, c.n_head, 0, c.head_size)
        return torch.zeros(shape), torch.zeros(shape)


def note_parts(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(instrument part, pitch part) row of every token (vocab_size,) int64: note-on rows 1..N, note-off rows
    N+1..2N; 0 (the zero row) for every token that is not a note."""
    inst = torch.zeros(vocab_size, dtype=torch.long)
    pitch = torch.zeros(vocab_size, dtype=torch.long)
    for half, kind in enumerate(("note_on", "note_off")):
        start = V.OFFSETS[kind]
        ids = torch.arange(V.N_INSTRUMENTS * V.N_PITCHES)
        inst[start + ids] = 1 + half * V.N_INSTRUMENTS + ids // V.N_PITCHES
        pitch[start + ids] = 1 + half * V.N_PITCHES + ids % V.N_PITCHES
    return inst, pitch


def rotate_keys(keys: torch.Tensor, shift: int, config: GPTConfig) -> torch.Tensor:
    """Move rotated keys (..., P, D) back by `shift` positions: what the engine does when its window slides."""
    angle = -shift * _frequencies(config)
    return apply_rope(keys, torch.cos(angle), torch.sin(angle))
