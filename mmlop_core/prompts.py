"""Low-rank deep prompts: the only trainable parameters of an adapter.

For modality m in {text, vision} and layer l < J_m, the prompt matrix is
P_l^m (n x d_m) = U_l^m (n x r) @ V_l^m (r x d_m)  (docs/METHOD.md section 2, [paper] low rank and a
shared factor; [recon] which factor is shared). With ``share_u='modalities'`` one U_l per layer
serves both towers, so both prompts at a layer are projections of the same r-dimensional codes.
``rank=None`` learns P directly, which is exactly IVLP's deep prompts.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import AdapterConfig, ShareU
from .errors import ConfigError


class LowRankPrompts(nn.Module):
    """Trainable prompt factors of one adapter.

    Parameters (shapes, fp32), low rank (``config.rank = r``):
        ``u`` (L_u, n, r) shared across modalities (L_u = max(J_t, J_v)), or ``u_text``
        (J_t or 1, n, r) and ``u_vision`` (J_v or 1, n, r) when not shared;
        ``v_text`` (J_t, r, d_t), ``v_vision`` (J_v, r, d_v).
    Full rank (``rank=None``): ``p_text`` (J_t, n, d_t), ``p_vision`` (J_v, n, d_v).

    Init: entries of every prompt P are ~N(0, init_std^2) (IVLP's normal(0, 0.02)): U ~ N(0, 1/r),
    V ~ N(0, init_std^2), so Var(P_ij) = r * (1/r) * init_std^2.

    Raises:
        ConfigError: a depth exceeds the backbone's number of blocks.
    """

    def __init__(self, config: AdapterConfig, text_width: int, vision_width: int,
                 text_layers: int | None = None, vision_layers: int | None = None) -> None:
        super().__init__()
        for name, depth, layers in (("text_depth", config.text_depth, text_layers),
                                    ("vision_depth", config.vision_depth, vision_layers)):
            if layers is not None and depth > layers:
                raise ConfigError(f"{name}={depth} exceeds the backbone's {layers} transformer blocks")
        self.config = config
        self.n_ctx, self.text_depth, self.vision_depth = config.n_ctx, config.text_depth, config.vision_depth
        self.text_width, self.vision_width = text_width, vision_width
        n, r, std = config.n_ctx, config.rank, config.init_std
        jt, jv = config.text_depth, config.vision_depth
        if r is None:
            self.p_text = nn.Parameter(torch.randn(jt, n, text_width) * std)
            self.p_vision = nn.Parameter(torch.randn(jv, n, vision_width) * std)
            return
        u_std = 1.0 / math.sqrt(r)
        if config.share_u is ShareU.MODALITIES:
            self.u = nn.Parameter(torch.randn(max(jt, jv), n, r) * u_std)
        elif config.share_u is ShareU.LAYERS:
            self.u_text = nn.Parameter(torch.randn(1 if jt else 0, n, r) * u_std)
            self.u_vision = nn.Parameter(torch.randn(1 if jv else 0, n, r) * u_std)
        else:
            self.u_text = nn.Parameter(torch.randn(jt, n, r) * u_std)
            self.u_vision = nn.Parameter(torch.randn(jv, n, r) * u_std)
        self.v_text = nn.Parameter(torch.randn(jt, r, text_width) * std)
        self.v_vision = nn.Parameter(torch.randn(jv, r, vision_width) * std)

    @property
    def trainable_parameters(self) -> int:
        """Number of trainable scalars (11,556 for the `mmlop` preset at ViT-B/16)."""
        return sum(p.numel() for p in self.parameters())

    def _u(self, modality: str, depth: int) -> torch.Tensor:
        """Token-side factor for `depth` layers of `modality`: (depth, n, r)."""
        if self.config.share_u is ShareU.MODALITIES:
            return self.u[:depth]
        u = self.u_text if modality == "text" else self.u_vision
        return u.expand(depth, -1, -1) if self.config.share_u is ShareU.LAYERS else u

    def text_prompts(self) -> torch.Tensor:
        """Text prompts of layers 0..J_t-1: FloatTensor (J_t, n, d_t)."""
        if self.config.rank is None:
            return self.p_text
        return self._u("text", self.text_depth) @ self.v_text

    def vision_prompts(self) -> torch.Tensor:
        """Vision prompts of layers 0..J_v-1: FloatTensor (J_v, n, d_v)."""
        if self.config.rank is None:
            return self.p_vision
        return self._u("vision", self.vision_depth) @ self.v_vision

    @torch.no_grad()
    def fit_text_layer0(self, embedding: torch.Tensor) -> None:
        """Set the layer-0 text prompt to the best rank-r fit of `embedding` (n, d_t).

        Implements docs/METHOD.md section 2's optional init: rank-r truncated SVD of the token
        embedding of the words "a photo of a"; U gets U_r sqrt(S_r), V gets sqrt(S_r) V_r^T.
        With a shared U the vision layer-0 prompt then uses the same codes.

        Raises:
            ConfigError: `embedding` is not (n, d_t).
        """
        if tuple(embedding.shape) != (self.n_ctx, self.text_width):
            raise ConfigError(f"init_words embeds to shape {tuple(embedding.shape)}, expected "
                              f"({self.n_ctx}, {self.text_width}); use exactly n_ctx={self.n_ctx} words")
        emb = embedding.to(torch.float32)
        if self.config.rank is None:
            self.p_text[0].copy_(emb)
            return
        r = self.config.rank
        u, s, vh = torch.linalg.svd(emb, full_matrices=False)
        k = min(r, s.numel())
        root = s[:k].sqrt()
        u_new = torch.zeros(self.n_ctx, r)
        v_new = torch.zeros(r, self.text_width)
        u_new[:, :k] = u[:, :k] * root
        v_new[:k] = root[:, None] * vh[:k]
        target = self.u if self.config.share_u is ShareU.MODALITIES else self.u_text
        target[0].copy_(u_new)
        self.v_text[0].copy_(v_new)
