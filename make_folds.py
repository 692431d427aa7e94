"""A deterministic, scene-stratified 5-fold split, for data sets other than MAESTRO Real.

    python make_folds.py --split my_split.csv --folds-dir my_folds
    python extract_features.py --data-root DIR --split-file my_split.csv --folds-dir my_folds

development_folds/ holds the challenge's official folds, which this script never overwrites. No randomness:
the sorted ids are dealt round-robin into 5 groups; fold k tests on group k-1, validates on group k plus every
fifth id of group k+1, and trains on the rest (docs/method.md, Folds and metadata).
"""
import argparse
from pathlib import Path

import config
import experiment
import utils

PARTS = ('train', 'val', 'test')


def make_folds(file_ids, n_folds=None):
    """{fold (1-based): {'train': [...], 'val': [...], 'test': [...]}}, each part sorted (n_folds: default
    config.N_FOLDS)."""
    n_folds = n_folds or config.N_FOLDS
    ordered = sorted(file_ids)
    groups = [ordered[g::n_folds] for g in range(n_folds)]      # dealt round-robin
    folds = {}
    for k in range(1, n_folds + 1):
        test = groups[k - 1]
        # one more group would make val 20%; a fifth of the group after it brings it to ~25%
        val = groups[k % n_folds] + groups[(k + 1) % n_folds][::5]
        held_out = set(test) | set(val)
        folds[k] = {'train': [i for i in ordered if i not in held_out], 'val': sorted(val), 'test': sorted(test)}
    return folds


def file_list_text(file_ids):
    return 'filename\n' + ''.join(f'{file_id}\n' for file_id in file_ids)


@experiment.command
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('--split', type=Path, required=True, help='split file to write')
    parser.add_argument('--folds-dir', type=Path, required=True, help='folder for fold{k}_{train,val,test}.csv')
    args = experiment.parse_args(parser, argv)
    for given, official in ((args.split, config.DEVELOPMENT_SPLIT), (args.folds_dir, config.FOLDS_DIR)):
        if given.resolve() == official.resolve():
            raise utils.DataError(f'{given}: the official split and folds of the challenge are kept as they are; '
                                  f'write these elsewhere (e.g. --split my_split.csv --folds-dir my_folds)')
    file_ids = utils.development_file_ids()
    folds = make_folds(file_ids)
    utils.write_text_atomic(args.split, file_list_text(sorted(file_ids)))
    for k, parts in folds.items():
        for part in PARTS:
            utils.write_text_atomic(utils.fold_file(k, part, args.folds_dir), file_list_text(parts[part]))
    for k, parts in folds.items():
        sizes = ', '.join(f'{part} {len(parts[part])}' for part in PARTS)
        print(f'fold {k}: {sizes}')
    print(f'wrote {args.split} and {args.folds_dir}/fold{{1..{config.N_FOLDS}}}_{{train,val,test}}.csv')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
