"""Cross-validated training into a self-describing model folder, resumable, DDP-ready.

``train_cv(crops, folds, labels, config, out)`` writes::

    out/config.yaml        the resolved configuration (every key)
    out/model.json         what the predictor needs to rebuild the network without the registry
    out/folds.csv          the study folds used
    out/priors.json        class priors of all labelled studies (the inference fallback)
    out/provenance.json    what it was trained on (``data``: the competition folder; see
                           rsna_lumbar/provenance.py); not written when ``data`` is not given
    out/fold_k/model.safetensors, fold_k/oof.csv (logits, see oof.py), fold_k/history.json
    out/fold_k/last.pt     while a fold is in progress: model + optimiser + schedule + epoch
    out/oof_logits.csv, out/oof.csv   all folds (oof.csv: submission format)

A finished fold (``model.safetensors`` + ``oof.csv``) is skipped; an unfinished one resumes from
``last.pt`` at the next epoch. Every random draw is derived from ``(seed, fold, epoch)``, so a
resumed run repeats an uninterrupted one. Under ``torchrun`` (``WORLD_SIZE`` > 1) each process
trains on its share of every global batch with DistributedDataParallel (NCCL on GPU, gloo on
CPU); the loss is normalised by the global sums of weights so it is the same weighted mean a
single process would compute; rank 0 writes. On CUDA, autocast (bf16, else fp16 + GradScaler).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import yaml
from tqdm.auto import tqdm

from rsna_lumbar.atomic import atomic_path, write_csv, write_text
from rsna_lumbar.crops.cache import CropCache
from rsna_lumbar.crops.recipes import geometry_settings
from rsna_lumbar.crops.stage import crop_data_folders
from rsna_lumbar.devices import autocast, choose_device, grad_scaler
from rsna_lumbar.folds import read_folds
from rsna_lumbar.models.dataset import StudyDataset, _seed, collate, labels_by_study
from rsna_lumbar.models.folder import (
    build_network, check_crop_geometry, describe, read_description, write_description,
)
from rsna_lumbar.models.forward import forward_batch, predict_logits
from rsna_lumbar.models.registry import ModelSpec, get_spec
from rsna_lumbar.models.weights import resolve_init_file, save_weights
from rsna_lumbar.priors import class_priors, save_priors
from rsna_lumbar.provenance import data_fingerprint, read_provenance, write_provenance
from rsna_lumbar.tables import read_train
from rsna_lumbar.training.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    dump_config,
)
from rsna_lumbar.training.ema import WeightAverage
from rsna_lumbar.training.label_noise import DROP_LIST, drop_labels, keep_drop_list
from rsna_lumbar.training.losses import loss_parts, metric_loss
from rsna_lumbar.training.oof import oof_frame, submission_from_logits

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup(config: Config) -> Dist:
    """Read torchrun's env vars, start the process group once, pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    # CUDA only after a smoke test on this process's GPU (a visible GPU may be unusable)
    choice = choose_device(config.train.device, index=local)
    cuda = choice.device.type == "cuda"
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if rank == 0:
        LOGGER.info("device: %s (%s)", device, choice.note)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, device)


def end_process_group() -> None:
    """Close the process group :func:`setup` started, if any, once the process's training is
    over: a gloo group left to the interpreter's exit can abort a rank ("terminate called
    without an active exception") after its work is done, failing the torchrun."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolved_spec(config: Config) -> ModelSpec:
    """The registry spec with the config's overrides applied."""
    from dataclasses import replace

    m = config.model
    changes = {k: getattr(m, k) for k in ("slices", "size", "pooling", "hidden", "dropout", "head")
               if getattr(m, k) is not None}
    return replace(get_spec(m.spec), **changes)


def model_description(config: Config, geometry: dict | None = None) -> dict:
    """``model.json`` of ``config``'s network (:func:`rsna_lumbar.models.folder.describe`),
    trained on crops cut at ``geometry`` (recorded when given)."""
    return describe(resolved_spec(config), config.data.families, config.data.views,
                    config.model.shared, geometry_settings(geometry) if geometry is not None else None,
                    level_context=config.model.level_context,
                    context_detached=config.model.context_detached)


def _schedule(optimizer, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _optimizer(model, config: Config):
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.train.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.train.lr)


