"""Post-training quantization of encoders: :func:`quantize_encoder` and the modules it puts in place.

Four modes (:data:`QUANTIZE_MODES`), all in place, all for inference:

- ``"int8"``: dynamic int8 on the CPU. Each ``nn.Linear`` becomes an :class:`Int8DynamicLinear`: weights int8, per
  output channel, symmetric, prepacked once for the quantized engine (fbgemm on x86); activations are quantized per
  call from their own min/max (``torch.ops.quantized.linear_dynamic``). The numerics are those of
  ``torch.ao.quantization.quantize_dynamic`` with ``per_channel_dynamic_qconfig`` (``DynamicQuantizedLinear``,
  ``reduce_range=True``: 7-bit activations, which avoid the int16 saturation of x86 CPUs without VNNI), without its
  module swap of the whole model. Each ``nn.MultiheadAttention`` becomes an :class:`Int8MultiheadAttention`.
- ``"int8-static"``: static int8 on the CPU. One forward pass over a calibration batch records each ``nn.Linear``'s
  input and output range (min/max); each becomes an :class:`Int8StaticLinear` that quantizes its input with that
  fixed scale (quint8, per tensor, 7-bit as above), runs ``torch.ops.quantized.linear`` and dequantizes its output,
  which was requantized to 8 bits with the calibrated output scale.
- ``"int8-weight"`` / ``"int4-weight"``: weight-only quantization through torchao (``pip install "visionfm[quant]"``):
  ``Int8WeightOnlyConfig`` (per row) and ``Int4WeightOnlyConfig(group_size=128)`` with the tinygemm packing
  (``int4_packing_format="tile_packed_to_4d"``; torchao's default int4 format needs the separate ``mslk`` kernels).
  Activations stay in floating point. int8-weight runs on CPU and CUDA in any float dtype; on this kind of CPU it
  saves memory, not time (one 1576x768 @ 768x3072 product, one thread: fp32 69 ms, int8-weight 78 ms). int4-weight
  needs CUDA (compute capability 8.0+) and bfloat16 weights: torchao 0.18's CPU int4 kernel is a prototype
  (``torchao.prototype.quantization.int4``) with bfloat16 activations, slower than fp32 on a CPU without
  avx512_bf16/AMX (the same product: 110 ms).

Measured on a 2-core AVX-512 VNNI Xeon, one thread: the 1576x768 @ 768x3072 linear takes 49 ms in fp32, 16.5 ms
int8 dynamic (as ``quantize_dynamic``), 17 ms int8 static (the fixed-scale input quantization and the output
dequantization cost what the dynamic range pass saves); a random-weight open_clip ViT-B/16 image tower, 8 images:
2.47 s fp32, 1.09 s int8 or int8-static, 2.43 s int8-weight; weights 328 MiB -> 86 MiB.

Why torchao for the weight-only modes rather than native PyTorch: torchao is the PyTorch team's maintained
quantization library (``torch.ao.quantization`` is deprecated in its favour), its quantized weights are tensor
subclasses that stay in ``linear.weight``, so code that calls ``F.linear(x, m.weight)`` or reads ``m.weight.dtype``
keeps working and dispatches to the quantized kernel, and it carries the CUDA kernels (tinygemm int4 and the
int8 weight-only matmul) that PyTorch exposes only as low-level ``aten`` ops. It is imported lazily: the int8 CPU
modes use only PyTorch.

What is converted: ``nn.Linear`` (and ``nn.MultiheadAttention``'s out-projection type) and ``nn.MultiheadAttention``,
as a whole, into a :class:`ProjectedMultiheadAttention` (its in- and out-projections as linear layers) for the
quantized linears to replace. Convolutions (patch embeddings), norms, embeddings and bare parameters such as
open_clip's ``proj`` stay as they are. Layers smaller than ``min_features`` in either dimension (classifier heads,
LoRA factors), the ones ``skip`` names, subclasses of ``nn.Linear`` (their forward may differ), attention with
``add_bias_kv`` / ``add_zero_attn`` or under a PEFT wrapper, and (int8-static) linears the calibration batch does not
reach stay in float; the report lists each with its reason.

Code that reads weights directly keeps working: the quantized linears expose ``weight`` (and the attention modules
``in_proj_weight``) as read-only properties returning the dequantized float weight (computed per access), so dense
CLIP features (``F.linear(x, attn.in_proj_weight)``) run on the quantized model's weights in float.

``torch.quantize_per_channel`` and the quantized dtypes that ``torch.ops.quantized`` takes are deprecated in
PyTorch 2.14 (pytorch/pytorch#184982); the int8 CPU modes depend on them, and their one-time warning is silenced here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

QUANTIZE_MODES: tuple[str, ...] = ("int8", "int8-static", "int8-weight", "int4-weight")

#: Linear types converted; any other subclass of ``nn.Linear`` is kept (its forward may do more than ``F.linear``).
_LINEAR_TYPES: tuple[type, ...] = (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)
_INT4_GROUP_SIZE = 128
_EPS = torch.finfo(torch.float32).eps
_QUANT_INSTALL = 'pip install "visionfm[quant]"'


@contextlib.contextmanager
def _quiet_quantized_ops() -> Iterator[None]:
    """Silence PyTorch's one-time deprecation warning of the quantized tensor functions (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated")
        yield


