"""Publish the kit to Kaggle: the offline wheelhouse, the weights dataset, the inference kernel.

The Make targets ``wheels``, ``push-weights``, ``push-kernel``, ``submit`` and ``kernel-status``
are thin wrappers over ``python -m rsna_lumbar.publish STEP`` (``wheels``, ``stage-weights``,
``push-weights``, ``stage-kernel``, ``push-kernel``, ``submit``, ``kernel-status``;
:mod:`.__main__`). The steps live in :mod:`.metadata` (owner, slugs, rendered metadata),
:mod:`.wheels` (the offline wheelhouse), :mod:`.staging` (the staged dataset and kernel folders)
and :mod:`.kaggle_cli` (uploads through the ``kaggle`` CLI).

Guards (each says what to do):

- ``push-weights`` publishes only model folders (sub-folders of ``weights/`` with ``model.json``
  or ``config.json``) whose ``provenance.json`` (:mod:`rsna_lumbar.provenance`) says they were
  trained on competition data; no model folder, a folder without provenance, or one trained on
  synthetic data is refused unless ``--allow-synthetic`` (Make: ``ALLOW_SYNTHETIC=1``); the
  packaged localiser copied into ``weights/localizer`` (data kind ``packaged``) passes. The
  staged ``weights/MANIFEST.json`` lists each folder's provenance for the kernel to print.
- ``push-kernel`` first waits (``kaggle datasets status``) until the weights dataset's current
  version is ready, so the kernel never runs against a version still being processed.
- ``push-kernel`` records the kernel version Kaggle reports in ``OUT/pushed.json``; ``submit``
  submits that version (or ``--kernel-version N``) with ``kaggle competitions submit -k -v``.

Where things are configured (one place each):

- The slugs live in the committed templates: ``dataset-metadata.json`` (the weights dataset,
  ``id``) and ``kernels/kernel-metadata.json`` (the kernel, ``id``). Their owner is the
  placeholder ``your-kaggle-username``; ``--dataset``/``--kernel`` (Make: ``WEIGHTS_DATASET``,
  ``KERNEL_SLUG``) override the slugs.
- The owner is ``--owner`` (Make: ``KAGGLE_USER``), else ``KAGGLE_USERNAME``, else the
  ``username`` of your ``kaggle.json``. Only the user *name* is ever read here; the key stays
  with the kaggle CLI, which finds your credentials the usual way.

Rendered metadata is written only into staging folders under ``build/`` (git-ignored), never
into the committed templates. Uploads go through the real ``kaggle`` CLI.
"""

from __future__ import annotations


class PublishError(RuntimeError):
    """A publishing step cannot go on; the message says what to do."""