def _shard(ids: list[int], fold: int, epoch: int, config: Config, d: Dist) -> list[list[int]]:
    """This rank's batches of dataset indices for one epoch (same global order on every rank)."""
    g = torch.Generator().manual_seed(_seed(config.train.seed, fold, epoch, "order"))
    order = torch.randperm(len(ids), generator=g).tolist()
    per_rank = max(1, config.train.batch_size // d.world)
    global_batch = per_rank * d.world
    steps = max(1, len(order) // global_batch)  # drop the ragged tail: equal steps on every rank
    return [order[s * global_batch + d.rank * per_rank: s * global_batch + (d.rank + 1) * per_rank]
            for s in range(steps)]


def train_fold(fold: int, cache: CropCache, folds: pd.DataFrame, labels, config: Config,
               out: Path, d: Dist, stop_after_epochs: int | None = None,
               localised: CropCache | None = None, train_labels=None) -> bool:  # fmt: skip
    """Train (or resume) one fold; returns ``False`` if stopped early by ``stop_after_epochs``.
    ``localised``: the crops at the localiser's points, read for ``data.localised_share`` of
    the training draws (validation reads ``cache`` only). ``train_labels``: the labels the
    training reads (default ``labels``; fewer with ``data.drop_labels``), the out-of-fold
    rows keeping ``labels``."""
    train_labels = labels if train_labels is None else train_labels
    fold_dir = out / f"fold_{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    in_cache = set(cache.study_ids)
    train_ids = [s for s in folds.loc[folds.fold != fold, "study_id"] if s in in_cache and s in labels]
    val_ids = [int(s) for s in folds.loc[folds.fold == fold, "study_id"] if s in in_cache]
    if not train_ids:
        raise ValueError(f"fold {fold}: no labelled training study is in the crop cache")
    spec = resolved_spec(config)
    description = model_description(config)
    common = dict(families=config.data.families, views=config.data.views, slices=spec.slices,
                  size=spec.size, seed=_seed(config.train.seed, fold),
                  level_context=config.model.level_context)
    train_set = StudyDataset(cache, train_ids, train_labels, augment=config.augment,
                             slice_jitter=config.data.slice_jitter,
                             point_jitter=config.data.point_jitter, alternate=localised,
                             alternate_share=config.data.localised_share, **common)  # fmt: skip
    val_set = StudyDataset(cache, val_ids, labels, **common)

    torch.manual_seed(_seed(config.train.seed, fold, "init"))
    init = resolve_init_file(spec.backbone, spec.pretrained_tag, config.model.pretrained_file,
                             required=config.model.pretrained) if config.model.pretrained else None
    model = build_network(description, init_file=init).to(d.device)
    if config.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, config)
    steps_per_epoch = len(_shard(list(range(len(train_set))), fold, 0, config, d))
    total = steps_per_epoch * config.train.epochs
    scheduler = _schedule(optimizer, int(config.train.warmup_epochs * steps_per_epoch), total)
    amp = config.train.amp and d.device.type == "cuda"
    scaler = grad_scaler(d.device, amp)
    start_epoch, history, ema_state = 0, [], None
    checkpoint = fold_dir / "last.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=d.device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        ema_state = state.get("ema")
        start_epoch, history = int(state["epoch"]), list(state["history"])
        if d.main:
            LOGGER.info("fold %d: resuming after epoch %d from %s", fold, start_epoch, checkpoint)
    # the average starts from the weights training resumes from (or those of the checkpoint's)
    ema = WeightAverage(model, config.train.ema) if config.train.ema > 0 else None
    if ema is not None and ema_state is not None:
        ema.load_state_dict(ema_state)
    net = model
    if d.world > 1 and d.device.type == "cuda" and config.train.sync_bn:
        model = net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None)

    ran = 0
    for epoch in range(start_epoch, config.train.epochs):
        if stop_after_epochs is not None and ran >= stop_after_epochs:
            return False
        torch.manual_seed(_seed(config.train.seed, fold, epoch, d.rank))
        train_set.set_epoch(epoch)
        net.train()
        batches = _shard(list(range(len(train_set))), fold, epoch, config, d)
        losses, wait, started = [], 0.0, time.perf_counter()
        loader = torch.utils.data.DataLoader(
            train_set, batch_sampler=batches, collate_fn=collate,
            num_workers=config.train.workers, pin_memory=d.device.type == "cuda",
            persistent_workers=False)
        bar = tqdm(total=len(batches), desc=f"fold {fold} epoch {epoch + 1}/{config.train.epochs}",
                   disable=not d.main, leave=False, dynamic_ncols=True)
        iterator = iter(loader)
        for _ in range(len(batches)):
            before = time.perf_counter()
            batch = next(iterator)
            wait += time.perf_counter() - before
            with autocast(d.device, amp):
                logits = forward_batch(net, batch, d.device, amp)
            targets = {f: batch["label"][f].to(d.device) for f in logits}
            parts = loss_parts(logits, targets, config.train.class_weights,
                               config.train.any_severe_weight)
            dens = {k: den.detach().clone() for k, (_, den) in parts.items()}
            if d.world > 1:
                for den in dens.values():
                    dist.all_reduce(den)
            loss = metric_loss(parts, dens, scale=d.world)  # DDP averages gradients over ranks
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            losses.append(loss.item() / d.world)
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        bar.close()
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "lr": float(scheduler.get_last_lr()[0]), "seconds": round(seconds, 2),
                        "studies_per_s": round(len(batches) * len(batches[0]) * d.world / seconds, 3),
                        "data_wait_share": round(wait / seconds, 4)})
        if d.main:
            LOGGER.info("fold %d epoch %d/%d: train loss %.4f", fold, epoch + 1,
                        config.train.epochs, history[-1]["train_loss"])
            with atomic_path(checkpoint) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                            "ema": ema.state_dict() if ema is not None else None,
                            "epoch": epoch + 1, "history": history}, tmp)
        d.barrier()
        ran += 1

    _check_replicas(model, d)
    if ema is not None:  # the average gives the OOF predictions and is what is saved
        if d.world > 1:  # batch-norm statistics averaged per rank differ: rank 0's, everywhere
            for tensor in ema.state.values():
                dist.broadcast(tensor, src=0)
        ema.copy_to(model)
    # Out-of-fold predictions: each rank predicts its share of the held-out studies.
    share = list(range(d.rank, len(val_set), d.world))
    studies, outputs = predict_logits(model, val_set, d.device, config.train.eval_batch_size,
                                      amp, indices=share)
    gathered = [(studies, outputs)]
    if d.world > 1:
        gathered = [None] * d.world
        dist.all_gather_object(gathered, (studies, outputs))
    if d.main:
        all_studies = [s for g in gathered for s in g[0]]
        merged = {f: tuple(np.concatenate([g[1][f][k] for g in gathered]) for k in (0, 1))
                  for f in outputs}
        priors = fold_priors(labels, train_ids)
        missing = [int(s) for s in folds.loc[folds.fold == fold, "study_id"] if s not in in_cache]
        if missing:
            LOGGER.warning("fold %d: %d studies have no crops; their OOF rows are priors", fold,
                           len(missing))
        frame = oof_frame(fold, all_studies, merged, priors, labels, missing)
        save_weights(model, fold_dir / "model.safetensors",
                     {"fold": fold, "spec": description["spec"]["name"]})
        write_text(fold_dir / "history.json", json.dumps(history, indent=1) + "\n")
        write_csv(frame, fold_dir / "oof.csv", float_format="%.6g")
        checkpoint.unlink(missing_ok=True)
    d.barrier()
    return True


