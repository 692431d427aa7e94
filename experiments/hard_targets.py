"""Hard training targets: the challenge's research question, "do soft labels help?", as one setting.

    python extract_features.py --data-root data/demo --workdir work/hard --config experiments/hard_targets.py
    python task4b.py --workdir work/hard
    python compare.py work/demo work/hard

Training and validation (loss, model selection, the output layer's prior bias) use 1.0 where the soft label is
above HARD_LABEL_THRESHOLD and 0.0 elsewhere, the labels the evaluation scores against, instead of the soft
values. The features are the same as the soft baseline's (docs/method.md, Training).
"""
TARGETS = 'hard'
