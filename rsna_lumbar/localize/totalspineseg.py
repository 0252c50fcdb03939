"""Run the real ``totalspineseg`` command (its own environment) on one sagittal series, cached.

TotalSpineSeg (PyPI ``totalspineseg``, nnU-Net v2) is never imported here: it pins an older timm
than the kit, so it lives in its own virtual environment (``make tss-env`` builds
``.tss-venv``) and runs as a subprocess on a NIfTI export of the series.

Where things come from, in this order:

* **executable**: the ``executable`` argument, else ``$RSNA_TSS_BIN``, else
  ``$TOTALSPINESEG_BIN`` (the first one set is the only one tried); with none set,
  ``.tss-venv/bin/totalspineseg`` (current directory, then the kit's checkout), then
  ``totalspineseg`` on ``PATH``;
* **weights**: the ``data_dir`` argument, then ``$TOTALSPINESEG_DATA``. Accepted layouts:
  ``D/nnUNet/results/Dataset10{1,2}_…`` (TotalSpineSeg's own), ``D/nnUNet/results/rRELEASE/…``
  (what ``totalspineseg_init`` writes), ``D/Dataset10{1,2}_…`` or one folder deeper (the two
  release zips unpacked, e.g. a Kaggle dataset). Both models must be there even for ``--step1``
  (otherwise TotalSpineSeg tries to download them). A read-only or differently laid-out folder
  is linked into a writable shim under the cache, because TotalSpineSeg writes into it.

Each run writes ``CACHE/<study>/<series>-<hash>/`` with ``out/`` (TotalSpineSeg's folders),
``tss.log`` and ``result.json`` (written last; a failure is cached too, so a study that fails
on Kaggle costs its time once). The hash covers the voxel data, the affine and the options.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rsna_lumbar.atomic import write_text

log = logging.getLogger(__name__)

BIN_VARS = ("RSNA_TSS_BIN", "TOTALSPINESEG_BIN")
DATA_VAR = "TOTALSPINESEG_DATA"
DATASETS = ("Dataset101_TotalSpineSeg_step1", "Dataset102_TotalSpineSeg_step2")
KIT_ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = """\
TotalSpineSeg runs in its own environment (it pins timm<1.0.23; the kit needs a newer timm):
  make tss-env                      # builds .tss-venv from requirements-tss.txt (~2 min, 6.4 GB)
or by hand:
  python3 -m venv .tss-venv && .tss-venv/bin/pip install -r requirements-tss.txt
  # (the same pins as pip install 'rsna-lumbar[totalspineseg]', in a venv of its own)
