"""Studies' crop arrays as the severity networks' fixed-shape tensors, with MRI-suited augmentation.

One item is one study: for every family ``f`` with ``N_f`` slots (spinal 5 = levels; foraminal
and subarticular 10 = left then right × levels, the order of :data:`rsna_lumbar.vocabulary.TARGETS`):

* ``x[f]``: float32 ``(N_f, V_f, S, H, W)`` — the views of ``data.views[f]``, ``S`` slices,
  resized to ``H = W = size``;
* ``mask[f]``: bool ``(N_f, V_f)`` — whether the view exists in the cache;
* ``label[f]``: int64 ``(N_f,)`` — 0/1/2, −1 when unlabelled or not graded (no view of its
  own; with ``level_context``, no view at its level: :func:`graded_slots`).

The arrays come from a crop cache (:class:`rsna_lumbar.crops.cache.CropCache`) when training,
or from memory when predicting (:mod:`rsna_lumbar.models.predictor`). Keeping the study whole lets the loss see all five spinal levels together (the any-severe term)
and makes every batch the same shape. Augmentation is per view (albumentations on the
``(H, W, S)`` stack, so all slices move together): small affine (the localiser's in-plane error),
brightness/contrast, noise, blur; ``slice_jitter`` shifts the slice window (its through-plane
error). With ``point_jitter`` (``data.point_jitter``, sized from a localiser's measured error by
:mod:`rsna_lumbar.training.jitter`) a view's translation is ± that many mm of its crop and its
slice shift ± that many slices, instead of the generic ``augment.translate``/``slice_jitter``. With ``augment.hide_axial_p`` a
level's axial crops (the canal's and both recesses') are all hidden from a draw, as when no axial
slice covers the level; labels follow :func:`graded_slots`, so a level-context model learns to
grade those recesses from the sagittal crops. There is no left–right flip: the crops already
mirror right-side samples, and a flip would turn them back. Augmentation draws come from ``(seed, epoch, study)`` so a resumed run
repeats them exactly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from rsna_lumbar.crops.recipes import DEFAULT_GEOMETRY, crop_spec
from rsna_lumbar.crops.sampling import window
from rsna_lumbar.vocabulary import CONDITIONS, LEVELS, SEVERITIES, VIEWS, Family, target_column


def family_slots(family: str) -> list[tuple[str, str]]:
    """(condition, level) of each slot of ``family``, in TARGETS order."""
    return [(c.value, lv.value) for c in CONDITIONS if c.family.value == family for lv in LEVELS]


def graded_slots(present: dict[str, np.ndarray | torch.Tensor], level_context: bool = False) -> dict:
    """Which slots a network grades: ``{family: bool (..., N_f)}`` from whether each slot has a
    view of its own, ``present`` ``{family: bool (..., N_f)}`` (slots in :func:`family_slots`
    order). Without ``level_context``, the slots with a view; with it, every slot of a level
    where any slot of the families given has a view (the rest of the level grades it)."""
    if not level_context:
        return dict(present)
    n_levels = len(LEVELS)
    shown = None
    for flags in present.values():
        per_level = flags.reshape(*flags.shape[:-1], -1, n_levels).any(-2)  # (..., L)
        shown = per_level if shown is None else shown | per_level
    return {f: shown.repeat(*([1] * (shown.ndim - 1)), flags.shape[-1] // n_levels)
            if isinstance(shown, torch.Tensor) else np.tile(shown, flags.shape[-1] // n_levels)
            for f, flags in present.items()}


def labels_by_study(train: pd.DataFrame) -> dict[int, dict[str, int]]:
    """``{study: {target column: 0/1/2}}`` from a ``train.csv`` frame (missing labels left out)."""
    grade = {s.value: s.index for s in SEVERITIES}
    out = {}
    for row in train.to_dict("records"):
        out[int(row["study_id"])] = {
            k: grade[v] for k, v in row.items() if k != "study_id" and isinstance(v, str)
        }
    return out


def select_slices(stack: np.ndarray, slices: int, shift: int = 0) -> np.ndarray:
    """The ``slices`` slices centred on the middle one (+``shift``), edge-padded: ``(S, H, W)``."""
    n = stack.shape[0]
    centre = n // 2 + shift
    idx = np.clip(np.arange(centre - slices // 2, centre - slices // 2 + slices), 0, n - 1)
    return stack[idx]


AREA_RESIZE_MAX_CHANNELS = 4  # OpenCV's area resize at a non-integer scale takes no more


def resize_slices(stack: np.ndarray, size: int) -> np.ndarray:
    """``(S, H, W)`` → ``(S, size, size)`` float32, area averaging when shrinking, bilinear when
    growing, each slice on its own. OpenCV's area resize takes at most four channels at a
    non-integer scale (64 → 48 px), so the slices go through four at a time (a 3-slice view in one
    call, a 5- or 7-slice view in two)."""
    import cv2

    interpolation = cv2.INTER_AREA if stack.shape[1] > size else cv2.INTER_LINEAR
    step = AREA_RESIZE_MAX_CHANNELS
    chunks = [np.ascontiguousarray(stack[k:k + step].transpose(1, 2, 0), dtype=np.float32)
              for k in range(0, len(stack), step)]
    resized = [cv2.resize(chunk, (size, size), interpolation=interpolation).reshape(size, size, -1)
               for chunk in chunks]
    return np.concatenate(resized, axis=2).transpose(2, 0, 1)


def build_augmentation(config, seed: int | None = None, translate: float | None = None):
    """The albumentations pipeline of an ``AugmentConfig`` (``None`` when disabled);
    ``translate`` (± fraction of the crop) replaces ``config.translate`` when given."""
    if not config.enabled:
        return None
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A
    import cv2

    return A.Compose([
        A.Affine(scale=(1 - config.scale, 1 + config.scale),
                 translate_percent=(-translate, translate) if translate is not None
                 else (-config.translate, config.translate),
                 rotate=(-config.rotate, config.rotate),
                 border_mode=cv2.BORDER_REFLECT_101, p=config.affine_p),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.2,
                                   p=config.brightness_contrast_p),
        A.GaussNoise(std_range=(0.02, 0.08), p=config.noise_p),
        A.GaussianBlur(blur_limit=(3, 5), p=config.blur_p),
    ], seed=seed)


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=4).digest(), "little")


class StudyDataset(torch.utils.data.Dataset):
    """Studies of a crop cache as tensors (see module docstring).

    Args:
        cache: the studies' crop arrays: anything with ``arrays(study_id)`` (a
            :class:`~rsna_lumbar.crops.cache.CropCache`).
        study_ids: the studies of this split.
        labels: ``labels_by_study`` output (``None`` at inference: every label −1).
        families, views: what to read (``DataConfig``).
        slices, size: ``S`` and ``H = W``.
        augment: an ``AugmentConfig`` for training, ``None`` for evaluation.
        slice_jitter: max slice-window shift when augmenting.
        point_jitter: ``{family: {view: (± in-plane mm, ± slices)}}`` replacing the
            translation and ``slice_jitter`` of the views it names (when augmenting).
        seed: with :meth:`set_epoch`, fixes every random draw.
        alternate, alternate_share: a second cache of the same studies (the crops at the
            localiser's points) from which a study is read instead, at a draw of probability
            ``alternate_share`` per study and epoch (when augmenting, for studies it holds).
        level_context: label the slots a level-context network grades (:func:`graded_slots`).
    """

    def __init__(self, cache, study_ids: Sequence[int], labels, families, views,
                 slices: int, size: int, augment=None, slice_jitter: int = 0,
                 point_jitter: dict | None = None, seed: int = 0, alternate=None,
                 alternate_share: float = 0.0, level_context: bool = False):  # fmt: skip
        self.cache = cache
        use = alternate is not None and alternate_share > 0 and augment is not None
        self.alternate = alternate if use else None
        self.alternate_share = alternate_share if use else 0.0
        self._alternate_ids = set(alternate.study_ids) if use else set()
        self.study_ids = [int(s) for s in study_ids]
        self.labels = labels or {}
        self.families = tuple(families)
        self.views = {f: tuple(views[f]) for f in self.families}
        self.slices, self.size = slices, size
        self.augment_config = augment
        self.slice_jitter = slice_jitter if augment is not None else 0
        self.point_jitter = (point_jitter or {}) if augment is not None else {}
        self.hide_axial_p = augment.hide_axial_p if augment is not None else 0.0
        self.level_context = level_context
        self._transforms: dict[tuple[str, str], object] = {}
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.study_ids)

    def spec(self, family: str, view: str):
        """The crop spec of a view: the cache's geometry (``cache.geometry``: a CropCache's, or
        the model folder's at inference), else the default."""
        return crop_spec(family, view, getattr(self.cache, "geometry", DEFAULT_GEOMETRY))

    def translate(self, family: str, view: str) -> float:
        """± in-plane shift of a view when augmenting, as a fraction of its side: the view's
        ``point_jitter`` mm when set, else ``augment.translate``."""
        mm = self.point_jitter.get(family, {}).get(view)
        return self.augment_config.translate if mm is None else mm[0] / self.spec(family, view).size_mm

    def transform(self, family: str, view: str):
        """The augmentation of one view (``None`` at evaluation), built once. A view cut with
        context is shifted by re-cutting (:meth:`_prepare`), so its affine does not translate."""
        if self.augment_config is None:
            return None
        if (family, view) not in self._transforms:
            recut = self.spec(family, view).context_px > 0
            translate = 0.0 if recut else self.translate(family, view)
            self._transforms[family, view] = build_augmentation(self.augment_config, translate=translate)
        return self._transforms[family, view]

    def _prepare(self, stack: np.ndarray, rng: np.random.Generator, family: str,
                 view_name: str) -> np.ndarray:  # fmt: skip
        jitter = self.point_jitter.get(family, {}).get(view_name)
        reach = int(jitter[1]) if jitter is not None else self.slice_jitter
        shift = int(rng.integers(-reach, reach + 1)) if reach else 0
        spec = self.spec(family, view_name)
        cut = spec.cut
        if spec.cut != spec and stack.shape == (cut.n_slices, cut.size_px, cut.size_px):  # context
            move = 0
            if self.augment_config is not None and spec.context_px:
                move = int(round(self.translate(family, view_name) * spec.size_px))
            offset = tuple(int(rng.integers(-move, move + 1)) if move else 0 for _ in range(2))
            stack, shift = window(stack, spec, offset, shift), 0  # shifts show anatomy that was cut
        view = select_slices(stack, self.slices, shift).astype(np.float32)
        if view.shape[1:] != (self.size, self.size):
            view = resize_slices(view, self.size)
        transform = self.transform(family, view_name)
        if transform is not None:
            transform.set_random_seed(int(rng.integers(2**31)))
            view = transform(image=np.ascontiguousarray(view.transpose(1, 2, 0)))["image"]
            view = view.reshape(self.size, self.size, -1).transpose(2, 0, 1)
            if self.augment_config.slice_reverse_p and rng.random() < self.augment_config.slice_reverse_p:
                view = view[::-1]
        return np.ascontiguousarray(view)

    def __getitem__(self, i: int) -> dict:
        study_id = self.study_ids[i]
        labels = self.labels.get(study_id, {})
        rng = np.random.default_rng(_seed(self.seed, self.epoch, study_id))
        cache = self.cache
        if study_id in self._alternate_ids and rng.random() < self.alternate_share:
            cache = self.alternate
        arrays = cache.arrays(study_id)
        item = {"study_id": study_id, "x": {}, "mask": {}, "label": {}}
        uncovered = ({LEVELS[i].value for i in np.flatnonzero(rng.random(len(LEVELS)) < self.hide_axial_p)}
                     if self.hide_axial_p else set())  # fmt: skip
        for family in self.families:
            slots = family_slots(family)
            views = self.views[family]
            x = np.zeros((len(slots), len(views), self.slices, self.size, self.size), np.float32)
            mask = np.zeros((len(slots), len(views)), bool)
            for n, (condition, level) in enumerate(slots):
                for v, view in enumerate(views):
                    if view == "axial" and level in uncovered:
                        continue
                    stack = arrays.get(f"{condition}/{level}/{view}")
                    if stack is not None and stack.ndim == 3 and stack.shape[0] > 0:
                        x[n, v] = self._prepare(stack, rng, family, view)
                        mask[n, v] = True
            item["x"][family] = torch.from_numpy(x)
            item["mask"][family] = torch.from_numpy(mask)
        graded = graded_slots({f: m.any(-1).numpy() for f, m in item["mask"].items()},
                              self.level_context)
        for family in self.families:
            label = np.full(len(graded[family]), -1, np.int64)
            for n, (condition, level) in enumerate(family_slots(family)):
                if graded[family][n]:
                    label[n] = labels.get(target_column_of(condition, level), -1)
            item["label"][family] = torch.from_numpy(label)
        return item


def target_column_of(condition: str, level: str) -> str:
    return f"{condition}_{level}"


def collate(items: list[dict]) -> dict:
    """Stack items: ``x[f]`` → ``(B, N_f, V_f, S, H, W)``, ``mask[f]`` → ``(B, N_f, V_f)``, …"""
    families = items[0]["x"].keys()
    return {
        "study_id": torch.tensor([it["study_id"] for it in items]),
        **{key: {f: torch.stack([it[key][f] for it in items]) for f in families}
           for key in ("x", "mask", "label")},
    }


assert all(f.value in VIEWS for f in Family)
assert target_column_of("spinal_canal_stenosis", "l1_l2") == target_column(CONDITIONS[0], LEVELS[0])
