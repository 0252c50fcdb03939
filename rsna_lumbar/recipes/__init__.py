"""Recipes: every setting of ``rsna-lumbar run``, one YAML file per recipe, strict keys.

Packaged recipes live beside this module (``tiny``, ``demo``, ``cpu``, ``gpu``); a user copies
one and passes its path. Schema (every key required unless marked optional)::

    description: one line
    synthetic: {studies, test_studies, seed}     # optional: generate WORK/data when no --data
    folds: 5                                     # cross-validation folds (localiser + severity)
    seed: 0                                      # folds' seed
    threads: null                                # torch CPU threads (null: torch's default)
    localiser: {steps, batch, seeds, real_exams} # steps: an int, or per task {sag_t2, sag_t1, axial}
                                                 # real_exams: auto | true | false; optional:
                                                 # backbone, width, input_px, stride (the
                                                 # localiser's TrainConfig; 0: each task's own)
                                                 # or the word ``packaged``: no training, the
                                                 # localiser that ships with the kit as is
    crops: {FAMILY: {VIEW: {mm, px, slices,      # optional: crop geometry (any subset), default
            context_mm, context_slices}}}        # (the context: re-cut training shifts),
                                                 # rsna_lumbar.crops.recipes.DEFAULT_GEOMETRY
    severity:                                    # ensemble members, each a model folder
      - {name, config, epochs, overrides}        # name optional (severity_{config}); epochs null:
                                                 # the config's; overrides: dotted KEY=VALUE
    predict: {chunk_studies}                     # optional: tta (true: ensemble.yaml asks
                                                 # predict for test-time augmentation)

Command-line overrides are dotted ``KEY=VALUE`` pairs (``localiser.batch=16``,
``severity.0.epochs=3``, ``synthetic.studies=12``), values parsed as YAML; an unknown key is an
error that lists the known ones.
"""

from __future__ import annotations

import copy
import dataclasses
from importlib import resources
from pathlib import Path

import yaml

from rsna_lumbar.crops.recipes import geometry_from_settings

TASKS = ("sag_t2", "sag_t1", "axial")
_TOP = {"description", "synthetic", "folds", "seed", "threads", "localiser", "crops", "severity",
        "predict"}  # fmt: skip
_OPTIONAL_TOP = {"synthetic", "crops"}
_SECTIONS = {
    "synthetic": {"studies", "test_studies", "seed"},
    "localiser": {"steps", "batch", "seeds", "real_exams"},
    "predict": {"chunk_studies"},
}
_OPTIONAL_KEYS = {"localiser": {"backbone", "width", "input_px", "stride"}, "predict": {"tta"}}
_MEMBER = {"name", "config", "epochs", "overrides"}
PACKAGED_LOCALISER = "packaged"  # ``localiser: packaged``: the kit's own, as is


class RecipeError(ValueError):
    """A recipe file or override is wrong; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class Member:
    """One severity model folder of the ensemble."""

    name: str
    config: str
    epochs: int | None
    overrides: tuple[str, ...]

    def config_overrides(self) -> list[str]:
        """The training-config overrides: epochs (when set) first, then the member's own."""
        return ([f"train.epochs={self.epochs}"] if self.epochs is not None else []) + list(
            self.overrides)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe (module docstring); ``source`` says where it came from."""

    name: str
    source: str
    settings: dict

    @property
    def synthetic(self) -> dict | None:
        return self.settings.get("synthetic")

    @property
    def packaged_localiser(self) -> bool:
        """True when the recipe uses the localiser that ships with the kit, untrained here."""
        return self.settings["localiser"] == PACKAGED_LOCALISER

    @property
    def localiser_steps(self) -> dict[str, int]:
        steps = self.settings["localiser"]["steps"]
        return dict(steps) if isinstance(steps, dict) else {task: int(steps) for task in TASKS}

    @property
    def real_exams(self) -> bool | None:
        value = self.settings["localiser"]["real_exams"]
        return None if value == "auto" else bool(value)

    def localiser_config(self, device: str = "auto"):
        """The localiser's :class:`~rsna_lumbar.localize.keypoints.config.TrainConfig`."""
        return localiser_config(self.settings["localiser"], device)

    @property
    def crop_geometry(self):
        """The crop geometry (:data:`rsna_lumbar.crops.recipes.DEFAULT_GEOMETRY` with the
        recipe's ``crops`` over it)."""
        return geometry_from_settings(self.settings.get("crops") or {})

    @property
    def members(self) -> list[Member]:
        return [Member(m.get("name") or f"severity_{Path(m['config']).stem}", m["config"],
                       m["epochs"], tuple(m["overrides"])) for m in self.settings["severity"]]

    def as_yaml(self) -> str:
        """The file's header comments (what it is for, expected memory and time), then every
        setting as resolved."""
        header = []
        for line in Path(self.source).read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            header.append(line)
        body = yaml.safe_dump(self.settings, sort_keys=False, allow_unicode=True, width=100)
        return "\n".join(header + [body])


