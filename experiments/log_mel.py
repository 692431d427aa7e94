"""Log-compressed mel energies instead of the linear magnitudes the original baseline feeds to its scaler.

    python extract_features.py --data-root data/demo --workdir work/log_mel --config experiments/log_mel.py
    python task4b.py --workdir work/log_mel
    python compare.py work/demo work/log_mel

A feature setting: the workdir's features are extracted with it, and every later command on that workdir uses it.
"""
LOG_MEL = True
