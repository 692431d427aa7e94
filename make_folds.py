"""A deterministic, scene-stratified 5-fold split, for data sets other than MAESTRO Real.

    python make_folds.py --split my_split.csv --folds-dir my_folds
    python extract_features.py --data-root DIR --split-file my_split.csv --folds-dir my_folds

development_folds/ holds the challenge's official folds, which this script never overwrites.

The procedure (no randomness, so the committed files can always be regenerated and checked):
1. Sort the 49 file ids (scene by scene, then by number) and number them i = 0 .. 48.
2. Deal them round-robin into 5 groups: id i goes to group i mod 5. A scene's ids are consecutive and
   every scene has at least 9, so every group holds ids of all 5 scenes (stratified), and the group
   sizes are 10, 10, 10, 10, 9. Dealing on across the scene boundaries (instead of restarting at group
   0 for each scene) is what balances the sizes.
3. Fold k (1 .. 5) tests on group k-1; validates on group k (mod 5) plus every fifth id of group k+1
   (mod 5), i.e. that group's 1st and 6th, from two different scenes; trains on the rest. That is about
   20% test, 24% validation, 55% training, every part spanning all 5 scenes, and each file is in
   exactly one test part.

Any fold files of this format (header `filename`, one id per line) can be given to extract_features.py;
everything downstream uses the fold lists that extraction recorded.
"""
import argparse
from pathlib import Path

import config
import experiment
import utils

PARTS = ('train', 'val', 'test')


def deal_groups(file_ids, n_groups):
    """Sorted ids dealt round-robin: a list of n_groups lists."""
    ordered = sorted(file_ids)
    return [ordered[g::n_groups] for g in range(n_groups)]


def make_folds(file_ids, n_folds=None):
    """{fold (1-based): {'train': [...], 'val': [...], 'test': [...]}}, each part sorted (n_folds: default
    config.N_FOLDS)."""
    n_folds = n_folds or config.N_FOLDS
    groups = deal_groups(file_ids, n_folds)
    folds = {}
    for k in range(1, n_folds + 1):
        test = groups[(k - 1) % n_folds]
        # one more group would make val 20%; a fifth of the group after it brings it to ~25%
        val = groups[k % n_folds] + groups[(k + 1) % n_folds][::5]
        held_out = set(test) | set(val)
        train = [file_id for file_id in sorted(file_ids) if file_id not in held_out]
        folds[k] = {'train': train, 'val': sorted(val), 'test': sorted(test)}
    return folds


def file_list_text(file_ids):
    return 'filename\n' + ''.join(f'{file_id}\n' for file_id in file_ids)


def write_split(file_ids, path=None):
    utils.write_text_atomic(path or config.DEVELOPMENT_SPLIT, file_list_text(sorted(file_ids)))


def write_folds(folds, folds_dir=None):
    for k, parts in folds.items():
        for part in PARTS:
            utils.write_text_atomic(utils.fold_file(k, part, folds_dir), file_list_text(parts[part]))


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
    write_split(file_ids, args.split)
    write_folds(folds, args.folds_dir)
    for k, parts in folds.items():
        sizes = ', '.join(f'{part} {len(parts[part])}' for part in PARTS)
        print(f'fold {k}: {sizes}')
    print(f'wrote {args.split} and {args.folds_dir}/fold{{1..{config.N_FOLDS}}}_{{train,val,test}}.csv')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
