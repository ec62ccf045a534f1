"""Prompted text and vision encoders on open_clip's own modules (IVLP scaffold).

docs/METHOD.md section 1 ([recon] from the IVLP code of Khattak et al., ICCV 2023):
- text: positions 1..n (after the start token) of ``"X X X X {class}."`` are replaced by the
  layer-0 prompts before the positional embedding is added; at the input of blocks 1..J-1 the
  same positions are overwritten by that layer's prompts; pooling stays open_clip's.
- vision: the layer-0 prompts are appended after the patch tokens (no positional embedding),
  normalised by ``ln_pre`` like every token; at blocks 1..J-1 the last n tokens are overwritten;
  pooling stays the class token.
Nothing of CLIP is copied: the functions call the model's embedding, blocks, norms and pooling.
"""
from __future__ import annotations

import torch
from open_clip.transformer import text_global_pool
from torch import nn


def placeholder_texts(class_names: list[str], n_ctx: int) -> list[str]:
    """Texts whose positions 1..n_ctx the text prompts replace: ``"X X X X {name}."``."""
    prefix = " ".join(["X"] * n_ctx)
    return [f"{prefix} {name}." for name in class_names]


def trim_context(tokens: torch.Tensor) -> torch.Tensor:
    """Cut token ids (N, 77) to the longest sequence in the batch: (N, L), L = max EOT index + 1.

    Exact under CLIP's causal mask: tokens after the end-of-text token never reach it
    (docs/METHOD.md section 1 invariant; tested). Assumes open_clip's argmax pooling (EOT has the
    highest id).
    """
    length = int(tokens.argmax(dim=-1).max().item()) + 1
    return tokens[:, :length]


def _run_blocks(transformer: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None,
                prompts: torch.Tensor | None, insert) -> torch.Tensor:
    """Run `transformer.resblocks` on x (B, L, d), calling `insert(x, prompts[l])` before blocks 1..J-1."""
    batch_first = getattr(transformer, "batch_first", True)
    depth = 0 if prompts is None else prompts.shape[1]
    for i, block in enumerate(transformer.resblocks):
        if 0 < i < depth:
            x = insert(x, prompts[:, i])
        if batch_first:
            x = block(x, attn_mask=attn_mask)
        else:
            x = block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    return x


def encode_text(model: nn.Module, tokens: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
    """Prompted text features (unnormalised).

    Args:
        model: open_clip ``CLIP`` (frozen).
        tokens: LongTensor (C, L), L <= context length; with prompts, positions 1..n hold
            placeholders (see :func:`placeholder_texts`).
        prompts: FloatTensor (J_t, n, d_t) shared by all rows, or None for the plain encoder
            (then equal to ``model.encode_text`` up to float rounding when L is the full context).

    Returns:
        FloatTensor (C, D) in the model's cast dtype.
    """
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)  # (C, L, d_t)
    rows = None
    if prompts is not None and prompts.shape[0] > 0:
        n = prompts.shape[1]
        rows = prompts.to(cast_dtype).unsqueeze(0).expand(x.shape[0], -1, -1, -1)  # (C, J, n, d_t)

        def insert(h: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return torch.cat([h[:, :1], p, h[:, 1 + n:]], dim=1)

        x = insert(x, rows[:, 0])
    else:
        insert = None
    length = tokens.shape[1]
    x = x + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    x = _run_blocks(model.transformer, x, mask, rows, insert)
    x = model.ln_final(x)  # (C, L, d_t)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return x


def encode_image(model: nn.Module, images: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
    """Prompted image features (unnormalised), per-row prompts allowed.

    Args:
        model: open_clip ``CLIP`` (frozen) with a ``VisionTransformer`` tower.
        images: FloatTensor (B, 3, H, W), CLIP-normalised.
        prompts: None (plain encoder, equals ``model.encode_image``), FloatTensor (J_v, n, d_v)
            shared by the batch, or (B, J_v, n, d_v) with one adapter's prompts per row (mixed
            multi-adapter batches, docs/METHOD.md section 6). All rows must share J_v and n.

    Returns:
        FloatTensor (B, D).
    """
    visual = model.visual
    x = visual._embeds(images)  # (B, 1 + grid^2, d_v), after ln_pre
    if prompts is not None and prompts.shape[-3] > 0:
        if prompts.dim() == 3:
            prompts = prompts.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
        rows = prompts.to(x.dtype)  # (B, J, n, d_v)
        n = rows.shape[2]

        def insert(h: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return torch.cat([h[:, :-n], p], dim=1)

        x = torch.cat([x, visual.ln_pre(rows[:, 0])], dim=1)  # ln_pre is per token
        x = _run_blocks(visual.transformer, x, None, rows, insert)
        x = x[:, :-n]  # drop prompt tokens before pooling
    else:
        x = _run_blocks(visual.transformer, x, None, None, None)
    pooled, _ = visual._pool(x)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return pooled