def _affine_qparams(lo: float, hi: float, qmin: int, qmax: int) -> tuple[float, int]:
    """Per-tensor affine (scale, zero point) covering ``[lo, hi]`` (widened to include 0), as torch's MinMaxObserver."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max((hi - lo) / float(qmax - qmin), _EPS)
    zero_point = int(min(max(qmin - round(lo / scale), qmin), qmax))
    return scale, zero_point


class _PackedInt8Linear(nn.Module):
    """Shared part of the int8 linears: per-channel symmetric int8 weights prepacked for the quantized engine.

    The int8 weight, its per-channel scales and the bias are what ``state_dict()`` holds (as ``_extra_state``), so a
    quantized encoder saves and loads; the engine's packed form is rebuilt on load.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._packed_params: Any = None
        # open_clip reads this (its bitsandbytes int8 convention) instead of dequantizing c_fc.weight for its dtype.
        self.int8_original_dtype = torch.float32

    def _pack(self, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor | None = None) -> None:
        """Quantize ``weight [out, in]`` per output channel (symmetric qint8, scale ``max|w| / 127.5`` as torch's
        per-channel weight observer, unless ``scale [out]`` is given) and prepack it with ``bias``."""
        w = weight.detach().to("cpu", torch.float32)
        scale = (w.abs().amax(dim=1) / 127.5).clamp_min(_EPS) if scale is None else scale
        scale = scale.double()
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        with _quiet_quantized_ops():
            qw = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
            b = bias.detach().to("cpu", torch.float32).clone() if bias is not None else None
            self._packed_params = torch.ops.quantized.linear_prepack(qw, b)

    def _unpack(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.ops.quantized.linear_unpack(self._packed_params)

    @property
    def weight(self) -> torch.Tensor:
        """``[out_features, in_features]`` float32: the dequantized int8 weight (read-only, computed per access)."""
        return self._unpack()[0].dequantize()

    @property
    def bias(self) -> torch.Tensor | None:
        """``[out_features]`` float32 bias, or ``None``."""
        return self._unpack()[1]

    def weight_nbytes(self) -> int:
        """Bytes of the quantized weight: int8 values, float32 scale and int32 zero point per channel, bias."""
        b = self._unpack()[1]
        return self.in_features * self.out_features + 8 * self.out_features + (b.numel() * 4 if b is not None else 0)

    def get_extra_state(self) -> dict[str, Any]:
        qw, b = self._unpack()
        return {
            "weight_int8": qw.int_repr(),
            "weight_scale": qw.q_per_channel_scales(),
            "bias": b,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        scale = state["weight_scale"].double()
        self._pack((state["weight_int8"].double() * scale[:, None]).float(), state["bias"], scale)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8DynamicLinear(_PackedInt8Linear):
    """``nn.Linear`` with int8 per-channel weights and int8 activations quantized per call (dynamic), on the CPU.

    Numerically the same as ``torch.ao.quantization``'s ``DynamicQuantizedLinear`` with per-channel weights.
    Inference only (no gradients).
    """

    def __init__(self, in_features: int, out_features: int, *, reduce_range: bool = True) -> None:
        super().__init__(in_features, out_features)
        self.reduce_range = bool(reduce_range)

    @classmethod
    def from_float(cls, linear: nn.Linear, *, reduce_range: bool = True) -> Int8DynamicLinear:
        """Quantize a float32 CPU ``nn.Linear``.

        Args:
            linear: the layer; its weight ``[out, in]`` and bias are quantized / copied, the layer is not changed.
            reduce_range: quantize activations to 7 bits (0..127), as PyTorch does on x86, where an 8-bit product
                can saturate on CPUs without VNNI. ``False`` gives 8-bit activations (more precise; safe with VNNI).

        Returns:
            The quantized layer.
        """
        m = cls(linear.in_features, linear.out_features, reduce_range=reduce_range)
        m._pack(linear.weight, linear.bias)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in_features]`` (any leading shape) to ``[..., out_features]`` in ``x``'s dtype."""
        x2 = x.float() if x.dim() > 1 else x.float().unsqueeze(0)  # the kernel needs 2+ dimensions
        y = torch.ops.quantized.linear_dynamic(x2, self._packed_params, reduce_range=self.reduce_range)
        return (y if x.dim() > 1 else y.squeeze(0)).to(x.dtype)

    def get_extra_state(self) -> dict[str, Any]:
        return {**super().get_extra_state(), "reduce_range": self.reduce_range}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.reduce_range = bool(state["reduce_range"])
        super().set_extra_state(state)


class Int8StaticLinear(_PackedInt8Linear):
    """``nn.Linear`` with int8 per-channel weights and int8 activations at a calibrated, fixed scale, on the CPU.

    The input is quantized to quint8 (per tensor, affine) with the scale and zero point of its calibrated range, the
    product is requantized to quint8 with the output's calibrated scale and returned dequantized (float32). Values
    outside the calibrated ranges are clipped. Inference only.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.input_scale, self.input_zero_point = 1.0, 0
        self.output_scale, self.output_zero_point = 1.0, 0

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        input_range: tuple[float, float],
        output_range: tuple[float, float],
        *,
        reduce_range: bool = True,
    ) -> Int8StaticLinear:
        """Quantize a float32 CPU ``nn.Linear`` with calibrated activation ranges.

        Args:
            linear: the layer (not changed).
            input_range: ``(min, max)`` of the layer's inputs over the calibration batch.
            output_range: ``(min, max)`` of its outputs.
            reduce_range: input quantized to 7 bits (0..127), as PyTorch's x86 default; the output always to 8 bits.

        Returns:
            The quantized layer.
        """
        m = cls(linear.in_features, linear.out_features)
        m._pack(linear.weight, linear.bias)
        m.input_scale, m.input_zero_point = _affine_qparams(*input_range, 0, 127 if reduce_range else 255)
        m.output_scale, m.output_zero_point = _affine_qparams(*output_range, 0, 255)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in_features]`` (any leading shape) to ``[..., out_features]`` in ``x``'s dtype."""
        x2 = x.float() if x.dim() > 1 else x.float().unsqueeze(0)  # the kernel needs 2+ dimensions
        xq = torch.quantize_per_tensor(x2, self.input_scale, self.input_zero_point, torch.quint8)
        y = torch.ops.quantized.linear(xq, self._packed_params, self.output_scale, self.output_zero_point).dequantize()
        return (y if x.dim() > 1 else y.squeeze(0)).to(x.dtype)

    def get_extra_state(self) -> dict[str, Any]:
        qp = (self.input_scale, self.input_zero_point, self.output_scale, self.output_zero_point)
        return {**super().get_extra_state(), "qparams": qp}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.input_scale, self.input_zero_point, self.output_scale, self.output_zero_point = state["qparams"]
        super().set_extra_state(state)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input_scale={self.input_scale:.3g}, output_scale={self.output_scale:.3g}"


def _float_weight(linear: nn.Module) -> torch.Tensor:
    """A linear layer's weight ``[out, in]`` as a plain float tensor, dequantized if it is a quantized tensor subclass:
    through its ``dequantize`` where it has one (torchao's int8), else as the layer's kernel computes it, from the
    identity matrix (torchao's int4 tensors have no ``dequantize``)."""
    w = linear.weight
    if type(w) in (torch.Tensor, nn.Parameter):
        return w
    if type(w).dequantize is not torch.Tensor.dequantize:
        return w.dequantize()
    eye = torch.eye(w.shape[-1], device=w.device, dtype=w.dtype)
    return F.linear(eye, w).t().contiguous()


def _float_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An attention mask in ``nn.MultiheadAttention``'s convention (bool: ``True`` = not attended) as an additive one."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


class ProjectedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with its projections as linear modules, so that quantized linears can take their place.

    Same call and outputs as ``nn.MultiheadAttention`` (``batch_first`` either way, batched or unbatched inputs,
    ``key_padding_mask`` / ``attn_mask`` boolean or additive, ``need_weights`` with or without head averaging), and
    the attributes code reads from it: ``embed_dim``, ``kdim``, ``vdim``, ``num_heads``, ``head_dim``,
    ``batch_first``, ``dropout``, ``_qkv_same_embed_dim``, ``in_proj_weight`` / ``q_proj_weight`` / ... (read-only,
    float, dequantized), ``in_proj_bias`` and ``out_proj`` (a module). The projections are ``in_proj``
    (``[..., E] -> [..., 3E]``) when query, key and value share the embedding size, else ``q_proj``, ``k_proj``,
    ``v_proj``. Cross-attention with a fused ``in_proj`` projects each input through all of it and keeps its part.
    Attention runs in ``F.scaled_dot_product_attention``; with ``need_weights`` it is computed explicitly.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        dropout: float = 0.0,
        projections: dict[str, nn.Module],
    ) -> None:
        super().__init__()
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.kdim = int(kdim) if kdim is not None else self.embed_dim
        self.vdim = int(vdim) if vdim is not None else self.embed_dim
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        self.head_dim = self.embed_dim // self.num_heads
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        names = ("in_proj", "out_proj") if self._qkv_same_embed_dim else ("q_proj", "k_proj", "v_proj", "out_proj")
        if set(projections) != set(names):
            raise ValueError(f"projections must be {names}, got {sorted(projections)}")
        for name in names:
            self.add_module(name, projections[name])

    @classmethod
    def from_float(
        cls, mha: nn.MultiheadAttention, convert: Callable[[nn.Linear], nn.Module] | None = None
    ) -> ProjectedMultiheadAttention:
        """Re-express an ``nn.MultiheadAttention`` (sharing its parameters) with each projection passed through
        ``convert`` (default: kept as a float ``nn.Linear``)."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("nn.MultiheadAttention with add_bias_kv or add_zero_attn is not supported")
        convert = convert or (lambda m: m)
        e = mha.embed_dim
        has_bias = mha.in_proj_bias is not None

        def linear(fan_in: int, fan_out: int, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
            m = nn.Linear(fan_in, fan_out, bias=bias is not None, device="meta")
            m.weight = nn.Parameter(weight.detach(), requires_grad=weight.requires_grad)
            if bias is not None:
                m.bias = nn.Parameter(bias.detach(), requires_grad=bias.requires_grad)
            return convert(m)

        b = mha.in_proj_bias
        if mha._qkv_same_embed_dim:
            projections = {"in_proj": linear(e, 3 * e, mha.in_proj_weight, b)}
        else:
            bq, bk, bv = b.chunk(3) if has_bias else (None, None, None)
            projections = {
                "q_proj": linear(e, e, mha.q_proj_weight, bq),
                "k_proj": linear(mha.kdim, e, mha.k_proj_weight, bk),
                "v_proj": linear(mha.vdim, e, mha.v_proj_weight, bv),
            }
        projections["out_proj"] = linear(e, e, mha.out_proj.weight, mha.out_proj.bias)
        return cls(
            e, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim, batch_first=mha.batch_first, dropout=mha.dropout,
            projections=projections,
        )  # fmt: skip

    # -- what readers of nn.MultiheadAttention use ----------------------------------------------------------------
    @property
    def in_proj_weight(self) -> torch.Tensor | None:
        """``[3E, E]`` float (dequantized) when query, key and value share the embedding size, else ``None``."""
        return _float_weight(self.in_proj) if self._qkv_same_embed_dim else None

    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        """``[3E]`` or ``None``."""
        if self._qkv_same_embed_dim:
            return self.in_proj.bias
        parts = [self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]
        return None if parts[0] is None else torch.cat(parts)

    @property
    def q_proj_weight(self) -> torch.Tensor | None:
        """``[E, E]`` float when the projections are separate, else ``None``."""
        return None if self._qkv_same_embed_dim else _float_weight(self.q_proj)

    @property
    def k_proj_weight(self) -> torch.Tensor | None:
        """``[E, kdim]`` float when the projections are separate, else ``None``."""
        return None if self._qkv_same_embed_dim else _float_weight(self.k_proj)

    @property
    def v_proj_weight(self) -> torch.Tensor | None:
        """``[E, vdim]`` float when the projections are separate, else ``None``."""
        return None if self._qkv_same_embed_dim else _float_weight(self.v_proj)

    # -- forward ----------------------------------------------------------------------------------------------------
    def _project(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.embed_dim
        if not self._qkv_same_embed_dim:
            return self.q_proj(query), self.k_proj(key), self.v_proj(value)
        if query is key and key is value:
            q, k, v = self.in_proj(query).chunk(3, dim=-1)
            return q, k, v
        q = self.in_proj(query)[..., :e]
        if key is value:
            kv = self.in_proj(key)
            return q, kv[..., e : 2 * e], kv[..., 2 * e :]
        return q, self.in_proj(key)[..., e : 2 * e], self.in_proj(value)[..., 2 * e :]

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention as ``nn.MultiheadAttention.forward``.

        Args:
            query: ``[B, L, E]`` (``batch_first``), ``[L, B, E]`` or unbatched ``[L, E]``.
            key: ``[B, S, kdim]`` / ``[S, B, kdim]`` / ``[S, kdim]``.
            value: ``[B, S, vdim]`` / ``[S, B, vdim]`` / ``[S, vdim]``.
            key_padding_mask: ``[B, S]`` (``[S]`` unbatched); bool ``True`` ignores that key, float is added.
            need_weights: also return the attention weights.
            attn_mask: ``[L, S]`` or ``[B * num_heads, L, S]``; bool ``True`` forbids, float is added.
            average_attn_weights: average the returned weights over heads.
            is_causal: a hint that ``attn_mask`` is the causal mask (which must be given, as in torch).

        Returns:
            ``(out, weights)``: ``out`` shaped as ``query`` with ``E`` channels; ``weights`` ``[B, L, S]`` (averaged)
            or ``[B, num_heads, L, S]`` (unbatched: without ``B``), ``None`` unless ``need_weights``.
        """
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint.")
        batched = query.dim() == 3
        q, k, v = self._project(query, key, value)
        if not batched:
            q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        b, n_q, n_k, h, d = q.shape[0], q.shape[1], k.shape[1], self.num_heads, self.head_dim
        q = q.reshape(b, n_q, h, d).transpose(1, 2)  # [B, H, L, D]
        k = k.reshape(b, n_k, h, d).transpose(1, 2)
        v = v.reshape(b, n_k, h, d).transpose(1, 2)
        mask = None
        if attn_mask is not None:
            m = _float_mask(attn_mask, q.dtype)
            mask = m.view(b, h, n_q, n_k) if m.dim() == 3 else m.view(1, 1, n_q, n_k)
        if key_padding_mask is not None:
            kpm = _float_mask(key_padding_mask, q.dtype).view(b, 1, 1, n_k)
            mask = kpm if mask is None else mask + kpm
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * (1.0 / math.sqrt(d))) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            weights = F.dropout(scores.softmax(dim=-1), p=p) if p > 0 else scores.softmax(dim=-1)  # as torch returns
            out = weights @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not batched:
                weights = weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(out.transpose(1, 2).reshape(b, n_q, self.embed_dim))
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


