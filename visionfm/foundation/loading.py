"""``load_encoder``: the one place encoders are built.

A name resolves, in order, as: an existing local directory; a registered alias
(``visionfm models``); an open_clip tag ``"ARCH/PRETRAINED"`` (``"ViT-B-16/openai"``) or
``"hf-hub:org/repo"``; a Hugging Face hub id ``"org/name"``. Hub files come from the local Hugging
Face cache first; the network is tried only when they are missing and offline mode is off.

Weights load from safetensors. A pickle checkpoint (``.bin``/``.pt``/``.pth``) is refused unless the
caller passes ``allow_pickle=True``, and even then it is read with ``torch.load(weights_only=True)``,
which rejects any object that is not plain tensor data.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .encoder import Encoder
from .hooks import get_hook
from .registry import LoadRequest, ModelSpec, close_matches, families, get_family, get_spec

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


class ModelNotFoundError(ValueError):
    """A name that is neither a directory, an alias, an open_clip tag nor a hub id."""


class ModelNotAvailableError(OSError):
    """A valid hub id / tag whose files are neither cached locally nor downloadable now."""


class PickleCheckpointError(ValueError):
    """A pickle checkpoint was found and the caller did not opt in to loading it."""


class CheckpointError(ValueError):
    """A checkpoint's weights are unusable: a file that is not valid safetensors, a tensor the model needs that the
    checkpoint lacks, or a tensor of the wrong shape. The message names the file and the tensors."""


# -- weights ---------------------------------------------------------------------------------------
def find_weights(directory: Path, safetensors: Iterable[str], pickles: Iterable[str], *, allow_pickle: bool) -> Path:
    """Pick the weights file in ``directory``: a safetensors file, else (opt-in only) a pickle.

    Args:
        directory: checkpoint directory.
        safetensors: candidate safetensors file names, best first.
        pickles: candidate pickle file names, best first.
        allow_pickle: whether a pickle file may be returned.

    Raises:
        PickleCheckpointError: only a pickle checkpoint exists and ``allow_pickle`` is False.
        FileNotFoundError: no candidate exists.
    """
    for name in safetensors:
        if (directory / name).is_file():
            return directory / name
    found = [directory / n for n in pickles if (directory / n).is_file()]
    if found:
        if not allow_pickle:
            raise PickleCheckpointError(pickle_refusal(found[0]))
        return found[0]
    raise FileNotFoundError(
        f"no weights in {directory}: expected one of {list(safetensors)} (or, with allow_pickle=True, {list(pickles)})"
    )


def pickle_refusal(path: Path) -> str:
    """The message for a refused pickle checkpoint."""
    return (
        f"refusing to load pickle checkpoint {path}: unpickling can run arbitrary code. Convert it to "
        "safetensors, or pass allow_pickle=True if you trust its source (it is then read with "
        "torch.load(weights_only=True), which accepts tensors only)."
    )


def check_no_pickle_only(directory: Path, *, allow_pickle: bool) -> None:
    """Raise :class:`PickleCheckpointError` if any folder under ``directory`` (a pipeline's component
    sub-folders included) holds pickle weights and no safetensors beside them."""
    if allow_pickle:
        return
    for p in sorted(directory.rglob("*")):
        if p.suffix in PICKLE_SUFFIXES and p.is_file() and not any(p.parent.glob("*.safetensors")):
            raise PickleCheckpointError(pickle_refusal(p))


def read_state_dict(path: Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, or from a pickle with ``weights_only=True`` when allowed."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        check_safetensors(path)
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors' SafetensorError and OSError: name the file
            raise CheckpointError(f"{path} is not a valid safetensors file ({type(e).__name__}: {e})") from e
    if not allow_pickle:
        raise PickleCheckpointError(pickle_refusal(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return obj


def json_error(path: Path, e: json.JSONDecodeError) -> str:
    """The message for a malformed JSON file: the file, then where and what (``invalid JSON at line 3, column
    20: Expecting property name enclosed in double quotes``)."""
    return f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file, with an error naming the file and the line if it is malformed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(json_error(path, e)) from None


def hf_model_type(path: Path) -> str | None:
    """``model_type`` of the transformers ``config.json`` in ``path``, or ``None`` if absent or not a JSON object.

    Raises:
        ValueError: ``config.json`` is not valid JSON (naming the file and the line), so a damaged checkpoint is
            reported as such rather than as "not in a format visionfm recognises".
    """
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        mt = read_json(cfg).get("model_type")
    except (AttributeError, OSError, UnicodeDecodeError):
        return None
    return mt if isinstance(mt, str) else None


def check_safetensors(path: Path) -> None:
    """Check that ``path`` is a complete safetensors file (header and data sizes agree), reading the header only.

    Raises:
        CheckpointError: naming the file, for an empty, truncated or random-bytes file.
    """
    from safetensors import safe_open

    path = Path(path)
    hint = "it is truncated or corrupt: download or save it again"
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(f"{path} is not a valid safetensors file: it is empty (0 bytes); {hint}")
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:  # safetensors' SafetensorError (header too small/large, incomplete), OSError, ...
        raise CheckpointError(f"{path} is not a valid safetensors file ({type(e).__name__}: {e}); {hint}") from e


def hf_weight_files(path: Path) -> list[Path]:
    """The safetensors files transformers reads from checkpoint directory ``path`` (``model.safetensors``, or the
    shards its ``model.safetensors.index.json`` lists)."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = read_json(index).get("weight_map", {})
        return [path / s for s in sorted(set(shards.values())) if (path / s).is_file()]
    return []


