"""Typed training configuration: frozen dataclasses are the schema, YAML holds values.

``load_config(path, overrides)`` reads a YAML file (any subset of the keys; the rest take the
defaults below), applies dotted command-line overrides such as ``train.lr=3e-4`` or
``data.views.spinal=[sag_t2]``, and checks every key and type against the schema. An unknown
key, a wrong type or a bad value fails at start-up with a message naming the key, the expected
type and the close matches. :func:`dump_config` writes the resolved configuration (every key)
into the model folder; loading has no side effects (no environment changes, no device probing).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from rsna_lumbar.vocabulary import VIEWS

FAMILIES = ("spinal", "foraminal", "subarticular")


class ConfigError(ValueError):
    """A configuration key, type or value is wrong; the message says how to fix it."""


# Keys the schema no longer has, with why. A run folder's ``config.yaml`` written while one
# existed still reads (the key is dropped: ``saved=True``); a config or override that sets one
# is refused with the reason.
RETIRED_KEYS = {
    "augment.gamma_p": "it never applied a gamma: the crops are median-centred (negative "
                       "values), where a gamma is undefined",
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    spec: str = "resnet18_25d"
    shared: bool = False  # one backbone with a head per family, or one network per family
    # the conditions of a level attend to each other before the heads (a level embedding, a
    # condition embedding; models/network.py LevelContext): a slot without views is graded
    # from its level's other slots instead of falling back to the prior
    level_context: bool = False
    # the context reads the other slots without training their encoders (each family's encoder
    # learns from its own loss, as in the per-family model); needs level_context
    context_detached: bool = False
    slices: int | None = None  # None: the spec's default
    size: int | None = None
    pooling: str | None = None
    head: str | None = None  # softmax | ordinal (None: the spec's)
    hidden: int | None = None
    dropout: float | None = None
    pretrained: bool = False  # ImageNet init from a local file (models/weights.py)
    pretrained_file: str | None = None
    channels_last: bool = True


@dataclasses.dataclass(frozen=True)
class DataConfig:
    families: tuple[str, ...] = FAMILIES
    views: dict[str, tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: {f: tuple(v) for f, v in VIEWS.items()}
    )
    slice_jitter: int = 1  # random shift of the slice window (training only), in slices
    # {family: {view: [± in-plane mm, ± slices]}}: training jitter of those views sized from a
    # localiser's measured error ('rsna-lumbar train --jitter-from LOCALIZER' fills it in);
    # replaces augment.translate and slice_jitter for the views it names
    point_jitter: dict[str, dict[str, tuple[float, int]]] = dataclasses.field(default_factory=dict)
    cache_in_memory: bool = True  # keep decoded studies in RAM after the first epoch
    # share of training draws (study × epoch) read from the crops at the localiser's points
    # ('rsna-lumbar train --localised-crops DIR'; 'run' passes its own) instead of the labelled
    # points' crops, so the models see the localiser's errors; 0: labelled points only
    localised_share: float = 0.0
    # a CSV with a row_id column (e.g. the suspects 'run' writes to WORK/label_suspects.csv):
    # those labels are left out of training, never out of the out-of-fold grading; the model
    # folder keeps the list it trained with (drop_labels.csv) and a resume must use the same
    drop_labels: str | None = None


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    affine_p: float = 0.7
    rotate: float = 12.0  # degrees
    scale: float = 0.1  # ± fraction
    translate: float = 0.08  # ± fraction of the crop: the localiser's in-plane error
    brightness_contrast_p: float = 0.5
    noise_p: float = 0.2
    blur_p: float = 0.1
    slice_reverse_p: float = 0.0  # flip slice order (sagittal left–right symmetry)
    # chance that a level's axial crops (the canal's and both recesses') are all hidden from a
    # training draw, labels kept: a level no axial slice covers, which a level-context model
    # then learns to grade from the sagittal crops (without the context, its recesses are
    # simply unlabelled in that draw)
    hide_axial_p: float = 0.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    folds: tuple[int, ...] | None = None  # None: every fold of the folds file
    epochs: int = 10
    batch_size: int = 8  # studies per optimiser step (all their samples of every family)
    eval_batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 0.5
    class_weights: tuple[float, float, float] = (1.0, 2.0, 4.0)
    any_severe_weight: float = 1.0
    grad_clip: float = 5.0
    # decay of an exponential moving average of the weights (training/ema.py), which then gives
    # the OOF predictions and is the saved model; 0: off
    ema: float = 0.0
    amp: bool = True  # bfloat16/float16 autocast on CUDA only
    device: str = "auto"  # auto | cpu | cuda
    sync_bn: bool = True  # under multi-GPU DDP, batch statistics over all GPUs (CUDA only)
    workers: int = 0  # background processes preparing batches (0: in the training process)
    threads: int | None = None  # torch CPU threads (None: torch's default); 1 on a busy CPU
    seed: int = 42
    deterministic: bool = True


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise :class:`ConfigError`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(extra: str = "") -> typing.NoReturn:
        msg = (f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}){extra}; "
               f"fix the YAML or write e.g. {key}=<{_type_name(tp)}>")
        raise ConfigError(msg)

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("null", "none") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads '3e-4' as a string
            except ValueError:
                fail()
        fail()
    if tp is str:
        if isinstance(value, str):
            return value
        fail()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail(" (a list)")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            fail(f" (a list of {len(args)})")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            fail(" (a mapping)")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    raise AssertionError(f"unsupported schema type {tp} for {key}")


def _build(cls, values: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=2)
        hint = f"did you mean {', '.join(prefix + c for c in close)}? " if close else ""
        msg = f"unknown config key {prefix}{key}; {hint}valid keys here: {', '.join(names)}"
        raise ConfigError(msg)
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            sub = values[name]
            if not isinstance(sub, dict):
                msg = f"{prefix}{name} must be a mapping of its keys, got {sub!r}"
                raise ConfigError(msg)
            kwargs[name] = _build(tp, sub, f"{prefix}{name}.")
        elif name == "views" and isinstance(values[name], dict):
            # views: a partial mapping updates the defaults family by family.
            merged = {f: tuple(v) for f, v in VIEWS.items()}
            merged.update(values[name])
            kwargs[name] = _coerce(merged, tp, prefix + name)
        else:
            kwargs[name] = _coerce(values[name], tp, prefix + name)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            msg = f"override {dotted}: {part} is not a section"
            raise ConfigError(msg)
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """``["train.lr=3e-4", "data.views.spinal=[sag_t2]"]`` → nested dict (values parsed as YAML)."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            msg = f"override {item!r} is not KEY=VALUE (e.g. train.epochs=5)"
            raise ConfigError(msg)
        key, text = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(text) if text.strip() else None)
    return tree


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "views":
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _without_retired(tree: dict, saved: bool) -> dict:
    """``tree`` without the :data:`RETIRED_KEYS` (when ``saved``), else refused if it sets one."""
    for dotted, why in RETIRED_KEYS.items():
        section, key = dotted.split(".")
        keys = tree.get(section)
        if isinstance(keys, dict) and key in keys:
            if not saved:
                raise ConfigError(f"{dotted} was removed ({why}); delete it from the config")
            tree = {**tree, section: {k: v for k, v in keys.items() if k != key}}
    return tree