class Int8MultiheadAttention(ProjectedMultiheadAttention):
    """:class:`ProjectedMultiheadAttention` with :class:`Int8DynamicLinear` projections (mode ``"int8"``)."""

    @classmethod
    def from_float(  # type: ignore[override]
        cls, mha: nn.MultiheadAttention, convert: Callable[[nn.Linear], nn.Module] | None = None
    ) -> Int8MultiheadAttention:
        """Quantize a float32 CPU ``nn.MultiheadAttention`` (by default each projection with
        ``Int8DynamicLinear.from_float``)."""
        return super().from_float(mha, convert or Int8DynamicLinear.from_float)  # type: ignore[return-value]


# -- quantize_encoder ----------------------------------------------------------------------------------------------
def _tensor_nbytes(t: torch.Tensor) -> int:
    """Storage bytes of a tensor; for a tensor subclass (torchao), of the plain tensors it is made of."""
    if type(t) in (torch.Tensor, nn.Parameter) or not hasattr(t, "__tensor_flatten__"):
        return t.numel() * t.element_size()
    names, _ = t.__tensor_flatten__()
    return sum(_tensor_nbytes(getattr(t, n)) for n in names if getattr(t, n, None) is not None)


def _weight_nbytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (each tensor once) plus its int8 linears' packed weights."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += _tensor_nbytes(t)
    return total + sum(m.weight_nbytes() for m in module.modules() if isinstance(m, _PackedInt8Linear))


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def _check_int8_cpu(encoder: nn.Module, mode: str) -> None:
    tensors = [*encoder.parameters(), *encoder.buffers()]
    if any(t.device.type == "cuda" for t in tensors):
        kind = "int8 dynamic" if mode == "int8" else "int8 static"
        raise ValueError(f"{kind} quantization runs on CPU; on CUDA use 'int8-weight' or 'int4-weight'")
    if any(t.device.type != "cpu" for t in tensors):
        raise ValueError(f"mode={mode!r} runs on CPU; move the encoder there first (encoder.cpu())")
    dtypes = {t.dtype for t in encoder.parameters() if t.is_floating_point()}
    if dtypes - {torch.float32}:
        raise ValueError(
            f"mode={mode!r} needs float32 weights, got {sorted(str(d) for d in dtypes)}; load the encoder with "
            "dtype='fp32' (or call encoder.float())"
        )
    engine = torch.backends.quantized.engine
    if engine not in ("x86", "fbgemm", "onednn", "qnnpack"):
        raise RuntimeError(f"mode={mode!r} needs a quantized engine (torch.backends.quantized.engine is {engine!r})")


