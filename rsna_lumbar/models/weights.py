"""Where weights come from, offline, and how they are saved and loaded (safetensors).

Two kinds of weights:

* **Backbone initialisation for training** (ImageNet): :func:`resolve_init_file` looks, in this
  order, at (1) an explicit file (``model.pretrained_file`` / ``--config`` override), then (2)
  ``{cache}/{backbone}.{tag}.safetensors`` and ``{cache}/{backbone}.safetensors``, the cache
  being ``$RSNA_TIMM_WEIGHTS`` or, unset, :data:`DEFAULT_CACHE` (:func:`cache_dir`). The file
  goes through timm's ``pretrained_cfg_overlay=dict(file=...)`` so timm still adapts the first
  convolution to 1 input channel and drops the classifier. Training never asks the Hugging
  Face hub: when nothing is found the error lists every place looked.
* **Filling the cache** (``rsna-lumbar weights pull``): :func:`pull_weights` writes
  ``{cache}/{name}.safetensors`` from a local file (``--from``: ``.safetensors``/``.pth``/
  ``.bin``, or a folder in timm's Hugging Face layout) or, on a machine with internet, from
  timm's hub; either way only after checking that the weights fit ``timm.create_model(name,
  num_classes=0)``. Offline it fails with one line naming the file to fetch and where to put
  it. Inference never reads the cache: trained model folders hold every weight.
* **Trained weights** in a model folder (``fold_k/model.safetensors``): :func:`save_weights` /
  :func:`load_weights`. Loading strips DDP (``module.``) and ``torch.compile`` (``_orig_mod.``)
  prefixes and reports missing/unexpected keys.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)
ENV_DIR = "RSNA_TIMM_WEIGHTS"
DEFAULT_CACHE = "~/.cache/rsna-lumbar/timm"
"""The ImageNet weights cache when ``$RSNA_TIMM_WEIGHTS`` is unset (``~``: the user's home)."""
_PREFIXES = ("module.", "_orig_mod.")
_HUB_TRUE = ("1", "ON", "YES", "TRUE")  # huggingface_hub's spellings of a true flag


def cache_dir() -> Path:
    """Where ImageNet backbone weights are cached: ``$RSNA_TIMM_WEIGHTS``, else
    :data:`DEFAULT_CACHE`; ``weights pull`` writes there and :func:`resolve_init_file` reads."""
    return Path(os.environ.get(ENV_DIR) or DEFAULT_CACHE).expanduser()


def create_backbone(name: str, init_file: str | os.PathLike | None = None) -> nn.Module:
    """A timm feature extractor (``num_classes=0``, ``in_chans=1``), never touching the network.

    Args:
        name: timm model name.
        init_file: local ImageNet weights (``.safetensors``/``.pth``/``.bin``); ``None`` = random.
    """
    import timm

    if init_file is None:
        return timm.create_model(name, pretrained=False, num_classes=0, in_chans=1)
    path = Path(init_file)
    if not path.is_file():
        msg = f"backbone weights file {path} does not exist; pass an existing local file"
        raise FileNotFoundError(msg)
    return timm.create_model(
        name, pretrained=True, num_classes=0, in_chans=1,
        pretrained_cfg_overlay=dict(file=str(path)),
    )


def candidate_init_files(backbone: str, tag: str | None,
                         cache: str | os.PathLike | None = None) -> list[Path]:  # fmt: skip
    """The places :func:`resolve_init_file` looks in, after an explicit file: in ``cache``
    (default :func:`cache_dir`), ``{backbone}.{tag}`` then ``{backbone}``, each as
    ``.safetensors``, ``.pth``, ``.bin``."""
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    names = ([f"{backbone}.{tag}"] if tag else []) + [backbone]
    return [root / f"{n}{ext}" for n in names for ext in (".safetensors", ".pth", ".bin")]


def resolve_init_file(backbone: str, tag: str | None, explicit: str | os.PathLike | None,
                      required: bool) -> Path | None:
    """The backbone initialisation file, or ``None`` (random init) when not ``required``.

    Raises:
        FileNotFoundError: ``required`` and no file found; the message lists every path tried.
    """
    tried: list[Path] = []
    if explicit:
        path = Path(explicit)
        if path.is_file():
            return path
        tried.append(path)
    for path in candidate_init_files(backbone, tag):
        if path.is_file():
            return path
        tried.append(path)
    if required:
        places = "\n  ".join(map(str, tried))
        msg = (
            f"no local ImageNet weights for {backbone}; looked at:\n  {places}\n"
            f"cache them once with 'rsna-lumbar weights pull {backbone}' where there is internet "
            f"(elsewhere: --from FILE), or point model.pretrained_file or ${ENV_DIR} at them, "
            f"or set model.pretrained=false"
        )
        raise FileNotFoundError(msg)
    return None


def pull_weights(name: str, cache: str | os.PathLike | None = None,
                 source: str | os.PathLike | None = None) -> Path:  # fmt: skip
    """Cache timm's ImageNet weights of ``name`` as ``{cache}/{name}.safetensors`` (atomically).

    Args:
        name: a timm model name, with or without a pretrained tag (``resnet18``,
            ``resnet18.a1_in1k``); the file name keeps it as given, which is what
            :func:`candidate_init_files` looks for.
        cache: the folder (default :func:`cache_dir`).
        source: a local ``.safetensors``/``.pth``/``.bin`` file, or a folder holding timm's Hugging
            Face layout (``model.safetensors`` or ``pytorch_model.bin``). ``None``: ask timm's
            hub, unless the file is cached already (then nothing is fetched).

    The weights are checked against ``timm.create_model(name, pretrained=False,
    num_classes=0)`` (the classifier dropped) and stored as that backbone's state.

    Raises:
        ValueError: an unknown timm model, or weights of another architecture (the message
            counts and names the missing and unexpected keys).
        FileNotFoundError: ``source`` does not exist or holds no weights file.
        ConnectionError: no ``source`` and no network (``HF_HUB_OFFLINE`` set by the user, or the
            download fails); one line naming the file to fetch and the path to put it at.
    """
    import timm

    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown timm model {name!r}{hint}")
    folder = Path(cache).expanduser() if cache is not None else cache_dir()
    target = folder / f"{name}.safetensors"
    if source is not None:
        file = _weights_file(Path(source))
        state, origin = _read_state(file), str(file)
    elif target.is_file():
        LOGGER.info("%s is cached already: %s", name, target)
        return target
    else:
        state, origin = _download_state(name, target), f"timm's {_hub_source(name)[0]}"
    state = backbone_state(name, state, origin)
    from safetensors.torch import save_file

    from rsna_lumbar.atomic import atomic_path

    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata={"timm_model": name, "source": origin})
    return target