then point the kit at it with RSNA_TSS_BIN=/path/to/venv/bin/totalspineseg (or keep .tss-venv/
in the working directory). Weights: unpack Dataset101_TotalSpineSeg_step1 and
Dataset102_TotalSpineSeg_step2 (release zips from github.com/neuropoly/totalspineseg) into
D/nnUNet/results/ and set TOTALSPINESEG_DATA=D (on Kaggle: attach them as a dataset).
Until then the learned localiser is used instead."""
_LAUNCH = ("import sys; from totalspineseg.inference import main; "
           "sys.argv[0] = 'totalspineseg'; sys.exit(main())")


class TotalSpineSegError(RuntimeError):
    """Base class of the errors below."""


class TotalSpineSegUnavailable(TotalSpineSegError):
    """The program or its weights are not installed; the message says how to install them."""


class TotalSpineSegFailed(TotalSpineSegError):
    """The program ran and failed (or timed out) on one series.

    Attributes: ``study_id``, ``series_id``, ``returncode`` (None on a timeout),
    ``stderr_tail`` (the last lines of its output), ``log_path``.
    """

    def __init__(self, message, *, study_id=None, series_id=None, returncode=None,
                 stderr_tail="", log_path=None):
        super().__init__(message)
        self.study_id, self.series_id = study_id, series_id
        self.returncode, self.stderr_tail, self.log_path = returncode, stderr_tail, log_path


def find_executable(explicit: str | os.PathLike | None = None) -> Path:
    """The ``totalspineseg`` console script to run; raises :class:`TotalSpineSegUnavailable`."""
    tried = []
    named = [(str(explicit), "argument")] if explicit else []
    named += [(os.environ[v], f"${v}") for v in BIN_VARS if os.environ.get(v)]
    if named:  # an explicit setting is authoritative: never silently run another copy
        candidates = named[:1]
    else:
        candidates = [(str(Path.cwd() / ".tss-venv/bin/totalspineseg"), "./.tss-venv"),
                      (str(KIT_ROOT / ".tss-venv/bin/totalspineseg"), "kit .tss-venv")]
        on_path = shutil.which("totalspineseg")
        if on_path:
            candidates.append((on_path, "PATH"))
    for path, where in candidates:
        p = Path(path).expanduser()
        if p.is_file() and os.access(p, os.X_OK):
            return p
        tried.append(f"{where}: {p}")
    msg = "TotalSpineSeg not found (tried " + "; ".join(tried) + ").\n" + INSTALL_HINT
    raise TotalSpineSegUnavailable(msg)


def _model_folders(root: Path) -> tuple[Path, Path] | None:
    """The two model folders under ``root`` in any accepted layout, or None."""
    results = root / "nnUNet" / "results"
    bases = [results, root]
    if results.is_dir():
        bases += sorted((p for p in results.glob("r*") if p.is_dir()), reverse=True)
    if root.is_dir():
        bases += sorted(p for p in root.iterdir() if p.is_dir() and p.name != "nnUNet")
    for base in bases:
        found = tuple(base / d for d in DATASETS)
        if all(any(f.glob("*__*__*/fold_*")) for f in found if f.is_dir()) and all(
                f.is_dir() for f in found):
            return found  # type: ignore[return-value]
    return None


def find_weights(explicit: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The step-1 and step-2 model folders; raises :class:`TotalSpineSegUnavailable`."""
    root = explicit or os.environ.get(DATA_VAR)
    if not root:
        msg = f"no TotalSpineSeg weights folder: pass data_dir or set ${DATA_VAR}.\n{INSTALL_HINT}"
        raise TotalSpineSegUnavailable(msg)
    found = _model_folders(Path(root).expanduser())
    if found is None:
        msg = (f"TotalSpineSeg weights folder {root} holds no {DATASETS[0]} and {DATASETS[1]} "
               "model folders (each with TRAINER__PLANS__CONFIG/fold_0/); expected e.g. "
               f"{root}/nnUNet/results/{DATASETS[0]}/.\n{INSTALL_HINT}")
        raise TotalSpineSegUnavailable(msg)
    return found


def usable_data_dir(models: tuple[Path, Path], scratch: Path) -> Path:
    """A writable ``--data-dir`` whose ``nnUNet/results/`` holds the two models as-is.

    TotalSpineSeg creates ``nnUNet/exports`` in it and uses ``results/Dataset10x`` directly
    (release name ignored). If the models already sit that way in a writable folder, that
    folder is returned; otherwise ``scratch/tss-data`` is filled with symlinks.
    """
    root = models[0].parent.parent.parent
    if models[0].parent.name == "results" and models[1].parent == models[0].parent \
            and all(os.access(p, os.W_OK) for p in (root, root / "nnUNet", models[0].parent)):
        return root
    shim = scratch / "tss-data"
    results = shim / "nnUNet" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (shim / "nnUNet" / "exports").mkdir(exist_ok=True)
    for model in models:
        link = results / model.name
        if link.is_symlink() and link.resolve() != model.resolve():
            link.unlink()
        if not link.exists():
            link.symlink_to(model.resolve(), target_is_directory=True)
    return shim