def _import_torchao(mode: str) -> Any:
    try:
        import torchao.quantization as tq
    except ImportError as e:
        raise ImportError(f"mode={mode!r} quantizes through torchao, which is not installed: {_QUANT_INSTALL}") from e
    return tq


def _check_weight_only(encoder: nn.Module, mode: str) -> None:
    floats = [t for t in encoder.parameters() if t.is_floating_point()]
    dtypes = {t.dtype for t in floats}
    if mode == "int4-weight":
        if not any(t.device.type == "cuda" for t in floats):
            raise ValueError(
                "int4-weight runs on CUDA (torchao's tinygemm kernel); move the encoder to a GPU, or on CPU use "
                "'int8' (fastest there) or 'int8-weight'"
            )
        if dtypes != {torch.bfloat16}:
            raise ValueError(
                f"int4-weight needs bfloat16 weights, got {sorted(str(d) for d in dtypes)}; load the encoder with "
                "dtype='bf16' (or call encoder.to(torch.bfloat16))"
            )


def quantize_encoder(
    encoder: nn.Module,
    mode: str,
    *,
    calibration: torch.Tensor | None = None,
    skip: Callable[[str, nn.Module], bool] | None = None,
    min_features: int = 64,
) -> dict[str, Any]:
    """Quantize an encoder's linear layers and multi-head attention in place, for inference.

    Args:
        encoder: any ``nn.Module`` (an :class:`~visionfm.foundation.encoder.Encoder`, or a part of one).
        mode: one of :data:`QUANTIZE_MODES`: ``"int8"`` (dynamic, CPU, float32 model), ``"int8-static"`` (CPU,
            float32, needs ``calibration``), ``"int8-weight"`` (torchao, CPU or CUDA, any float dtype),
            ``"int4-weight"`` (torchao, CUDA, bfloat16).
        calibration: for ``"int8-static"`` only: a batch the encoder is called on once to record activation
            ranges, e.g. preprocessed pixels ``[B, 3, H, W]`` (as from ``encoder.preprocess``).
        skip: ``skip(name, module) -> True`` keeps that ``nn.Linear`` / ``nn.MultiheadAttention`` (qualified name
            in ``encoder``) in float.
        min_features: layers with fewer input or output features stay in float (no gain, most error); an
            attention module counts its embedding size (and key/value sizes).

    Returns:
        A report: ``mode``; ``linear_converted`` (linear layers quantized, attention projections included);
        ``attention_converted`` (``nn.MultiheadAttention`` modules replaced); ``kept_float`` (``{name: reason}`` for
        each candidate left in float); ``weight_bytes_before`` / ``weight_bytes_after`` (all parameters and buffers,
        quantized weights counted as their int8/int4 values plus scales and zero points).

    Raises:
        ValueError: unknown ``mode``; ``calibration`` missing for (or given to another mode than) ``"int8-static"``;
            a device or dtype the mode does not run on.
        ImportError: torchao missing for the weight-only modes.
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"mode must be one of {QUANTIZE_MODES}, got {mode!r}")
    if mode == "int8-static" and calibration is None:
        raise ValueError("mode='int8-static' needs calibration=: a batch of preprocessed pixels [B, 3, H, W]")
    if mode != "int8-static" and calibration is not None:
        raise ValueError(f"calibration is used by mode='int8-static' only, not mode={mode!r}")
    if min_features < 1:
        raise ValueError(f"min_features must be >= 1, got {min_features}")
    tq = None
    if mode in ("int8", "int8-static"):
        _check_int8_cpu(encoder, mode)
    else:
        tq = _import_torchao(mode)
        _check_weight_only(encoder, mode)

    before = _weight_nbytes(encoder)
    kept: dict[str, str] = {}
    skip = skip or (lambda name, module: False)

    # 1. Multi-head attention, as a whole, into ProjectedMultiheadAttention (int8: with quantized projections).
    mhas = [(n, m) for n, m in encoder.named_modules() if isinstance(m, nn.MultiheadAttention)]
    float_mha_children: set[int] = set()
    targets: dict[str, nn.Module] = {}  # float linears still to convert, by name
    replaced: dict[str, tuple[nn.Module, nn.Module]] = {}  # attention name: (original, float replacement)
    n_attention = n_linear = 0
    for name, mha in mhas:
        reason = None
        if skip(name, mha):
            reason = "named by skip"
        elif min(mha.embed_dim, mha.kdim, mha.vdim) < min_features:
            reason = f"embedding size {min(mha.embed_dim, mha.kdim, mha.vdim)} < min_features={min_features}"
        elif mha.bias_k is not None or mha.add_zero_attn:
            reason = "add_bias_kv / add_zero_attn is not supported"
        elif mode == "int4-weight" and min(mha.embed_dim, mha.kdim, mha.vdim) % _INT4_GROUP_SIZE:
            reason = f"embedding size is not a multiple of the int4 group size {_INT4_GROUP_SIZE}"
        elif name.endswith("base_layer"):
            reason = "wrapped by a PEFT adapter (which reads its in_proj_weight)"
        if reason is not None:
            kept[name] = reason
            float_mha_children.update(id(c) for c in mha.modules())
            continue
        new = Int8MultiheadAttention.from_float(mha) if mode == "int8" else ProjectedMultiheadAttention.from_float(mha)
        _set_submodule(encoder, name, new)
        n_attention += 1
        if mode == "int8":
            n_linear += len(list(new.children()))
        else:
            targets.update({f"{name}.{c}": m for c, m in new.named_children()})
            replaced[name] = (mha, new)

    # 2. The other linear layers that qualify.
    for name, m in encoder.named_modules():
        if not isinstance(m, nn.Linear) or id(m) in float_mha_children or name in targets:
            continue
        if type(m) not in _LINEAR_TYPES:
            kept[name] = f"{type(m).__name__} is a subclass of nn.Linear (its forward may differ)"
        elif skip(name, m):
            kept[name] = "named by skip"
        elif min(m.in_features, m.out_features) < min_features:
            kept[name] = f"{m.in_features} -> {m.out_features} features, < min_features={min_features}"
        elif type(m.weight) not in (torch.Tensor, nn.Parameter):
            kept[name] = f"weight is already a {type(m.weight).__name__}"
        elif mode == "int4-weight" and m.in_features % _INT4_GROUP_SIZE:
            kept[name] = f"in_features={m.in_features} is not a multiple of the int4 group size {_INT4_GROUP_SIZE}"
        else:
            targets[name] = m

    # 3. Convert.
    if mode == "int8":
        for name, m in targets.items():
            _set_submodule(encoder, name, Int8DynamicLinear.from_float(m))
        n_linear += len(targets)
    elif mode == "int8-static":
        ranges = _calibrate(encoder, targets, calibration)
        for name, m in targets.items():
            if name not in ranges:
                kept[name] = "not run by the calibration batch"
                continue
            _set_submodule(encoder, name, Int8StaticLinear.from_float(m, *ranges[name]))
            n_linear += 1
    else:
        if mode == "int8-weight":
            config = tq.Int8WeightOnlyConfig(set_inductor_config=False)
        else:
            config = tq.Int4WeightOnlyConfig(
                group_size=_INT4_GROUP_SIZE,
                int4_packing_format="tile_packed_to_4d",  # tinygemm; the default "plain" needs the mslk kernels
                set_inductor_config=False,
            )
        wanted = {id(m) for m in targets.values()}
        tq.quantize_(encoder, config, filter_fn=lambda module, fqn: id(module) in wanted)
        for name, m in targets.items():
            if type(m.weight) in (torch.Tensor, nn.Parameter):
                kept[name] = "left in float by torchao"
            else:
                n_linear += 1

    # An attention module none of whose projections was quantized (int8-static: not calibrated) goes back as it was.
    for name, (mha, new) in replaced.items():
        projections = [f"{name}.{c}" for c, _ in new.named_children()]
        if all(p in kept for p in projections):
            _set_submodule(encoder, name, mha)
            kept[name] = kept[projections[0]]
            for p in projections:
                del kept[p]
            n_attention -= 1

    report = {
        "mode": mode,
        "linear_converted": n_linear,
        "attention_converted": n_attention,
        "kept_float": kept,
        "weight_bytes_before": before,
        "weight_bytes_after": _weight_nbytes(encoder),
    }
    logger.info(
        "quantize_encoder(%s): %d linear layers and %d attention modules quantized, %d kept in float; weights "
        "%.1f MB -> %.1f MB",
        mode, n_linear, n_attention, len(kept), before / 2**20, report["weight_bytes_after"] / 2**20,
    )  # fmt: skip
    return report


def _calibrate(
    encoder: nn.Module, targets: dict[str, nn.Module], calibration: torch.Tensor
) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """Run ``encoder(calibration)`` once (eval mode, inference mode) and return each reached target's
    ``((input_min, input_max), (output_min, output_max))``."""
    stats: dict[str, list[float]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            x, y = args[0].detach(), output.detach()
            new = [x.min().item(), x.max().item(), y.min().item(), y.max().item()]
            old = stats.get(name)
            stats[name] = new if old is None else [min(old[0], new[0]), max(old[1], new[1]),
                                                   min(old[2], new[2]), max(old[3], new[3])]  # fmt: skip

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in targets.items()]
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.inference_mode():
            encoder(calibration.to("cpu", torch.float32))
    finally:
        encoder.train(was_training)
        for h in handles:
            h.remove()
    return {n: ((s[0], s[1]), (s[2], s[3])) for n, s in stats.items()}


__all__ = [
    "QUANTIZE_MODES",
    "Int8DynamicLinear",
    "Int8MultiheadAttention",
    "Int8StaticLinear",
    "ProjectedMultiheadAttention",
    "quantize_encoder",
]