def backbone_state(name: str, state: Mapping[str, torch.Tensor],
                   origin: str) -> dict[str, torch.Tensor]:  # fmt: skip
    """``state`` without timm's classifier, once it loads into ``timm.create_model(name,
    pretrained=False, num_classes=0)`` with no key missing or left over and every shape equal.

    Raises:
        ValueError: it does not fit (``origin`` names the weights in the message).
    """
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=0)
    classifiers = model.pretrained_cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    dropped = {f"{c}.{p}" for c in classifiers for p in ("weight", "bias")}
    kept = {k: v for k, v in strip_prefixes(state).items() if k not in dropped}
    refuse = f"{origin} does not hold timm {name} weights"
    try:
        result = model.load_state_dict(kept, strict=False)
    except RuntimeError as error:  # shapes differ
        detail = (str(error).splitlines()[1:2] or [""])[0].strip()
        raise ValueError(f"{refuse} (shapes differ: {detail})") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{refuse}: {len(result.missing_keys)} keys missing "
                         f"{result.missing_keys[:3]}, {len(result.unexpected_keys)} unexpected "
                         f"{result.unexpected_keys[:3]}")  # fmt: skip
    return {k: v.detach().cpu().contiguous().clone() for k, v in kept.items()}


def _weights_file(source: Path) -> Path:
    if source.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (source / name).is_file():
                return source / name
        raise FileNotFoundError(f"{source} holds no model.safetensors or pytorch_model.bin "
                                f"(timm's Hugging Face layout)")  # fmt: skip
    if not source.is_file():
        raise FileNotFoundError(f"weights file {source} does not exist")
    return source