def fold_priors(labels, train_ids) -> np.ndarray:
    """(25, 3) class priors of the labelled studies ``train_ids`` (a fold's fallback rows)."""
    from rsna_lumbar.vocabulary import SEVERITIES, TARGET_COLUMNS

    rows = [{"study_id": s, **{c: SEVERITIES[g].value for c, g in labels[s].items()}}
            for s in train_ids]
    frame = pd.DataFrame(rows).reindex(columns=["study_id", *TARGET_COLUMNS])
    return class_priors(frame)


def _check_replicas(model, d: Dist) -> None:
    """Under DDP every rank must hold the same weights; a mismatch is a bug, not noise."""
    if d.world == 1:
        return
    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    values = [torch.zeros_like(total) for _ in range(d.world)]
    dist.all_gather(values, total)
    if not all(torch.allclose(v, values[0], rtol=1e-6, atol=1e-6) for v in values):
        raise RuntimeError(f"DDP replicas diverged: parameter sums {[float(v) for v in values]}")


def fold_done(out: Path, fold: int) -> bool:
    return (out / f"fold_{fold}" / "model.safetensors").is_file() and (
        out / f"fold_{fold}" / "oof.csv").is_file()


def train_cv(crops, folds_csv, labels_csv, config: Config, out, *, force: bool = False,
             stop_after_epochs: int | None = None, data=None,
             recipe: str | None = None, localised_crops=None) -> Path | None:  # fmt: skip
    """Train every fold of ``config.train.folds`` (default: all) into ``out``; see module doc.

    ``data``: the competition folder the crops and labels come from, recorded with ``recipe``
    (how the config was chosen) in ``out/provenance.json``. ``localised_crops``: a crop cache
    of the same studies at the localiser's (out-of-fold) points, at the same geometry, read for
    ``config.data.localised_share`` of the training draws; required when that share is above 0,
    unused otherwise. Returns the model folder when every requested fold is done, ``None`` if
    stopped early.
    """
    if config.data.localised_share > 0 and localised_crops is None:
        msg = (f"data.localised_share={config.data.localised_share} needs the crops at the "
               "localiser's points: pass --localised-crops DIR ('rsna-lumbar crops --points')")
        raise ValueError(msg)
    threads = torch.get_num_threads()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    try:
        return _train_cv(crops, folds_csv, labels_csv, config, Path(out), force, stop_after_epochs,
                         data, recipe, localised_crops if config.data.localised_share > 0 else None)
    finally:
        torch.set_num_threads(threads)


