"""Augmentations of training batches: the set the DCASE2024 Task 4 winner (cpjku) trains with, as settings of this
baseline (docs/method.md, Training: what each does here).

    python extract_features.py --data-root data/demo --workdir work/augment --config experiments/augment.py
    python task4b.py --workdir work/augment --epochs 80
    python compare.py work/demo work/augment

On the demo data none of them helped alone (docs/experiments.md, Augmentations: mixup, FilterAugment and frame
shift within the run-to-run noise, SpecAugment's masks and frequency MixStyle worse), so this file is not the best
measured combination but the anchors' one: mixup at DESED_task's probability and alpha, time masks, frame shift,
FilterAugment and frequency MixStyle (cpjku's gain augmentation is FilterAugment with one band here; no setting).
Data with less distinct classes than the demo's, such as MAESTRO Real, is where they are meant to help.
"""
MIXUP = 0.5
TIME_MASKS = 2
FRAME_SHIFT = 10
FILTER_AUGMENT_BANDS = 4
MIXSTYLE = 0.5