def packaged() -> dict[str, Path]:
    """Packaged recipe name → file."""
    folder = resources.files(__name__)
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def describe(path: Path) -> str:
    """The ``description`` line of a recipe file (for listings)."""
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("description", "")


def load_recipe(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A packaged recipe by name, or a YAML file by path, with dotted overrides applied.

    Raises:
        RecipeError: unknown recipe, unknown or missing keys, wrong types, bad overrides.
    """
    known = packaged()
    path = known.get(str(name_or_path)) or Path(name_or_path)
    if not path.is_file():
        msg = (f"no recipe {name_or_path!r}: use one of {', '.join(sorted(known))} "
               "('rsna-lumbar recipes list') or the path of a YAML file")
        raise RecipeError(msg)
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {error}") from None
    settings = copy.deepcopy(settings)
    for override in overrides:
        _apply(settings, override)
    _validate(settings, str(path))
    return Recipe(path.stem, str(path), settings)


def _apply(settings: dict, override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise RecipeError(f"override {override!r}: write KEY=VALUE, e.g. localiser.batch=16")
    value = yaml.safe_load(text) if text else None
    node, parts = settings, key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(f"override {key}: {part!r} is not an index of a {len(node)}-item list")
            index = int(part)
            if last:
                node[index] = value
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise RecipeError(f"override {key}: {'.'.join(parts[:depth])} holds no keys")
        known = _known_keys(parts[:depth], node)
        if part not in known:
            allowed = ", ".join(sorted(known))
            raise RecipeError(f"override {key}: unknown key {part!r} (known here: {allowed})")
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})


def _known_keys(path: list[str], node: dict) -> set[str]:
    """The keys an override may set below ``path`` (optional ones included)."""
    if not path:
        return _TOP
    if path[0] in _SECTIONS and len(path) == 1:
        return _SECTIONS[path[0]] | _OPTIONAL_KEYS.get(path[0], set())
    if path[0] == "crops":
        return _crop_keys(path[1:])
    if path[0] == "severity" and len(path) == 2:
        return _MEMBER
    if path == ["localiser", "steps"]:
        return set(TASKS)
    return set(node)


def _validate(settings: dict, where: str) -> None:
    def fail(message: str):
        raise RecipeError(f"{where}: {message}")

    if not isinstance(settings, dict):
        fail("a recipe is a mapping of settings")
    unknown, missing = set(settings) - _TOP, _TOP - _OPTIONAL_TOP - set(settings)
    if unknown:
        fail(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP)}")
    if missing:
        fail(f"missing key(s) {sorted(missing)}")
    packaged_localiser = settings.get("localiser") == PACKAGED_LOCALISER
    for section, keys in _SECTIONS.items():
        if section not in settings or settings[section] is None and section in _OPTIONAL_TOP:
            continue
        if section == "localiser" and packaged_localiser:
            continue
        value = settings[section]
        optional = _OPTIONAL_KEYS.get(section, set())
        if not isinstance(value, dict) or not keys <= set(value) <= keys | optional:
            also = f" (optional: {sorted(optional)})" if optional else ""
            word = f", or the word {PACKAGED_LOCALISER!r}" if section == "localiser" else ""
            fail(f"{section} needs exactly the keys {sorted(keys)}{also}{word}, got {value!r}")
    def integer(name: str, value, least: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            fail(f"{name} must be an integer of at least {least}, got {value!r}")

    integer("folds", settings["folds"], 2)
    integer("seed", settings["seed"], 0)
    if settings["threads"] is not None:
        integer("threads", settings["threads"], 1)
    if settings.get("synthetic") is not None:
        integer("synthetic.studies", settings["synthetic"]["studies"], 2)
        integer("synthetic.test_studies", settings["synthetic"]["test_studies"], 1)
        integer("synthetic.seed", settings["synthetic"]["seed"], 0)
    integer("predict.chunk_studies", settings["predict"]["chunk_studies"], 1)
    if not isinstance(settings["predict"].get("tta", False), bool):
        fail("predict.tta: true or false")
    if not packaged_localiser:
        _validate_localiser(settings["localiser"], fail, integer)
    if settings.get("crops") is not None:
        try:
            geometry_from_settings(settings["crops"])
        except (TypeError, ValueError, KeyError) as error:
            fail(f"crops: {error}")
    _validate_members(settings["severity"], fail, integer)


def _validate_localiser(section: dict, fail, integer) -> None:
    integer("localiser.batch", section["batch"], 1)
    integer("localiser.seeds", section["seeds"], 1)
    steps = section["steps"]
    if isinstance(steps, dict) and set(steps) != set(TASKS):
        fail(f"localiser.steps per task needs exactly {list(TASKS)}")
    for task, value in (steps.items() if isinstance(steps, dict) else [("", steps)]):
        integer(f"localiser.steps{'.' + task if task else ''}", value, 1)
    if section["real_exams"] not in ("auto", True, False):
        fail("localiser.real_exams: auto, true or false")
    try:
        localiser_config(section)
    except (TypeError, ValueError) as error:
        fail(f"localiser: {error}")


def _validate_members(members, fail, integer) -> None:
    if not isinstance(members, list) or not members:
        fail("severity is a list of at least one member {name, config, epochs, overrides}")
    for member in members:
        if not isinstance(member, dict) or not {"config", "epochs", "overrides"} <= set(member) \
                or set(member) - _MEMBER:
            fail(f"severity member {member!r}: keys {sorted(_MEMBER)} (name optional)")
        if not isinstance(member["overrides"], list):
            fail(f"severity member {member.get('name') or member['config']}: overrides is a list")
    names = [m.get("name") or f"severity_{Path(m['config']).stem}" for m in members]
    if len(set(names)) != len(names):
        fail(f"severity members need distinct names, got {names}")
    for name, member in zip(names, members):
        if member["epochs"] is not None:
            integer(f"severity member {name}: epochs", member["epochs"], 1)
        _check_member_config(name, member, fail)


def localiser_config(section: dict, device: str = "auto"):
    """A recipe's ``localiser`` section → the localiser's ``TrainConfig`` (steps are per task
    and passed apart; absent optional keys take the TrainConfig defaults)."""
    from rsna_lumbar.localize.keypoints.config import TrainConfig

    optional = {k: section[k] for k in _OPTIONAL_KEYS["localiser"] if k in section}
    return TrainConfig(batch=section["batch"], seeds=section["seeds"], device=device, **optional)


def _crop_keys(path: list[str]) -> set[str]:
    """The keys an override may set below ``crops`` (families, their views, mm/px/slices)."""
    from rsna_lumbar.crops.recipes import DEFAULT_GEOMETRY, SPEC_KEYS

    if not path:
        return set(DEFAULT_GEOMETRY)
    if len(path) == 1:
        return set(DEFAULT_GEOMETRY.get(path[0], {}))
    return set(SPEC_KEYS)


def _check_member_config(name: str, member: dict, fail) -> None:
    """Resolve a member's training config now, so a typo fails before hours of other stages."""
    from rsna_lumbar.training.config import load_config

    overrides = ([f"train.epochs={member['epochs']}"] if member["epochs"] is not None else []) + [
        str(o) for o in member["overrides"]]
    try:
        load_config(member["config"], overrides)
    except (ValueError, OSError) as error:
        fail(f"severity member {name}: {error}")