def _ignored_missing(model: torch.nn.Module) -> list[re.Pattern]:
    """Patterns of keys transformers documents as allowed to be absent: ``_keys_to_ignore_on_load_missing`` and the
    targets of tied weights (filled from their source)."""
    pats: list[str] = []
    for m in model.modules():
        pats += list(getattr(m, "_keys_to_ignore_on_load_missing", None) or [])
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or []
    pats += [rf"(^|\.){re.escape(k)}$" for k in tied]
    return [re.compile(p) for p in pats]


def load_hf_model(model_cls: Any, path: Path, *, allow_pickle: bool = False) -> Any:
    """``model_cls.from_pretrained(path)`` that refuses a damaged checkpoint instead of randomly initialising parts.

    Args:
        model_cls: a transformers model class (``AutoModel``, ``SamModel``, ...).
        path: checkpoint directory.
        allow_pickle: also accept ``pytorch_model.bin`` when there are no safetensors.

    Raises:
        CheckpointError: naming the weights file, when it is not valid safetensors, lacks tensors the model needs
            (the first few missing names are listed) or holds a tensor of the wrong shape (name, shape found,
            shape expected).
    """
    path = Path(path)
    files = hf_weight_files(path)
    for f in files:
        check_safetensors(f)
    where = files[0] if len(files) == 1 else path
    try:
        model, info = model_cls.from_pretrained(
            path, use_safetensors=None if allow_pickle else True, output_loading_info=True, ignore_mismatched_sizes=True
        )
    except Exception as e:
        if type(e).__name__ == "SafetensorError":
            raise CheckpointError(f"{where} is not a valid safetensors file ({e})") from e
        raise
    mismatched = list(info.get("mismatched_keys") or [])
    if mismatched:
        shown = "; ".join(f"{k}: {tuple(a)} in the file, expected {tuple(b)}" for k, a, b in sorted(mismatched)[:5])
        more = f" and {len(mismatched) - 5} more" if len(mismatched) > 5 else ""
        raise CheckpointError(
            f"{where}: {len(mismatched)} tensor(s) have the wrong shape for the model its config.json describes: "
            f"{shown}{more}. The weights do not belong to this config; download or save the checkpoint again"
        )
    ignored = _ignored_missing(model)
    missing = sorted(k for k in info.get("missing_keys") or [] if not any(p.search(k) for p in ignored))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointError(
            f"{where} is missing {len(missing)} tensor(s) that {type(model).__name__} needs (they would stay randomly "
            f"initialised): {', '.join(missing[:5])}{more}. The file is incomplete or belongs to a different model; "
            "download or save the checkpoint again"
        )
    return model


# -- sources ---------------------------------------------------------------------------------------
def _open_clip_arch(source: str) -> tuple[str, str] | None:
    if "/" not in source or source.count("/") != 1:
        return None
    arch, tag = source.split("/")
    import open_clip

    return (arch, tag) if arch in open_clip.list_models() else None


