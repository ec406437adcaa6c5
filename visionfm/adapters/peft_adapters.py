"""PEFT adapters (LoRA, DoRA, LoHa, LoKr, IA3) on any visionfm encoder, through PEFT itself.

:func:`attach` injects adapters *in place* into the module that holds an encoder's weights
(:func:`base_module`: ``encoder.model``, or ``encoder.transformer`` for DiT) with
``peft.get_peft_model``, so the encoder's ``forward`` runs unchanged and returns the same
``Features``. Only adapter parameters are left trainable. :func:`save` writes a standard PEFT adapter
directory (``adapter_config.json`` + ``adapter_model.safetensors``) that
``peft.PeftModel.from_pretrained(<the same base module, loaded by its own library>, path)`` loads;
:func:`load_adapter` puts one back on a freshly loaded encoder; :func:`merge` folds the adapter into
the base weights (``merge_and_unload``) and leaves a plain encoder.

Target groups per family (module names relative to :func:`base_module`, ``*`` = block index). Each family declares
its own in its module (``Family.peft_layout``, a :class:`~visionfm.foundation.registry.TargetLayout`); this module
holds none:

======================== ================================================== ===========================================
family / backend         ``"attention"``                                    ``"mlp"``
======================== ================================================== ===========================================
clip / open_clip ViT     ``visual.transformer.resblocks.*.attn``            ``visual.transformer.resblocks.*.mlp.c_fc``,
                         (``nn.MultiheadAttention``: LoRA only)             ``...mlp.c_proj``
clip / open_clip ResNet  ``visual.attnpool.{q,k,v,c}_proj`` (see below)     none
clip / transformers      ``vision_model.encoder.layers.*.self_attn``        ``vision_model.encoder.layers.*.mlp.fc1``,
(CLIP and SigLIP)        ``.{q,k,v,out}_proj``                              ``...mlp.fc2``
dinov2                   ``encoder.layer.*.attention.{q,k,v,o}_proj``       ``encoder.layer.*.mlp.{fc1,fc2}`` (SwiGLU:
                         (transformers < 5: ``attention.attention.{query,   ``{gate,up,down}_proj``, ``weights_in/out``)
                         key,value}``, ``attention.output.dense``)
sam                      ``vision_encoder.layers.*.attn.{qkv,proj}``        ``vision_encoder.layers.*.mlp.{lin1,lin2}``
dit                      ``transformer_blocks.*.attn1.{to_q,to_k,to_v,      ``transformer_blocks.*.ff.net.0.proj``,
                         to_out.0}``                                        ``...ff.net.2``
======================== ================================================== ===========================================

``"all"`` is both groups. Groups cover the image tower only (never CLIP's text tower, SigLIP's pooling
head or SAM's prompt decoder); an explicit list reaches any module (see :func:`target_modules`).

Limits, all from PEFT 0.21:

- ``torch.nn.MultiheadAttention`` (open_clip's ViT blocks) is supported by LoRA only, which adapts its
  fused ``in_proj`` (q, k, v) and ``out_proj`` together; DoRA, LoHa, LoKr and IA3 raise on it (use
  ``targets="mlp"`` there). Targeting ``attn.out_proj`` alone would be silently ignored (the module's
  forward reads the weight directly), so it is refused. PEFT's MHA LoRA merges the adapter into the
  weights for each forward and unmerges it after, re-creating the base parameters; :func:`attach` pins
  the original parameter objects back after every forward so base weights stay bit-identical.
- open_clip's ResNet attention pool calls ``F.multi_head_attention_forward`` with the projection
  weights, which would bypass adapters on them. :func:`attach` and :func:`load_adapter` therefore give
  that pool instance an equivalent forward that calls its ``q/k/v/c_proj`` modules. A saved adapter
  loaded with plain ``PeftModel.from_pretrained`` on a stock open_clip ResNet CLIP only takes effect
  after ``merge_and_unload()``.
- DiT stops its forward after the feature block, so adapters in later blocks get no gradient.
- One adapter per encoder: :func:`attach` on an adapted encoder raises; :func:`merge` first to stack.

Example:
    >>> import visionfm as vfm
    >>> from visionfm import adapters
    >>> from visionfm.testing import tiny_checkpoint
    >>> enc = vfm.load_encoder(tiny_checkpoint("dinov2"), device="cpu")
    >>> adapters.target_modules(enc, "mlp")
    ['encoder.layer.0.mlp.fc1', 'encoder.layer.0.mlp.fc2', 'encoder.layer.1.mlp.fc1', 'encoder.layer.1.mlp.fc2']
    >>> enc = adapters.attach(enc, "lora", r=4)
    >>> adapters.trainable_parameters(enc)
    (2048, 38784)
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from torch import nn

from ..foundation.registry import TargetLayout, families, get_family

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "TargetLayout",
    "attach",
    "base_module",
    "load_adapter",
    "merge",
    "register_layout",
    "save",
    "target_modules",
    "trainable_parameters",
]

#: Adapter methods :func:`attach` creates (``dora`` is LoRA with ``use_dora=True``).
METHODS = ("lora", "dora", "loha", "lokr", "ia3")
#: Named target groups; anything else passed as ``targets`` is an explicit module list.
TARGET_GROUPS = ("attention", "mlp", "all")

_ADAPTER_CONFIG = "adapter_config.json"
_ADAPTER_SAFETENSORS = "adapter_model.safetensors"
_ADAPTER_PICKLE = "adapter_model.bin"
_PEFT_ATTR = "_visionfm_peft_model"  # the PeftModel wrapper, kept out of the module tree (no duplicate state)
_HOOKS_ATTR = "_visionfm_adapter_hooks"
_IGNORED_WARNINGS = (r".*is_gradient_checkpointing.*",)


# ---------------------------------------------------------------------------------------------------
# per-family layouts
# ---------------------------------------------------------------------------------------------------
def _layout(encoder: Any) -> TargetLayout:
    info = getattr(encoder, "info", None)
    if info is None:
        raise TypeError(f"expected a visionfm Encoder, got {type(encoder).__name__}")
    resolver = _LAYOUTS.get(info.family)
    if resolver is None and info.family in families():
        resolver = get_family(info.family).peft_layout
    if resolver is not None:
        return resolver(encoder)
    return TargetLayout(description=f"{info.family} ({info.backend})")


_LAYOUTS: dict[str, Callable[[Any], TargetLayout]] = {}


def register_layout(family: str, resolver: Callable[[Any], TargetLayout]) -> None:
    """Register (or override) how adapters find their targets in the encoders of ``family`` from outside it.

    Built-in families declare theirs in their own module (``Family.peft_layout``); this is for a family whose
    module cannot be changed.

    Args:
        family: family name, as in ``encoder.info.family``.
        resolver: ``encoder -> TargetLayout`` (it may look at the backend or the architecture).

    Raises:
        ValueError: ``family`` already has a layout registered here.
    """
    if family in _LAYOUTS:
        raise ValueError(f"an adapter target layout for family {family!r} is already registered")
    _LAYOUTS[family] = resolver


def base_module(encoder: Any) -> nn.Module:
    """The ``nn.Module`` of ``encoder`` that holds its weights and receives the adapters.

    ``encoder.model`` for CLIP/SigLIP, DINOv2 and SAM (the whole transformers / open_clip model),
    ``encoder.transformer`` (the denoiser) for DiT.
    """
    layout = _layout(encoder)
    module = getattr(encoder, layout.base_attr, None)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"{layout.description} encoder {encoder.info.name!r} has no nn.Module attribute {layout.base_attr!r} "
            "to attach adapters to"
        )
    return module


# ---------------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------------
def _adaptable_types() -> tuple[type, ...]:
    """Module types some PEFT method can adapt (the leaves that are sensible targets)."""
    types_: list[type] = [nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.MultiheadAttention]
    try:
        from transformers.pytorch_utils import Conv1D

        types_.append(Conv1D)
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    return tuple(types_)


def _method_types(method: str) -> tuple[type, ...]:
    """Module types ``method`` supports in PEFT 0.21."""
    from transformers.pytorch_utils import Conv1D

    if method == "lora":
        return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.MultiheadAttention, Conv1D)
    if method == "dora":
        return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, Conv1D)
    if method in ("loha", "lokr"):
        return (nn.Linear, nn.Conv1d, nn.Conv2d)
    return (nn.Linear, nn.Conv2d, nn.Conv3d, Conv1D)  # ia3


def _in_roots(name: str, roots: Sequence[str]) -> bool:
    return any(r == "" or name == r or name.startswith(r + ".") for r in roots)


def _name_patterns(names: Sequence[str], limit: int = 16) -> list[str]:
    """Distinct module names with block indices folded to ``*`` (for error messages)."""
    out: list[str] = []
    for n in names:
        p = re.sub(r"(?<=\.)\d+(?=\.|$)", "*", n)
        if p not in out:
            out.append(p)
    return out[:limit] + ([f"... ({len(out) - limit} more)"] if len(out) > limit else [])


def _item_matches(item: str, name: str, roots: Sequence[str]) -> bool:
    if name == item:
        return True
    if name.endswith("." + item) and _in_roots(name, roots):
        return True
    try:
        return re.fullmatch(item, name) is not None
    except re.error:
        return False


def target_modules(encoder: Any, targets: str | Sequence[str] = "attention") -> list[str]:
    """Names of the modules adapters go into, relative to :func:`base_module`, in module order.

    Args:
        encoder: a visionfm encoder.
        targets: ``"attention"`` (q/k/v/out projections), ``"mlp"`` (MLP linears), ``"all"`` (both) of
            the image tower (per-family names in the module docstring); or explicit names: a string or a
            list of strings, each an exact module name, a name suffix (``"mlp.fc1"``: matched inside the
            image tower only) or a regex fully matching module names (``r".*text_model.*q_proj"``). An
            exact name or a regex can reach any module, CLIP's text tower included.

    Returns:
        Module names, e.g. ``["encoder.layer.0.attention.q_proj", ...]``, each a module type PEFT can
        adapt (``nn.Linear``, convolutions, ``nn.Embedding``, ``nn.MultiheadAttention``).

    Raises:
        ValueError: nothing matches (the message names the family and the valid targets), an explicit
            item matches nothing, or a target is the ``out_proj`` of an ``nn.MultiheadAttention`` (its
            forward never calls it, so an adapter there would be silently ignored).
    """
    layout = _layout(encoder)
    base = base_module(encoder)
    adaptable = _adaptable_types()
    modules = {n: m for n, m in base.named_modules() if n}
    leaves = [n for n, m in modules.items() if isinstance(m, adaptable)]
    image_leaves = [n for n in leaves if _in_roots(n, layout.image_roots)]

    def valid_hint() -> str:
        groups = [g for g, pats in (("attention", layout.attention), ("mlp", layout.mlp)) if pats]
        groups += ["all"] if len(groups) == 2 else []
        return (
            f"valid groups for {layout.description}: {groups or 'none (name modules explicitly)'}; "
            f"adaptable image-tower modules: {_name_patterns(image_leaves) or _name_patterns(leaves)}"
        )

    if isinstance(targets, str) and targets in TARGET_GROUPS:
        patterns = {"attention": layout.attention, "mlp": layout.mlp, "all": layout.attention + layout.mlp}[targets]
        names = [n for n in leaves if any(re.fullmatch(p, n) for p in patterns)]
        if not names:
            raise ValueError(f"targets={targets!r} matches no module of {layout.description}; {valid_hint()}")
    else:
        items = [targets] if isinstance(targets, str) else list(targets)
        if not items or not all(isinstance(t, str) and t for t in items):
            raise ValueError(
                f"targets must be one of {TARGET_GROUPS} or a non-empty list of module names, suffixes or regexes; "
                f"got {targets!r}"
            )
        names, unmatched = [], []
        for item in items:
            hit = [n for n in modules if _item_matches(item, n, layout.image_roots)]
            if not hit:
                close = difflib.get_close_matches(item, list(TARGET_GROUPS), n=1)
                unmatched.append(repr(item) + (f" (did you mean {close[0]!r}?)" if close else ""))
            names += [n for n in hit if n not in names]
        if unmatched:
            raise ValueError(
                f"target(s) {', '.join(unmatched)} match no module of {layout.description}; {valid_hint()}"
            )
        kept = [n for n in names if isinstance(modules[n], adaptable)]
        if not kept:
            found = sorted({type(modules[n]).__name__ for n in names})
            raise ValueError(
                f"targets {items} match only modules PEFT cannot adapt ({found}) in {layout.description}; name their "
                f"Linear/Conv children instead; {valid_hint()}"
            )
        names = [n for n in leaves if n in kept]  # module order
    # nn.MultiheadAttention: LoRA wraps its out_proj itself; out_proj alone is never called by its forward.
    mha = {n for n in names if isinstance(modules[n], nn.MultiheadAttention)}
    names = [n for n in names if not (n.endswith(".out_proj") and n.rsplit(".", 1)[0] in mha)]
    lone = [
        n
        for n in names
        if n.endswith(".out_proj") and isinstance(modules.get(n.rsplit(".", 1)[0]), nn.MultiheadAttention)
    ]
    if lone:
        raise ValueError(
            f"{lone[:3]} are out_proj layers of torch.nn.MultiheadAttention modules, whose forward reads their weight "
            "directly, so an adapter there would be silently ignored; target the MultiheadAttention module itself "
            f"({[n.rsplit('.', 1)[0] for n in lone[:3]]}, LoRA only)"
        )
    return names


# ---------------------------------------------------------------------------------------------------
# attach / save / load / merge
# ---------------------------------------------------------------------------------------------------
def trainable_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts of ``module`` (shared parameters counted once)."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _peft_model(encoder: Any) -> Any | None:
    return encoder.__dict__.get(_PEFT_ATTR)


def _has_tuner_layers(module: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


def _method_of(config: Any) -> str:
    peft_type = str(getattr(config.peft_type, "value", config.peft_type)).lower()
    if peft_type == "lora" and getattr(config, "use_dora", False):
        return "dora"
    return peft_type


def _check_not_adapted(encoder: Any) -> None:
    pm = _peft_model(encoder)
    if pm is not None or _has_tuner_layers(base_module(encoder)):
        method = _method_of(pm.peft_config["default"]) if pm is not None else "a PEFT"
        raise ValueError(
            f"encoder {encoder.info.name!r} already has a {method} adapter; adapters do not stack. Call "
            "visionfm.adapters.merge(encoder) first to fold it into the weights (then attach a new one), or start "
            "from a freshly loaded encoder"
        )


def _make_config(
    method: str, names: list[str], ff: list[str], r: int, alpha: float | None, dropout: float, kw: dict[str, Any]
) -> Any:
    from peft import IA3Config, LoHaConfig, LoKrConfig, LoraConfig

    if method == "ia3":
        if alpha is not None or dropout:
            raise ValueError("ia3 has no rank, alpha or dropout; leave alpha=None and dropout=0.0")
        cls, args = IA3Config, {"target_modules": names, "feedforward_modules": ff}
    elif method in ("lora", "dora"):
        cls = LoraConfig
        args = {"r": r, "lora_alpha": 2 * r if alpha is None else alpha, "lora_dropout": dropout}
        args.update(target_modules=names, use_dora=method == "dora")
    else:
        cls = LoHaConfig if method == "loha" else LoKrConfig
        args = {"r": r, "alpha": r if alpha is None else alpha, "rank_dropout": dropout, "target_modules": names}
    clash = sorted(set(kw) & set(args))
    if clash:
        raise TypeError(f"set {clash} through attach()'s own arguments (r, alpha, dropout, targets), not peft_kwargs")
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(kw) - valid)
    if unknown:
        raise TypeError(f"unknown {cls.__name__} option(s) {unknown}; valid: {sorted(valid - set(args))}")
    return cls(**args, **kw)


def _install(encoder: Any, pm: Any, *, trainable: bool, was_training: bool) -> None:
    """Record the PeftModel on the encoder, freeze everything but the adapter, pin MHA base weights."""
    encoder.__dict__[_PEFT_ATTR] = pm
    encoder.adapter_config = pm.peft_config["default"]
    base = base_module(encoder)
    adapter_ids = {id(p) for p in base.parameters() if p.requires_grad} if trainable else set()
    for p in encoder.parameters():
        p.requires_grad_(id(p) in adapter_ids)
    encoder.__dict__[_HOOKS_ATTR] = _pin_mha_weights(base)
    encoder.train(was_training)  # new adapter modules (dropout) take the encoder's mode


def _inject(encoder: Any, fn: Callable[[], Any]) -> Any:
    layout = _layout(encoder)
    if layout.prepare is not None:
        layout.prepare(base_module(encoder))
    with warnings.catch_warnings():
        for msg in _IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=msg)
        return fn()


def attach(
    encoder: Any,
    method: str = "lora",
    *,
    r: int = 8,
    alpha: float | None = None,
    dropout: float = 0.0,
    targets: str | Sequence[str] = "attention",
    **peft_kwargs: Any,
) -> Any:
    """Inject a PEFT adapter into ``encoder`` in place; only adapter parameters stay trainable.

    The encoder's ``forward`` is unchanged and, with the default initialisation, so are its outputs
    (LoRA/DoRA ``B = 0``, LoHa/LoKr one zero factor, IA3 vectors of ones).

    Args:
        encoder: a visionfm encoder (any family with a layout, or explicit ``targets`` for others).
        method: one of :data:`METHODS`: ``"lora"``, ``"dora"`` (``LoraConfig(use_dora=True)``),
            ``"loha"``, ``"lokr"``, ``"ia3"``.
        r: rank (ignored by IA3).
        alpha: scaling numerator; default ``2 * r`` for LoRA/DoRA, ``r`` for LoHa/LoKr (scale 1, PEFT's
            default ratio). Not accepted by IA3.
        dropout: ``lora_dropout`` for LoRA/DoRA, ``rank_dropout`` for LoHa/LoKr; must be 0 for IA3.
        targets: see :func:`target_modules`. For IA3 the MLP targets among them become its
            ``feedforward_modules`` (input scaling).
        **peft_kwargs: further fields of the PEFT config class (``init_lora_weights=``,
            ``rank_pattern=``, ``module_dropout=``, ...).

    Returns:
        ``encoder`` itself, with ``encoder.adapter_config`` set to the PEFT config
        (``base_model_name_or_path = encoder.info.name``). Every non-adapter parameter of the encoder is
        frozen (``requires_grad=False``); the training/eval mode is kept.

    Raises:
        ValueError: unknown method, targets matching nothing, a target type the method cannot adapt
            (e.g. ``nn.MultiheadAttention`` with anything but LoRA), or an encoder that already has an
            adapter.
        TypeError: unknown ``peft_kwargs``.
    """
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        raise ValueError(
            f"unknown adapter method {method!r}; choose from {METHODS}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"r must be a positive int, got {r!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    _check_not_adapted(encoder)
    layout = _layout(encoder)
    base = base_module(encoder)
    names = target_modules(encoder, targets)
    modules = dict(base.named_modules())
    supported = _method_types(method)
    bad = [n for n in names if not isinstance(modules[n], supported)]
    if bad:
        kinds = sorted({type(modules[n]).__name__ for n in bad})
        hint = (
            " PEFT supports torch.nn.MultiheadAttention with plain LoRA only: use method='lora', or targets='mlp'."
            if any(isinstance(modules[n], nn.MultiheadAttention) for n in bad)
            else ""
        )
        raise ValueError(
            f"{method} cannot adapt {kinds} modules ({_name_patterns(bad, 4)}) of {layout.description}.{hint}"
        )
    ff = [n for n in names if any(re.fullmatch(p, n) for p in layout.mlp)]
    if method == "ia3" and "feedforward_modules" in peft_kwargs:
        ff = peft_kwargs.pop("feedforward_modules")
    config = _make_config(method, names, ff, r, alpha, float(dropout), peft_kwargs)

    from peft import get_peft_model

    was_training = encoder.training
    pm = _inject(encoder, lambda: get_peft_model(base, config))
    pm.peft_config["default"].base_model_name_or_path = encoder.info.name
    _install(encoder, pm, trainable=True, was_training=was_training)
    n_train, n_total = trainable_parameters(encoder)
    logger.info(
        "attached %s to %d modules of %s (%s): %d of %d parameters trainable (%.3f%%)",
        method,
        len(names),
        encoder.info.name,
        layout.description,
        n_train,
        n_total,
        100.0 * n_train / max(n_total, 1),
    )
    return encoder


def save(encoder: Any, path: str | os.PathLike) -> Path:
    """Write the encoder's adapter as a standard PEFT adapter directory.

    Args:
        encoder: an encoder with an adapter (:func:`attach` or :func:`load_adapter`).
        path: output directory (created).

    Returns:
        ``path``, holding ``adapter_config.json`` (``base_model_name_or_path = encoder.info.name``),
        ``adapter_model.safetensors`` (adapter tensors only) and PEFT's ``README.md`` card. It loads with
        ``peft.PeftModel.from_pretrained(base, path)`` where ``base`` is the encoder's base module
        (:func:`base_module`) loaded by its own library, or with :func:`load_adapter`.

    Raises:
        ValueError: the encoder has no adapter.
    """
    pm = _peft_model(encoder)
    if pm is None:
        raise ValueError(f"encoder {encoder.info.name!r} has no adapter to save; attach() or load_adapter() first")
    path = Path(path)
    pm.peft_config["default"].base_model_name_or_path = encoder.info.name
    pm.save_pretrained(str(path), safe_serialization=True, save_embedding_layers=False)
    logger.info("saved %s adapter of %s to %s", _method_of(pm.peft_config["default"]), encoder.info.name, path)
    return path


def _resolve_adapter_dir(
    source: str | os.PathLike, *, allow_pickle: bool, local_files_only: bool | None, cache_dir: Any
) -> Path:
    from ..foundation.loading import PickleCheckpointError, pickle_refusal, resolve_source

    patterns = [_ADAPTER_CONFIG, _ADAPTER_SAFETENSORS] + ([_ADAPTER_PICKLE] if allow_pickle else [])
    path, _, _ = resolve_source(
        source, what="adapter", allow_patterns=patterns, cache_dir=cache_dir, local_files_only=local_files_only,
        aliases=False, open_clip_tags=False,
    )  # fmt: skip
    if not (path / _ADAPTER_CONFIG).is_file():
        raise FileNotFoundError(f"{path} is not a PEFT adapter directory: no {_ADAPTER_CONFIG}")
    if not (path / _ADAPTER_SAFETENSORS).is_file():
        if (path / _ADAPTER_PICKLE).is_file():
            if not allow_pickle:
                raise PickleCheckpointError(pickle_refusal(path / _ADAPTER_PICKLE))
        else:
            raise FileNotFoundError(f"{path} has no adapter weights ({_ADAPTER_SAFETENSORS})")
    return path


def _check_adapter_targets(encoder: Any, config: Any, path: Path) -> None:
    names = [n for n, _ in base_module(encoder).named_modules() if n]
    tm = config.target_modules
    if isinstance(tm, str):
        hit = any(re.fullmatch(tm, n) for n in names)
    else:
        hit = any(n == t or n.endswith("." + t) for t in (tm or []) for n in names)
    if not hit:
        shown = tm if isinstance(tm, str) else _name_patterns(sorted(tm or []), 6)
        raise ValueError(
            f"adapter {path} (made for {config.base_model_name_or_path!r}, targets {shown}) matches no module of "
            f"{_layout(encoder).description} encoder {encoder.info.name!r}"
        )


def load_adapter(
    encoder: Any,
    path: str | os.PathLike,
    *,
    allow_pickle: bool = False,
    trainable: bool = False,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Any:
    """Re-inject a saved PEFT adapter into ``encoder`` in place (what ``load_encoder(..., adapter=)`` calls).

    Args:
        encoder: a freshly loaded encoder without an adapter, of the model the adapter was trained on.
        path: a PEFT adapter directory (from :func:`save`, or any PEFT adapter of this base module), or
            a hub id ``"org/name"`` (cache first, as ``load_encoder``).
        allow_pickle: accept a directory with only ``adapter_model.bin``; PEFT reads it with
            ``torch.load(weights_only=True)``.
        trainable: leave the adapter parameters trainable (to continue training); default: everything
            frozen, for inference.
        local_files_only: for hub ids: never use the network (default: ``HF_HUB_OFFLINE``).
        cache_dir: for hub ids: Hugging Face cache directory.

    Returns:
        ``encoder`` with the adapter, ``encoder.adapter_config`` set; its training/eval mode is kept.

    Raises:
        PickleCheckpointError: only ``adapter_model.bin`` exists and ``allow_pickle`` is False.
        FileNotFoundError: not an adapter directory.
        ValueError: the encoder already has an adapter, or the adapter's targets match none of its modules.
    """
    from peft import PeftConfig, PeftModel

    directory = _resolve_adapter_dir(
        path, allow_pickle=allow_pickle, local_files_only=local_files_only, cache_dir=cache_dir
    )
    _check_not_adapted(encoder)
    config = PeftConfig.from_pretrained(str(directory))
    _check_adapter_targets(encoder, config, directory)
    base = base_module(encoder)
    was_training = encoder.training
    pm = _inject(
        encoder,
        lambda: PeftModel.from_pretrained(
            base, str(directory), config=config, is_trainable=trainable, torch_device=str(encoder.device)
        ),
    )
    _install(encoder, pm, trainable=trainable, was_training=was_training)
    logger.info("loaded %s adapter %s into %s", _method_of(config), directory, encoder.info.name)
    return encoder


def merge(encoder: Any) -> Any:
    """Fold the adapter into the base weights and remove the adapter layers, in place.

    ``merge_and_unload`` semantics: outputs are unchanged (up to float rounding), the module tree and
    ``state_dict`` keys are those of the plain encoder again, ``encoder.adapter_config`` becomes ``None``
    and a new adapter can be attached. Parameters stay frozen.

    Returns:
        ``encoder``.

    Raises:
        ValueError: the encoder has no adapter.
    """
    pm = _peft_model(encoder)
    if pm is None:
        raise ValueError(f"encoder {encoder.info.name!r} has no adapter to merge")
    method = _method_of(pm.peft_config["default"])
    for h in encoder.__dict__.pop(_HOOKS_ATTR, []):
        h.remove()
    base = pm.merge_and_unload()
    if base is not base_module(encoder):  # PEFT merges in place; guard against a future copy
        setattr(encoder, _layout(encoder).base_attr, base)
    if "peft_config" in base.__dict__:
        del base.__dict__["peft_config"]
    del encoder.__dict__[_PEFT_ATTR]
    encoder.adapter_config = None
    logger.info("merged the %s adapter into %s", method, encoder.info.name)
    return encoder


# ---------------------------------------------------------------------------------------------------
# module surgery that makes PEFT's layers take effect
# ---------------------------------------------------------------------------------------------------
def _pin_mha_weights(base: nn.Module) -> list[Any]:
    """Keep the base weights of PEFT-LoRA ``nn.MultiheadAttention`` layers bit-identical across forwards.

    PEFT's LoRA ``MultiheadAttention`` merges the adapter into ``in_proj_weight`` / ``out_proj.weight``
    for each forward and unmerges after, registering *new* parameters computed as ``(W + dW) - dW``
    (rounding drift; inference tensors when run under ``inference_mode``). These hooks put the original
    parameter objects back after every forward.
    """
    from peft.tuners.lora.layer import MultiheadAttention as LoraMHA

    handles = []
    for mod in base.modules():
        if not isinstance(mod, LoraMHA):
            continue
        saved: dict[str, nn.Parameter] = {}

        def pre(module: nn.Module, _args: Any, saved: dict[str, nn.Parameter] = saved) -> None:
            saved.clear()
            if module.merged:
                return
            mha = module.get_base_layer()
            w_in, w_out = mha._parameters.get("in_proj_weight"), mha.out_proj.get_base_layer()._parameters.get("weight")
            if w_in is not None and w_out is not None:
                saved.update(in_proj=w_in, out_proj=w_out)

        def post(module: nn.Module, _args: Any, _out: Any, saved: dict[str, nn.Parameter] = saved) -> None:
            if not saved:
                return
            mha = module.get_base_layer()
            lin = mha.out_proj.get_base_layer()
            for owner, attr, key in ((mha, "in_proj_weight", "in_proj"), (lin, "weight", "out_proj")):
                if hasattr(owner, attr):
                    delattr(owner, attr)
                owner.register_parameter(attr, saved[key])
            saved.clear()

        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post, always_call=True))
    return handles