def config_from_dict(values: dict | None, overrides=(), *, saved: bool = False) -> Config:
    """Validate ``values`` (+ dotted ``overrides``) into a :class:`Config`; ``saved``: the
    values come from a run folder's ``config.yaml``, whose retired keys are dropped."""
    tree = _without_retired(_merge(values or {}, parse_overrides(list(overrides))), saved)
    config = _build(Config, tree, "")
    validate(config)
    return config


def validate(config: Config) -> None:
    """Value checks beyond types (families, views, ranges)."""
    from rsna_lumbar.models.registry import get_spec

    try:
        get_spec(config.model.spec)
    except KeyError as error:
        raise ConfigError(f"model.spec: {error.args[0]}") from None
    for family in config.data.families:
        if family not in FAMILIES:
            raise ConfigError(f"data.families: {family!r} is not one of {FAMILIES}")
    for family, views in config.data.views.items():
        if family not in VIEWS:
            raise ConfigError(f"data.views.{family}: unknown family; use one of {FAMILIES}")
        bad = [v for v in views if v not in VIEWS[family]]
        if bad or not views:
            msg = f"data.views.{family}={list(views)}: choose a non-empty subset of {list(VIEWS[family])}"
            raise ConfigError(msg)
    for family, views in config.data.point_jitter.items():
        bad = [v for v in views if v not in VIEWS.get(family, ())]
        if family not in VIEWS or bad:
            msg = (f"data.point_jitter.{family}: name families {FAMILIES} and their views "
                   f"{dict(VIEWS)}; got {list(views)}")
            raise ConfigError(msg)
        if any(mm < 0 or slices < 0 for mm, slices in views.values()):
            raise ConfigError(f"data.point_jitter.{family}: amounts must be ≥ 0 (mm, slices)")
    if not 0.0 <= config.data.localised_share <= 1.0:
        raise ConfigError("data.localised_share: a share between 0 and 1")
    if config.model.context_detached and not config.model.level_context:
        raise ConfigError("model.context_detached needs model.level_context: true")
    if not 0.0 <= config.augment.hide_axial_p < 1.0:
        raise ConfigError("augment.hide_axial_p: a chance in [0, 1)")
    if config.model.pooling not in (None, "attention", "gru"):
        raise ConfigError("model.pooling: use attention or gru (or null for the spec's)")
    if config.model.head not in (None, "softmax", "ordinal"):
        raise ConfigError("model.head: use softmax or ordinal (or null for the spec's)")
    if config.train.device not in ("auto", "cpu", "cuda"):
        raise ConfigError("train.device: use auto, cpu or cuda")
    if not 0.0 <= config.train.ema < 1.0:
        raise ConfigError("train.ema: a decay in [0, 1) (0.99 averages about 100 steps; 0 is off)")
    if config.train.epochs < 1 or config.train.batch_size < 1:
        raise ConfigError("train.epochs and train.batch_size must be ≥ 1")