def hub_snapshot(
    repo_id: str,
    *,
    allow_patterns: list[str] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """Local directory with a hub repo's files: from the cache if there, else downloaded.

    Args:
        repo_id: ``"org/name"``.
        allow_patterns: file globs to fetch (default: configs, safetensors, tokenizer files).
        revision: branch, tag or commit.
        cache_dir: Hugging Face cache directory (default: ``HF_HUB_CACHE``).
        local_files_only: never touch the network; default: ``True`` when ``HF_HUB_OFFLINE`` is set.

    Raises:
        ModelNotAvailableError: not cached and the hub is unreachable (or offline mode is on).
    """
    from huggingface_hub import snapshot_download

    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    patterns = allow_patterns or ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
    kw = dict(repo_id=repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns)
    try:
        return Path(snapshot_download(local_files_only=True, **kw))
    except Exception as cached_err:  # not (fully) in the cache
        if local_files_only:
            raise ModelNotAvailableError(
                f"{repo_id!r} is not in the local Hugging Face cache ({cache_dir or 'default cache'}) and offline mode "
                "is on (HF_HUB_OFFLINE=1 or local_files_only=True). Download it once with network access, or pass a "
                "local directory."
            ) from cached_err
    logger.info("%s is not cached; downloading from the hub", repo_id)
    try:
        return Path(snapshot_download(endpoint=os.environ.get("HF_ENDPOINT") or None, **kw))
    except Exception as e:
        raise ModelNotAvailableError(
            f"{repo_id!r} is neither in the local Hugging Face cache ({cache_dir or 'default cache'}) nor reachable on "
            f"the hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Check the id and your "
            "network, or pass a local directory."
        ) from e


def resolve_source(
    name: str | os.PathLike,
    *,
    what: str = "model",
    allow_patterns: list[str] | None = None,
    allow_pickle: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    aliases: bool = True,
    open_clip_tags: bool = True,
) -> tuple[Path, ModelSpec | None, dict[str, Any]]:
    """The one weights resolver: a name to a local directory, offline-first.

    Encoders, detectors, generators and PEFT adapters all resolve through it. ``name`` is tried, in order, as an
    existing local directory; a registered alias (``visionfm models``); an open_clip tag ``"ARCH/PRETRAINED"`` or
    ``"hf-hub:org/repo"``; a Hugging Face hub id ``"org/name"``. Hub files come from the local cache first; the
    network is used only when they are missing and offline mode is off. Pickle files are fetched only when
    ``allow_pickle`` is set.

    Args:
        name: what the caller asked for.
        what: what is being loaded, for error messages (``"model"``, ``"adapter"``).
        allow_patterns: hub file globs (default: configs, safetensors, tokenizer files; ``*.bin``/``*.pt``/``*.pth``
            with ``allow_pickle``).
        allow_pickle: also fetch pickle weights from the hub.
        revision, cache_dir, local_files_only: as in :func:`hub_snapshot`.
        aliases: look ``name`` up in the registry.
        open_clip_tags: accept open_clip tags.

    Returns:
        ``(directory, spec or None, hints)``; hints hold ``open_clip_arch`` / ``open_clip_pretrained_cfg`` for an
        open_clip tag.

    Raises:
        ModelNotFoundError: ``name`` is none of the above (with the closest registered names).
        ModelNotAvailableError: a valid hub id / tag / alias whose files are not here and cannot be fetched now.
        ValueError: ``name`` is a file, not a directory.
    """
    name = os.fspath(name)
    spec = get_spec(name) if aliases and not Path(os.path.expanduser(name)).is_dir() else None
    source = (spec.locate() if spec.locate else spec.source) if spec else name
    path = Path(os.path.expanduser(source))
    if path.is_dir():
        return path, spec, {}
    if path.exists():
        raise ValueError(f"{source!r} is a file; pass the {what} directory that contains it")
    if spec is not None and path.is_absolute():
        raise ModelNotAvailableError(f"{name!r} lives in {path}, which does not exist yet ({spec.description})")
    if source.startswith("hf-hub:"):
        source = source[len("hf-hub:") :]
    pickles = ["*.bin", "*.pt", "*.pth"] if allow_pickle else []
    hub_kw = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    oc = _open_clip_arch(source) if open_clip_tags else None
    if oc is not None:
        import open_clip

        arch, tag = oc
        pcfg = open_clip.get_pretrained_cfg(arch, tag)
        if not pcfg:
            tags = [t for a, t in open_clip.list_pretrained() if a == arch]
            raise ModelNotFoundError(f"open_clip model {arch!r} has no pretrained tag {tag!r}; known tags: {tags}")
        repo = (pcfg.get("hf_hub") or "").strip("/")
        if not repo:
            raise ModelNotAvailableError(
                f"open_clip tag {source!r} is not hosted on the Hugging Face hub ({pcfg.get('url')})"
            )
        patterns = ["open_clip_config.json", "open_clip_model.safetensors",
                    *["open_clip_pytorch_model.bin"][: len(pickles)], "*.txt", "tokenizer*", "*.model"]  # fmt: skip
        snap = hub_snapshot(repo, allow_patterns=patterns, **hub_kw)
        return snap, spec, {"open_clip_arch": arch, "open_clip_pretrained_cfg": pcfg}
    if _HUB_ID.match(source):
        patterns = allow_patterns or ["*.json", "*.safetensors", "*.txt", "*.model", *pickles]
        return hub_snapshot(source, allow_patterns=patterns, **hub_kw), spec, {}
    hint = close_matches(name) if aliases else []
    forms = ["a directory", *(["a registered alias"] if aliases else []),
             *(["an open_clip tag ('ARCH/PRETRAINED')"] if open_clip_tags else []), "a hub id ('org/name')"]  # fmt: skip
    kinds = ", ".join(forms[:-1]) + " or " + forms[-1]
    raise ModelNotFoundError(
        f"unknown {what} {name!r}: not {kinds}."
        + (f" Did you mean: {', '.join(hint)}?" if hint else " Run `visionfm models` for the list." if aliases else "")
    )


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"fp32" | "bf16" | "fp16"`` (or a ``torch.dtype``) to a ``torch.dtype``; ``None`` is fp32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype {dtype} is not supported; use one of fp32, bf16, fp16")
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of {sorted(_DTYPES)}") from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` picks CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def detect_family(path: Path) -> tuple[str, str] | None:
    """``(family, backend)`` whose on-disk format ``path`` holds, or ``None``."""
    for fam in families().values():
        backend = fam.detect(path)
        if backend is not None:
            return fam.name, backend
    return None


def load_encoder(
    name: str | os.PathLike,
    *,
    backend: str | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    allow_pickle: bool = False,
    local_files_only: bool | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    compile: bool | dict[str, Any] = False,
    channels_last: bool = False,
    token_merging: int | float | None = None,
    quantize: str | None = None,
    calibration: Any = None,
    speed: str | None = None,
    **overrides: Any,
) -> Encoder:
    """Build an encoder from an alias, a hub id, an open_clip tag or a local directory.

    Args:
        name: ``"dinov2-small"`` (see ``list_models()``), ``"facebook/dinov2-small"``,
            ``"ViT-B-16/openai"``, ``"hf-hub:org/repo"`` or a directory in a family's on-disk format
            (transformers, open_clip ``open_clip_config.json`` + weights, diffusers).
        backend: force a backend (``"open_clip"`` or ``"transformers"`` for CLIP); default: the
            format on disk.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"``, ...
        dtype: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``.
        allow_pickle: permit a pickle checkpoint when no safetensors exist (read with
            ``weights_only=True``).
        local_files_only: never use the network (default: ``HF_HUB_OFFLINE``).
        revision: hub revision.
        cache_dir: Hugging Face cache directory.
        adapter: a PEFT adapter directory (``visionfm.adapters.save``) or hub id, loaded onto the encoder
            frozen, for inference (see ``visionfm.adapters.load_adapter``).
        compile: ``torch.compile`` the encoder's forward (``True``, or a dict of ``torch.compile`` keyword
            arguments such as ``{"mode": "max-autotune"}``); the first call of each input shape compiles.
        channels_last: store convolution weights, and expect inputs, in NHWC memory layout (faster convolutions
            on GPUs with tensor cores: the CLIP ResNets, SAM's neck, the VAE of DiT).
        token_merging: merge similar tokens in the ViT blocks (``visionfm.foundation.token_merging``): an int ``r``
            (tokens merged per block, ToMe's ``r``) or a float ratio in ``(0, 1)``; ``Features.patches`` and layer
            taps stay on the full patch grid. ``None`` (default): off.
        quantize: ``"int8"`` (dynamic int8 Linear layers, CPU), ``"int8-static"`` (int8 with activation ranges
            calibrated on ``calibration``, CPU), ``"int8-weight"`` / ``"int4-weight"`` (weight-only, through
            torchao; int4 needs CUDA); see ``visionfm.foundation.quantize``. ``None`` (default): off.
        calibration: images (anything :meth:`Encoder.encode` accepts) for ``quantize="int8-static"``.
        speed: ``"fast"``: the speed preset, the options that pay on ``device`` (``visionfm.foundation.speed.fast_options``:
            on this repository's CPUs without bf16 instructions, int8 + token merging); explicit arguments win.
        **overrides: family options (e.g. ``timestep=`` for DiT); unknown ones raise, listing the
            valid ones.

    Returns:
        An :class:`Encoder` in eval mode on ``device``.

    Example:
        >>> import visionfm as vfm
        >>> "dinov2-small" in [m.name for m in vfm.list_models()]
        True
    """
    from .speed import apply_speed_options, resolve_speed_options

    name = os.fspath(name)
    dev = resolve_device(device)
    speed_opts = resolve_speed_options(
        speed, dev, dtype=dtype, token_merging=token_merging, quantize=quantize, calibration=calibration
    )
    dtype = speed_opts.pop("dtype")
    spec = get_spec(name) if not Path(os.path.expanduser(name)).is_dir() else None
    fam_name = spec.family if spec else None
    # Validate options before any download so a typo costs nothing.
    if fam_name:
        _check_kind(name, fam_name)
        _validate_options(fam_name, overrides)
    path, spec, extra = resolve_source(
        name, allow_pickle=allow_pickle, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )
    detected = detect_family(path)
    if detected is None:
        files = sorted(p.name for p in path.iterdir())[:12]
        expected = "; ".join(f"{f.name}: {f.formats}" for f in families().values() if f.formats)
        raise ValueError(
            f"{name!r} ({path}) is not in a format visionfm recognises (found {files}); expected {expected}"
        )
    fam_detected, backend_detected = detected
    if fam_name and fam_name != fam_detected:
        raise ValueError(
            f"{name!r} is registered as family {fam_name!r} but {path} holds a {fam_detected!r} checkpoint"
        )
    family = get_family(fam_detected)
    if not fam_name:
        _check_kind(name, family.name)
        _validate_options(family.name, overrides)
    chosen = backend or (spec.backend if spec and spec.backend else backend_detected)
    if chosen not in family.backends:
        raise ValueError(
            f"backend {chosen!r} is not available for family {family.name!r}; choose from {family.backends}"
        )
    options = {**family.options, **(spec.options if spec else {}), **overrides}
    check_no_pickle_only(path, allow_pickle=allow_pickle)
    req = LoadRequest(
        path=path,
        name=name,
        backend=chosen,
        options=options,
        allow_pickle=allow_pickle,
        extra={**extra, "format": backend_detected},
    )
    enc = family.build(req)
    enc = enc.to(device=dev, dtype=resolve_dtype(dtype)).eval()
    if adapter is not None:
        load_adapter = get_hook("adapter_loader", needed_for="load_encoder(adapter=...)", provider="visionfm.adapters")
        load_adapter(enc, adapter, allow_pickle=allow_pickle, local_files_only=local_files_only, cache_dir=cache_dir)
    apply_speed_options(enc, **speed_opts)
    if channels_last:
        enc = enc.to(memory_format=torch.channels_last)
    if compile:
        if not isinstance(compile, (bool, dict)):
            raise TypeError(f"compile must be a bool or a dict of torch.compile options, got {compile!r}")
        enc.compile(**(compile if isinstance(compile, dict) else {}))
    logger.info("loaded %s (%s/%s) from %s on %s", name, family.name, chosen, path, enc.device)
    return enc


def _check_kind(name: str, family: str) -> None:
    kind = get_family(family).kind
    if kind != "encoder":
        hint = " (visionfm.foundation.detectors.load_detector, or pipeline('grounding', model=...))"
        raise TypeError(f"{name!r} is a {kind} (family {family!r}), not an encoder; load it with load_{kind}{hint}")


def _validate_options(family: str, overrides: dict[str, Any]) -> None:
    valid = get_family(family).options
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for family {family!r}; valid options: {sorted(valid) or 'none'} "
            "(plus backend, device, dtype, allow_pickle, local_files_only, revision, cache_dir, adapter, compile, "
            "channels_last, token_merging, quantize, calibration, speed)"
        )