def _same_config(path: Path, config: Config) -> bool:
    """Whether the run whose ``config.yaml`` is ``path`` used ``config``. The file is read with
    today's schema, so a key added since (at its default) does not make an old run another one;
    nor does a retired key (``RETIRED_KEYS``, which never changed what trained); any other key
    since removed does. ``train.device`` is not compared: a run may resume on another
    device (a GPU run finished on the CPU, or the other way)."""
    try:
        before = config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), saved=True)
    except ConfigError:
        return False
    same_device = dataclasses.replace(before.train, device=config.train.device)
    return dataclasses.replace(before, train=same_device) == config


def _check_provenance(out: Path, data, fingerprint: str | None, crops) -> None:
    """Refuse to record ``data`` as what trained ``out`` when that cannot be vouched for: the
    folder holds a run on other data, finished folds with no record of their data, or the crops
    were cut from another data folder (their ``made_from``)."""
    if data is None:
        return
    made = read_provenance(out)
    if made and made.get("data_fingerprint") != fingerprint:
        msg = (f"{out} holds a run trained on other data ({made.get('data_folder')}); pass "
               f"--force to retrain from scratch, or choose another --out")
        raise ValueError(msg)
    if not made and any(out.glob("fold_*/model.safetensors")):
        msg = (f"{out} holds folds trained without a record of their data: pass --force to "
               f"retrain them on {data}, or choose another --out")
        raise ValueError(msg)
    others = crop_data_folders(crops) - {str(Path(data).resolve())}
    if others:
        msg = (f"the crops in {crops} were cut from {sorted(others)[0]}, not from {data}: cut "
               f"them from --data first ('rsna-lumbar crops --data {data} ...')")
        raise ValueError(msg)


def _train_cv(crops, folds_csv, labels_csv, config: Config, out: Path, force: bool,
              stop_after_epochs: int | None, data, recipe: str | None,
              localised_crops) -> Path | None:  # fmt: skip
    d = setup(config)
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    text = dump_config(config)
    if d.main:
        if force and out.exists():
            shutil.rmtree(out)
        old = out / "config.yaml"
        if old.is_file() and not _same_config(old, config):
            msg = (f"{out} holds a run with another configuration; pass --force to retrain "
                   f"from scratch, or choose another --out")
            raise ValueError(msg)
        fingerprint = None if data is None else data_fingerprint(data)
        _check_provenance(out, data, fingerprint, crops)
        out.mkdir(parents=True, exist_ok=True)
        write_text(old, text)
    d.barrier()
    folds = read_folds(folds_csv)
    train = read_train(labels_csv)
    labels = labels_by_study(train)
    train_labels = labels
    if config.data.drop_labels is not None:
        if d.main:
            keep_drop_list(config.data.drop_labels, out)
        d.barrier()
        train_labels, dropped = drop_labels(labels, out / DROP_LIST)
        if d.main:
            LOGGER.info("data.drop_labels: %d labels left out of training (%s)", dropped,
                        config.data.drop_labels)
    cache = CropCache(crops, keep_in_memory=config.data.cache_in_memory)
    localised = None
    if localised_crops is not None:
        localised = CropCache(localised_crops, keep_in_memory=config.data.cache_in_memory)
        check_crop_geometry({"crops": geometry_settings(cache.geometry)}, localised.geometry,
                            str(localised_crops))  # fmt: skip
    wanted = config.train.folds if config.train.folds is not None else sorted(folds.fold.unique())
    if d.main:
        write_csv(folds, out / "folds.csv")
        save_priors(class_priors(train), out / "priors.json")
        if (out / "model.json").is_file():  # finished folds were trained at its geometry
            check_crop_geometry(read_description(out), cache.geometry, str(crops))
        write_description(out, model_description(config, cache.geometry))
        if data is not None:
            write_provenance(out, data, recipe or f"{config.model.spec} (resolved: config.yaml)",
                             fingerprint=fingerprint)
    complete = True
    for fold in wanted:
        if fold_done(out, fold):
            if d.main:
                LOGGER.info("fold %d already trained: skipped (--force retrains)", fold)
            continue
        complete &= train_fold(int(fold), cache, folds, labels, config, out, d, stop_after_epochs,
                               localised, train_labels)  # fmt: skip
        if not complete:
            break
    if complete and d.main:
        frames = [pd.read_csv(out / f"fold_{k}" / "oof.csv") for k in wanted]
        oof = pd.concat(frames).sort_values("row_id", kind="stable")
        write_csv(oof, out / "oof_logits.csv", float_format="%.6g")
        write_csv(submission_from_logits(oof), out / "oof.csv", float_format="%.8g")
    d.barrier()
    return out if complete else None


__all__ = ["train_cv", "train_fold", "model_description", "config_to_dict"]