def _python_of(script: Path) -> Path | None:
    """The interpreter named by a console script's ``#!`` line, if it is a Python."""
    try:
        first = script.open("rb").readline().decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    interp = Path(first[2:].strip().split()[0])
    return interp if interp.name.startswith("python") and interp.is_file() else None


@dataclass(frozen=True)
class TotalSpineSeg:
    """How to run TotalSpineSeg. Build it with :meth:`from_env`.

    Attributes:
        executable: the ``totalspineseg`` console script.
        models: the step-1 and step-2 model folders.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (TotalSpineSeg picks CUDA when present).
        step1_only: run ``--step1`` (discs, canal, merged bone; enough for the five levels).
        timeout_s: wall-clock limit per series.
        launcher: ``"auto"`` runs the script's ``main()`` with its own interpreter via
            ``python -c`` (same program, ~35 % faster on 2 cores: nnU-Net's worker pools do not
            re-import the script); ``"script"`` runs the console script itself.
        max_workers: TotalSpineSeg's ``--max-workers`` (None = its default, the CPU count).
    """

    executable: Path
    models: tuple[Path, Path]
    device: str = "auto"
    step1_only: bool = True
    timeout_s: float = 1800.0
    launcher: str = "auto"
    max_workers: int | None = None

    @classmethod
    def from_env(cls, *, executable=None, data_dir=None, **options) -> TotalSpineSeg:
        """Find the program and the weights; raises :class:`TotalSpineSegUnavailable`."""
        if options.get("device", "auto") not in ("auto", "cpu", "cuda"):
            msg = f"device must be 'auto', 'cpu' or 'cuda'; got {options['device']!r}"
            raise ValueError(msg)
        return cls(find_executable(executable), find_weights(data_dir), **options)

    def command(self, input_path: Path, out_dir: Path, data_dir: Path) -> list[str]:
        """The argument list for one input file."""
        python = _python_of(self.executable) if self.launcher == "auto" else None
        argv = [str(python), "-c", _LAUNCH] if python else [str(self.executable)]
        keep = ["step1_output", "step1_levels"] + ([] if self.step1_only else ["step2_output"])
        argv += [str(input_path), str(out_dir), "--data-dir", str(data_dir), "--no-stalling",
                 "--quiet", "--keep-only", *keep]
        if self.step1_only:
            argv.append("--step1")
        if self.device != "auto":
            argv += ["--device", self.device]
        if self.max_workers:
            argv += ["--max-workers", str(self.max_workers),
                     "--max-workers-nnunet", str(self.max_workers)]
        return argv

    def run(self, input_path: Path, out_dir: Path, *, scratch: Path, log_path: Path,
            study_id=None, series_id=None) -> float:
        """Run on one NIfTI file; returns the wall time (s). Raises :class:`TotalSpineSegFailed`."""
        data_dir = usable_data_dir(self.models, scratch)
        argv = self.command(Path(input_path), Path(out_dir), data_dir)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
        env.update(HF_HUB_OFFLINE="1", TOTALSPINESEG_DATA=str(data_dir))
        log.info("study %s series %s: running TotalSpineSeg (%s)", study_id, series_id,
                 "step 1" if self.step1_only else "steps 1+2")
        start = time.monotonic()
        with open(log_path, "wb") as sink:
            sink.write((" ".join(argv) + "\n").encode())
            sink.flush()
            proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            try:
                rc = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
        seconds = time.monotonic() - start
        if rc != 0:
            tail = _tail(log_path)
            what = f"timed out after {self.timeout_s:.0f} s" if rc is None else f"exit code {rc}"
            msg = (f"TotalSpineSeg failed on study {study_id} series {series_id} ({what}; full "
                   f"log {log_path}). Last lines:\n{tail}")
            raise TotalSpineSegFailed(msg, study_id=study_id, series_id=series_id,
                                      returncode=rc, stderr_tail=tail, log_path=log_path)
        return seconds


