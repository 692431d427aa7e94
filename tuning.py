"""Post-processing chosen on validation, and ensembles of runs (evaluate.py --tune, --ensemble; infer.py --tune):
per fold and class, the threshold and median filter with the best segment F-score on the fold's validation files
(`runs/run{r}/validation_scores/fold{k}/`, written by task4b.py), to cut its test files with: what F1_thop promises
without the test labels; and the runs' frame scores averaged per file as one system. evaluate.py scores both.
"""
import math
import shlex
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # dcase_util imports pkg_resources
import sed_scores_eval  # noqa: E402

import config  # noqa: E402
import utils  # noqa: E402
from post_processing import median_filter_lengths  # noqa: E402
from runs import (TRAIN_HINT, finished_folds, missing_validation_scores, validation_files,  # noqa: E402
                  validation_scores_dir)
from score_io import EXTRACT_HINT, filtered_scores, finite_or_none, read_score_files, reference_events  # noqa: E402
from utils import DataError  # noqa: E402


def read_validation_scores(workdir, run_dir, fold, ground_truth):
    """{stem: score DataFrame} of fold k's validation files, the run's validation_scores/fold{k}/; where any is
    missing (a run trained before task4b.py saved them), a DataError saying how to write them."""
    missing = missing_validation_scores(workdir, run_dir, fold)
    if missing:
        hint = f'run: python infer.py --workdir {shlex.quote(str(workdir))} --validation-scores'
        raise DataError(f'{validation_scores_dir(run_dir, fold)}: no validation scores of {missing[:2]}'
                        f'{"..." * (len(missing) > 2)} (a run trained before they were saved?); score them with the '
                        f'fold\'s best_model.pt, no retraining, {hint}')
    scores = read_score_files(validation_scores_dir(run_dir, fold), ground_truth)
    return {utils.file_stem(i): scores[utils.file_stem(i)] for i in validation_files(workdir, fold)}


def run_folds(workdir, run_dir, ground_truth, validation=True):
    """A run's finished folds -> {fold: {'test': {stem: scores}, 'validation': {stem: scores}}} (validation: the
    scores of the fold's validation files by its selected model, read_validation_scores)."""
    test = read_score_files(Path(run_dir) / 'scores', ground_truth)
    folds = {}
    for fold, stems in finished_folds(run_dir).items():
        lacking = [s for s in stems if s not in test]
        if lacking:
            raise DataError(f'{Path(run_dir) / "scores"}: no score files for {lacking[:3]} ({len(lacking)} files)')
        folds[fold] = {'test': {s: test[s] for s in stems}}
        if validation:
            folds[fold]['validation'] = read_validation_scores(workdir, run_dir, fold, ground_truth)
    if not folds:
        raise DataError(f'{run_dir}: no finished fold of its current settings (fold*/metrics.json); {TRAIN_HINT}')
    return folds


def average_scores(frames):
    """Score DataFrames of one file from several runs -> one: each class's frame scores averaged over the runs."""
    if len({len(df) for df in frames}) > 1:
        raise DataError(f'scores of one file with {sorted({len(df) for df in frames})} frames in different runs: '
                        f'runs of other features? {EXTRACT_HINT}')
    averaged = frames[0].copy()
    averaged[config.HARD_CLASSES] = np.mean([df[config.HARD_CLASSES].to_numpy(np.float64) for df in frames], axis=0)
    return averaged


def ensemble_folds(folds_of_runs):
    """[run_folds of each run] -> the folds every run finished, each file's test (and validation) scores averaged
    over the runs: the frame scores of the ensemble, as run_folds gives a run's."""
    common = sorted(set.intersection(*(set(folds) for folds in folds_of_runs)))
    if not common:
        raise DataError('the runs have no finished fold in common: an ensemble averages the scores of one file by '
                        'every run; choose runs with --runs')
    return {fold: {part: {stem: average_scores([folds[fold][part][stem] for folds in folds_of_runs])
                          for stem in folds_of_runs[0][fold][part]}
                   for part in folds_of_runs[0][fold]} for fold in common}