def packaged_config(name: str) -> Path:
    """Path of a config shipped in ``rsna_lumbar/configs`` (:func:`packaged_names`)."""
    return Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml"


def packaged_names() -> list[str]:
    """Names of the training configs shipped with the kit (``cpu``, ``default``, ``tiny``, ...);
    the ablation's variant files in the same folder are left out."""
    sections = {f.name for f in dataclasses.fields(Config)}
    return sorted(p.stem for p in packaged_config("default").parent.glob("*.yaml")
                  if set(yaml.safe_load(p.read_text(encoding="utf-8")) or {}) <= sections)


def config_path(name: str | os.PathLike) -> Path:
    """A YAML file, or the file of a packaged config name; :class:`ConfigError` if neither."""
    path = Path(name)
    if not path.is_file() and packaged_config(str(path)).is_file():
        path = packaged_config(str(path))
    if not path.is_file():
        msg = (f"config {path} not found; pass a YAML file or a packaged name "
               f"({', '.join(packaged_names())})")
        raise ConfigError(msg)
    return path


def load_config(path: str | os.PathLike | None, overrides=(), *, saved: bool = False) -> Config:
    """Read a YAML config (a path, or the name of a packaged one) and apply overrides;
    ``saved``: a run folder's ``config.yaml`` (:func:`config_from_dict`)."""
    if path is None:
        return config_from_dict({}, overrides)
    path = config_path(path)
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections (model, data, augment, train)")
    try:
        return config_from_dict(values, overrides, saved=saved)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def config_to_dict(config: Config) -> dict:
    """Plain YAML-able dict (tuples → lists)."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def dump_config(config: Config) -> str:
    """The resolved configuration as YAML text (every key)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