def _tail(path: Path, lines: int = 25) -> str:
    text = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def nifti_key(path: Path, tss: TotalSpineSeg) -> str:
    """16-hex-digit hash of a NIfTI's voxels, affine and the run options."""
    import nibabel as nib
    import numpy as np

    img = nib.load(str(path))
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(np.asanyarray(img.dataobj)).tobytes())
    h.update(np.asarray(img.affine, dtype=np.float64).tobytes())
    h.update(repr((tss.step1_only, weights_fingerprint(tss.models))).encode())
    return h.hexdigest()[:16]


def weights_fingerprint(models: tuple[Path, Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every checkpoint and plans file, so new weights miss the cache."""
    files = []
    for model in models:
        for f in sorted(model.resolve().glob("*__*__*/*.json")) + sorted(
                model.resolve().glob("*__*__*/fold_*/checkpoint_*.pth")):
            st = f.stat()
            files.append((str(f), st.st_size, st.st_mtime_ns))
    return files


def run_cached(tss: TotalSpineSeg, nifti: str | os.PathLike, cache_dir: str | os.PathLike, *,
               study_id=None, series_id=None, force: bool = False) -> Path:
    """Run TotalSpineSeg on one NIfTI unless its cache entry exists; returns the ``out/`` folder.

    The outputs are ``out/step1_output/NAME.nii.gz`` etc. with ``NAME = {study}_{series}``.
    A cached failure is raised again as :class:`TotalSpineSegFailed` (``force`` reruns).
    """
    nifti, cache_dir = Path(nifti), Path(cache_dir)
    entry = cache_dir / str(study_id) / f"{series_id}-{nifti_key(nifti, tss)}"
    marker = entry / "result.json"
    if marker.is_file() and not force:
        result = json.loads(marker.read_text())
        if result["status"] == "ok":
            log.info("study %s series %s: TotalSpineSeg output cached in %s",
                     study_id, series_id, entry)
            return entry / "out"
        raise TotalSpineSegFailed(result["message"] + f"\n(cached; rerun with force=True)",
                                  study_id=study_id, series_id=series_id,
                                  returncode=result.get("returncode"),
                                  stderr_tail=result.get("stderr_tail", ""),
                                  log_path=entry / "tss.log")
    shutil.rmtree(entry, ignore_errors=True)
    (entry / "in").mkdir(parents=True)
    name = f"{study_id}_{series_id}"
    staged = entry / "in" / f"{name}.nii.gz"
    if nifti.name.endswith(".nii.gz"):
        shutil.copyfile(nifti, staged)
    else:
        import nibabel as nib

        nib.save(nib.load(str(nifti)), str(staged))
    try:
        seconds = tss.run(staged, entry / "out", scratch=cache_dir, log_path=entry / "tss.log",
                          study_id=study_id, series_id=series_id)
    except TotalSpineSegFailed as err:
        write_text(marker, json.dumps({"status": "failed", "message": str(err),
                                       "returncode": err.returncode,
                                       "stderr_tail": err.stderr_tail}))
        raise
    staged.unlink(missing_ok=True)
    write_text(marker, json.dumps({"status": "ok", "seconds": round(seconds, 1), "name": name,
                                   "argv": tss.command(staged, entry / "out", Path("DATA"))}))
    log.info("study %s series %s: TotalSpineSeg took %.0f s", study_id, series_id, seconds)
    return entry / "out"


def output_name(study_id, series_id) -> str:
    """The file stem TotalSpineSeg's outputs get for one series in :func:`run_cached`."""
    return f"{study_id}_{series_id}"


def main() -> int:
    """``python -m rsna_lumbar.localize``: say which TotalSpineSeg and weights would be used."""
    try:
        t = TotalSpineSeg.from_env()
    except TotalSpineSegUnavailable as err:
        print(err, file=sys.stderr)
        return 1
    print(f"executable: {t.executable}\nstep 1 model: {t.models[0]}\nstep 2 model: {t.models[1]}")
    return 0