# sed_scores_eval's best_fscore gives the threshold -inf when the best F detects every segment (its lowest score)
BELOW_EVERY_SCORE = ('below every validation score (sed_scores_eval: -inf): the best F detects every segment, so '
                     'every frame is active')


def choose_on_validation(scores, ground_truth, durations):
    """Per class, the median filter (of config.TUNE_MEDIAN_FILTERS) and threshold with the best segment F (as
    F1_thop's; a tie keeps the shorter filter) on validation score files {id: DataFrame} -> {class: {'threshold',
    'median_filter', 'F' (%)}}; a threshold below every score is None with its 'why' (cut_threshold). A class
    without reference events among the files keeps config's, 'F' None (docs/method.md, Chosen on validation)."""
    ids = sorted(scores)
    reference, present = reference_events(ground_truth, ids)
    defaults = dict(zip(config.HARD_CLASSES, median_filter_lengths(config.HARD_CLASSES)))
    chosen = {c: {'threshold': config.THRESHOLD, 'median_filter': defaults[c], 'F': None} for c in config.HARD_CLASSES}
    if not present:
        return chosen
    for length in sorted(set(config.TUNE_MEDIAN_FILTERS)):
        filtered = filtered_scores(scores, dict.fromkeys(ids, length))
        f, _, _, thresholds, _ = sed_scores_eval.segment_based.best_fscore(
            {i: filtered[i][['onset', 'offset'] + present] for i in ids}, reference, {i: durations[i] for i in ids},
            segment_length=config.SEGMENT_LENGTH, time_decimals=config.F1_THOP_TIME_DECIMALS)
        for c in present:
            if chosen[c]['F'] is None or 100 * f[c] > chosen[c]['F']:
                threshold = finite_or_none(thresholds[c])
                chosen[c] = {'threshold': threshold, 'median_filter': length, 'F': 100 * float(f[c]),
                             **({'why': BELOW_EVERY_SCORE} if threshold is None else {})}
    return chosen


def cut_threshold(value):
    """The threshold a class is cut with: -inf (every frame active) where the chosen one is None (BELOW_EVERY_SCORE)."""
    return -math.inf if value['threshold'] is None else value['threshold']


def choose_per_fold(folds, ground_truth, durations, name=''):
    """Each fold's choice on its validation files (choose_on_validation; folds as run_folds gives them) ->
    ({'fold{k}': {class: ...}}, each test file's post-processing {stem: (thresholds (11,), median filters (11,))})."""
    chosen, post = {}, {}
    for fold, parts in tqdm(list(folds.items()), desc=f'{name} chosen on validation', unit='fold', leave=False):
        values = chosen[f'fold{fold}'] = choose_on_validation(parts['validation'], ground_truth, durations)
        post.update(dict.fromkeys(parts['test'], ([cut_threshold(values[c]) for c in config.HARD_CLASSES],
                                                  [values[c]['median_filter'] for c in config.HARD_CLASSES])))
    return chosen, post


def chosen_scoring(scoring, chosen):
    """A metrics file's scoring with what cut the scores instead of config's: THRESHOLD and MEDIAN_FILTER {fold:
    {class: value}} (MEDIAN_FILTER_BY_CLASS in it), and the choice ('chosen on validation') with its F-scores."""
    used = {key: {fold: {c: values[c][key] for c in config.HARD_CLASSES} for fold, values in chosen.items()}
            for key in ('threshold', 'median_filter')}
    return {**{k: v for k, v in scoring.items() if k != 'MEDIAN_FILTER_BY_CLASS'}, 'THRESHOLD': used['threshold'],
            'MEDIAN_FILTER': used['median_filter'], 'chosen on validation': {
                'TUNE_MEDIAN_FILTERS': sorted(set(config.TUNE_MEDIAN_FILTERS)), 'values': chosen}}
