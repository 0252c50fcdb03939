"""Oriented, fixed-millimetre 2.5D crops around each level: the input of the severity models.

The crop cache (``rsna-lumbar crops``, default ``work/crops``) is the contract between the
localisation and the models. Its layout:

``index.csv`` — one row per (study, condition, level) sample, the unit a model grades:

    study_id, condition, level, family, side, file, label, views

* ``condition``/``level``: ``train.csv`` spellings (``left_neural_foraminal_narrowing``, ``l4_l5``);
* ``family``: ``spinal``/``foraminal``/``subarticular``; ``side``: ``left``/``right`` or empty;
* ``file``: the study's ``.npz`` (relative to the cache root);
* ``label``: 0/1/2 (Normal/Mild, Moderate, Severe), −1 when missing or unknown (test split);
* ``views``: the views cut for the sample, sorted and ``;``-separated (empty when none).

:mod:`.stage` writes the cache, :class:`.cache.CropCache` reads it.

``{study_id}.npz`` — one float16 array per available view of each sample, key
``{condition}/{level}/{view}``, shape ``(S, H, W)``: ``S`` adjacent slices (the middle one on the
point), ``H × W`` pixels covering a fixed size in millimetres (both from ``geometry.json``),
intensities normalised per series (median 0, robust scale 1). A view the study lacks (no axial coverage, missing series) is simply
absent; models see a mask. Views per family (:data:`rsna_lumbar.vocabulary.VIEWS`):

* spinal: ``sag_t2`` (canal at the disc on sagittal T2), ``axial`` (canal on the level's axial);
* foraminal: ``sag_t1`` (the foramen on sagittal T1), right side mirrored so both sides share
  one orientation;
* subarticular: ``axial`` (the lateral recess), right side mirrored left–right.

``geometry.json`` — each view's size in mm and pixels and its slice count, per family
(:func:`rsna_lumbar.crops.stage.read_geometry`; a recipe's ``crops`` sets it, default
:data:`rsna_lumbar.crops.recipes.DEFAULT_GEOMETRY`: 64 px, 5 sagittal and 3 axial slices).

``{study_id}.json`` — per view: series id, centre (LPS mm), slice spacing, pixel size, source of
the point (``labels``, ``totalspineseg``, ``keypoints``), and any issue met; ``made_from``, the
study's cache key (:func:`rsna_lumbar.crops.stage.study_key`).
"""