def _read_state(file: Path) -> dict[str, torch.Tensor]:
    """A weights file's tensors (timm's reader: safetensors, or a torch checkpoint read
    ``weights_only``, its ``state_dict``/``model`` entry when nested)."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(file), use_ema=False, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file: one clear line
        raise ValueError(f"{file} is not a weights file timm can read "
                         f"({type(error).__name__}: {_first_line(error)})") from None
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _hub_source(name: str) -> tuple[str, str | None]:
    """``(name.tag, URL)`` of the weights timm's hub serves for ``name`` (its default tag when
    ``name`` has none); the URL is None when timm knows of none."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return name, None
    label = f"{name.split('.', 1)[0]}.{cfg.tag}" if getattr(cfg, "tag", None) else name
    if cfg.hf_hub_id:
        return label, f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
    return label, cfg.url or None


def _download_state(name: str, target: Path) -> dict[str, torch.Tensor]:
    """timm's pretrained weights of ``name`` from its hub, or :class:`ConnectionError` in one
    line that says what to fetch and where to put it."""
    import timm

    label, url = _hub_source(name)
    fetch = (f"download timm's '{label}' weights{f' ({url})' if url else ''} on a machine with "
             f"internet and run 'rsna-lumbar weights pull {name} --from FILE', or put them at "
             f"{target}")  # fmt: skip
    offline = _user_offline()
    if offline:
        raise ConnectionError(f"no network ({offline}): {fetch}")
    try:
        with _hub_online():
            return timm.create_model(name, pretrained=True).state_dict()
    except Exception as error:  # noqa: BLE001 - no network shows as many error types
        raise ConnectionError(f"no network ({type(error).__name__}: {_first_line(error)}): "
                              f"{fetch}") from None  # fmt: skip


def _user_offline() -> str | None:
    """``HF_HUB_OFFLINE=...`` when the user (not the kit's own default) set it true, else None."""
    import rsna_lumbar

    value = rsna_lumbar.HF_HUB_OFFLINE_FROM_USER
    return f"HF_HUB_OFFLINE={value}" if value and value.strip().upper() in _HUB_TRUE else None


@contextlib.contextmanager
def _hub_online() -> Iterator[None]:
    """Lift the kit's default ``HF_HUB_OFFLINE=1`` for one explicit download, then restore it."""
    import huggingface_hub.constants as hub

    before_env, before = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hub.HF_HUB_OFFLINE = "0", False
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before
        if before_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before_env


def _first_line(error: BaseException, limit: int = 160) -> str:
    line = (str(error).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit - 1] + "…"


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP/compile wrappers' key prefixes (``module.``, ``_orig_mod.``)."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model``'s state (unwrapped, contiguous, CPU) as safetensors, atomically."""
    from safetensors.torch import save_file

    from rsna_lumbar.atomic import atomic_path

    state = strip_prefixes(model.state_dict())
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a safetensors (or ``weights_only`` torch) file into ``model``.

    Raises:
        FileNotFoundError: the file is absent.
        RuntimeError: ``strict`` and keys differ; the message names them.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"weights file {path} not found; is this a complete model folder (fold_k/model.safetensors)?"
        raise FileNotFoundError(msg)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = strip_prefixes(state)
    own = model.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and v.shape != own[k].shape]
    if shapes:
        msg = f"{path} does not fit the model (shapes differ: {shapes[:3]}); was it trained with another spec?"
        raise RuntimeError(msg)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        detail = f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        if strict:
            msg = f"{path} does not fit the model ({detail}); was it trained with another spec?"
            raise RuntimeError(msg)
        LOGGER.warning("%s: %s", path, detail)
    return model
