"""Prompt-to-Prompt attention control as diffusers attention processors.

Batch layout (the contract between the denoising loop and these processors). The UNet batch holds `groups` groups
(1 without classifier-free guidance, 2 with it: [unconditional, conditional]); each group holds the `n` source rows
followed by the `n` target rows:

    B = groups * 2 * n          row index = g * 2n + s * n + i      (g: group, s: 0 source / 1 target, i: pair)

so every attention-probability tensor [B, heads, N, M] is viewed as [groups, 2, n, heads, N, M] and target i of
group g reads *only* source i of group g. Nothing depends on B being 2 (one pair) or on CFG being on, which is the
defect of the published controller (docs/method.md §3: it assumes an [uncond; cond] split when CFG is off, so one pair
never gets the source's maps and batched pairs contaminate each other).

Control (P2P "refine", as UltraEdit uses it):
- self-attention injection: during the first round(p_i * T) of the T denoising steps run, target i's self-attention
  probabilities are replaced by source i's, on the self-attention layers the config selects (default: query length
  <= 256, i.e. the 16x16 and smaller resolutions of a 512-px SDXL/SD1.5 UNet, as in P2P). Only in the conditional
  CFG group by default (`control_uncond=False`, both recipes, docs/method.md §12): P2P's controller edits the
  conditional half only, and the InstructPix2Pix recipe is specified that way; `control_uncond=True` also ties the
  unconditional half. Without CFG there is one group and it is controlled. The target keeps its own values V: only
  *where* it attends is taken from the source.
- cross-attention refine: during the first round(f * T) steps, f = the pair's own p (`cross_fraction=None`, the
  released UltraEdit code builds its controller with p for both) or a fixed `cross_fraction`, on every cross-attention
  layer,
  target i's probability for text position j becomes
      alpha_i[j] * P_src_i[:, mapper_i[j]] + (1 - alpha_i[j]) * P_tgt_i[:, j]
  with (mapper, alpha) from `alignment.refine_mapping` (alpha = 1 for tokens both captions share). Only the
  conditional group is refined: the unconditional context is the empty prompt, which the caption alignment does not
  describe.

The step counter is set explicitly by the loop (`controller.begin_step(k)`), never inferred by counting layer calls.
Layers the config selects (all cross-attention layers, the selected self-attention layers) always compute the
probabilities explicitly (fp32 softmax), with or without a controller; other layers run scaled-dot-product attention
exactly like diffusers' AttnProcessor2_0. So a controller that controls nothing reproduces a plain generation, and a
pair's arithmetic does not depend on its batch mates (up to the ~1e-6 rounding differences that GEMM/conv kernels
themselves show between batch sizes; tests/test_p2p.py measures both).

Step counting: control on steps k < round(f * T) (half up), f = p for self-injection and p (or cross_fraction) for
refine.
P2P floors instead (int(f * T)); with SDXL-Turbo's 1-4 steps flooring would leave every single-step candidate
(N = 3 at strength 0.6) without any control (int(0.8 * 1) = 0), so we round: "the first fraction f of the steps" is
the nearest whole number of steps. p = 0 never injects, p = 1 always does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ultraedit_dagster.editing.alignment import RefineMapping

# recorder(layer_name, kind 'self'|'cross', step, probs [B, heads, N, M]) — the probabilities actually used
Recorder = Callable[[str, str, int, torch.Tensor], None]


@dataclass(frozen=True)
class P2PConfig:
    """Which layers are controlled and for how long (fractions of the steps actually run)."""

    self_max_tokens: int | None = 256  # self-attention layers with query length <= this; None: all layers
    layer_filter: tuple[str, ...] = ()  # if set, only processors whose name contains one of these substrings
    # refine cross-attention for the first fraction of steps: None = each pair's own p (the released UltraEdit code);
    # a number fixes it for every pair (0.8 is P2P's notebook default; 0: off)
    cross_fraction: float | None = None
    control_uncond: bool = False  # also inject self-attention in the unconditional CFG group (P2P: no)


def leading_steps(fraction: float, num_steps: int) -> int:
    """How many leading steps "the first `fraction` of `num_steps` steps" covers: round half up, within [0, T]."""
    return max(0, min(num_steps, math.floor(float(fraction) * num_steps + 0.5 + 1e-9)))


class P2PController:
    """Per-batch control state shared by all processors of one UNet.

    n pairs; `self_fractions[i]` = p_i; `refine[i]` = the target-to-source token mapping of pair i or None
    (no cross-attention refine for that pair).
    """

    def __init__(
        self,
        num_pairs: int,
        groups: int,
        num_steps: int,
        self_fractions: Sequence[float],
        refine: Sequence[RefineMapping | None] | None = None,
        config: P2PConfig = P2PConfig(),
        recorder: Recorder | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if groups not in (1, 2):
            raise ValueError("groups must be 1 (no CFG) or 2 (CFG: [uncond, cond])")
        if len(self_fractions) != num_pairs:
            raise ValueError(f"{len(self_fractions)} self fractions for {num_pairs} pairs")
        self.n = num_pairs
        self.groups = groups
        self.num_steps = num_steps
        self.config = config
        self.recorder = recorder
        self.step = 0
        # number of leading controlled steps: round(f * T), half up (see the module docstring)
        self.self_steps = torch.tensor([leading_steps(p, num_steps) for p in self_fractions])
        refine = list(refine) if refine is not None else [None] * num_pairs
        if len(refine) != num_pairs:
            raise ValueError(f"{len(refine)} refine mappings for {num_pairs} pairs")
        cross = [config.cross_fraction if config.cross_fraction is not None else p for p in self_fractions]
        self.cross_steps = torch.tensor(
            [leading_steps(f, num_steps) if r is not None else 0 for f, r in zip(cross, refine, strict=True)]
        )
        length = next((len(r.mapper) for r in refine if r is not None), 77)
        self.mapper = torch.stack(
            [torch.as_tensor(r.mapper if r is not None else range(length), dtype=torch.long) for r in refine]
        )  # [n, M]
        self.alphas = torch.stack(
            [torch.as_tensor(r.alphas if r is not None else [0.0] * length, dtype=torch.float32) for r in refine]
        )  # [n, M]
        # Everything the controlled attention calls read lives on the UNet's device, built once here and once per
        # step in `begin_step`: no host-to-device copy inside the hundreds of attention calls of a UNet pass
        # (docs/method.md §8).
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.mapper = self.mapper.to(self.device)
        self._alphas_by_dtype: dict[torch.dtype, torch.Tensor] = {torch.float32: self.alphas.to(self.device)}
        self._self_now: torch.Tensor | None = None
        self._cross_now: torch.Tensor | None = None
        self.begin_step(0)

    def begin_step(self, step: int) -> None:
        self.step = step
        # host-side decisions (no device sync), then the per-pair masks moved to the device once for the step
        self_now = self.self_steps > step
        cross_now = self.cross_steps > step
        self._self_now = self_now.to(self.device) if bool(self_now.any()) else None
        self._cross_now = cross_now.to(self.device) if bool(cross_now.any()) else None

    def _alphas(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self._alphas_by_dtype:
            self._alphas_by_dtype[dtype] = self._alphas_by_dtype[torch.float32].to(dtype)
        return self._alphas_by_dtype[dtype]

    # -- which pairs are controlled now ---------------------------------------------------------------------------

    def _layer_selected(self, name: str) -> bool:
        return not self.config.layer_filter or any(s in name for s in self.config.layer_filter)

    def self_active(self, name: str, query_len: int) -> torch.Tensor | None:
        """Bool [n] of pairs whose target takes the source's self-attention now, or None when no pair does."""
        if not self._layer_selected(name):
            return None
        if self.config.self_max_tokens is not None and query_len > self.config.self_max_tokens:
            return None
        return self._self_now

    def cross_active(self, name: str) -> torch.Tensor | None:
        if not self._layer_selected(name):
            return None
        return self._cross_now

    # -- the edits --------------------------------------------------------------------------------------------------

    def edit_self(self, probs: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        # probs: [B, H, N, N] with B = groups * 2 * n
        b, h, nq, nk = probs.shape
        g, n = self.groups, self.n
        assert b == g * 2 * n, f"batch {b} != groups {g} * 2 * pairs {n}"
        view = probs.view(g, 2, n, h, nq, nk)  # [G, 2, n, H, N, N]
        src, tgt = view[:, 0], view[:, 1]  # [G, n, H, N, N] each
        mask = active.to(probs.device).view(1, n, 1, 1, 1).expand(g, n, 1, 1, 1).clone()  # [G, n, 1, 1, 1]
        if g == 2 and not self.config.control_uncond:
            mask[0] = False
        new_tgt = torch.where(mask, src, tgt)  # pair i's target <- pair i's source, same group
        return torch.stack([src, new_tgt], dim=1).view(b, h, nq, nk)

    def edit_cross(self, probs: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        # probs: [B, H, N, M] with M text positions (77)
        b, h, nq, m = probs.shape
        g, n = self.groups, self.n
        assert b == g * 2 * n, f"batch {b} != groups {g} * 2 * pairs {n}"
        view = probs.view(g, 2, n, h, nq, m)
        src, tgt = view[:, 0], view[:, 1]  # [G, n, H, N, M]
        mapper = self.mapper  # [n, M] on the device: target position j reads source position mapper[i, j]
        alphas = self._alphas(probs.dtype)  # [n, M]
        index = mapper.view(1, n, 1, 1, m).expand(g, n, h, nq, m)
        src_mapped = torch.gather(src, dim=-1, index=index)  # [G, n, H, N, M]: src[..., mapper[i, j]]
        a = alphas.view(1, n, 1, 1, m)
        refined = src_mapped * a + tgt * (1.0 - a)  # [G, n, H, N, M]
        mask = active.to(probs.device).view(1, n, 1, 1, 1).expand(g, n, 1, 1, 1).clone()
        if g == 2:
            mask[0] = False  # unconditional group: empty prompt, nothing to align
        new_tgt = torch.where(mask, refined, tgt)
        return torch.stack([src, new_tgt], dim=1).view(b, h, nq, m)


class ControllerSlot:
    """A mutable holder the processors share, so one set of processors serves every batch (set once per UNet).

    `config` fixes which layers compute attention probabilities explicitly (all cross-attention layers and the
    selected self-attention layers) *whether or not* a controller is active: the arithmetic path of a layer never
    depends on the step, on the batch's other pairs or on control being on, so a pair's result does not depend on
    what it is batched with, and a controller that controls nothing equals a plain run.
    """

    def __init__(self, config: P2PConfig = P2PConfig()) -> None:
        self.config = config
        self.controller: P2PController | None = None

    def explicit(self, name: str, is_cross: bool, query_len: int) -> bool:
        c = self.config
        if c.layer_filter and not any(s in name for s in c.layer_filter):
            return False
        return is_cross or c.self_max_tokens is None or query_len <= c.self_max_tokens


class P2PAttnProcessor:
    """AttnProcessor2_0 semantics, plus explicit probabilities + P2P edits where the controller asks for them."""

    def __init__(self, name: str, slot: ControllerSlot) -> None:
        self.name = name
        self.slot = slot

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        is_cross = encoder_hidden_states is not None
        # hidden_states: [B, N, C]; context: [B, M, C_ctx] (M = N for self-attention)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)  # [B, N, inner]
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)  # [B, M, inner]
        value = attn.to_v(encoder_hidden_states)  # [B, M, inner]
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # [B, H, N, d]
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # [B, H, M, d]
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # [B, H, M, d]
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if not self.slot.explicit(self.name, is_cross, query.shape[2]):
            out = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
            )  # [B, H, N, d]
        else:
            scale = attn.scale if getattr(attn, "scale", None) is not None else head_dim**-0.5
            scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale  # [B, H, N, M] (fp32)
            if attention_mask is not None:
                scores = scores + attention_mask.float()
            probs = scores.softmax(dim=-1)  # [B, H, N, M]
            ctrl = self.slot.controller
            if ctrl is not None:
                active = ctrl.cross_active(self.name) if is_cross else ctrl.self_active(self.name, query.shape[2])
                if active is not None:
                    probs = ctrl.edit_cross(probs, active) if is_cross else ctrl.edit_self(probs, active)
                if ctrl.recorder is not None:
                    ctrl.recorder(self.name, "cross" if is_cross else "self", ctrl.step, probs.detach())
            out = torch.matmul(probs.to(value.dtype), value)  # [B, H, N, d]

        hidden_states = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def install(unet, config: P2PConfig = P2PConfig()) -> ControllerSlot:
    """Give every attention layer of `unet` a P2P processor sharing one slot; returns the slot.

    Idempotent: a second call reuses the processors and only updates the slot's layer selection.
    """
    existing = getattr(unet, "_p2p_slot", None)
    if existing is not None:
        existing.config = config
        return existing
    slot = ControllerSlot(config)
    unet.set_attn_processor({name: P2PAttnProcessor(name, slot) for name in unet.attn_processors})
    unet._p2p_slot = slot
    return slot
