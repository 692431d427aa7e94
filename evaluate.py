"""Evaluation of the DCASE2023 Task 4B baseline: the challenge metrics of score files, the results table.

    python evaluate.py --workdir DIR                      # re-score every DIR/runs/run*/scores -> DIR/results.json, .md
    python evaluate.py --workdir DIR --scores DIR/runs/run0/scores   # one folder -> DIR/runs/run0/evaluation.json, .md
    python evaluate.py --workdir DIR --json OUT.json       # write the JSON (and OUT.md) elsewhere
    python evaluate.py --workdir DIR --timeline file       # ER_m, F1_m, F1_M with each file on its own timeline
    python evaluate.py --workdir DIR --time-decimals 6     # F1_thop with sed_scores_eval's default rounding
    python evaluate.py --workdir DIR --tune --ensemble     # rows more: thresholds and median filters chosen on
                                                           # validation; the runs' scores averaged, one system
    python evaluate.py --workdir DIR --set MEDIAN_FILTER=5 # every class's scores median-filtered over 5 frames

Scores become events by post_processing.py; score_io.py reads what they are scored against. The metrics, the median
filter and the timelines are those of docs/method.md, Evaluation. --tune and --ensemble add rows (tuning.py), each
saying in its 'scoring' how it was cut, and write no run's metrics.json. Every JSON written is strict (no NaN).
"""
import argparse
import json
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # dcase_util imports pkg_resources
import dcase_util  # noqa: E402
import sed_eval  # noqa: E402
import sed_scores_eval  # noqa: E402

import config  # noqa: E402
import cost  # noqa: E402
import experiment  # noqa: E402
import extract_features  # noqa: E402
import utils  # noqa: E402
from post_processing import clean_events, events_from_activity, post_process_events  # noqa: E402
from runs import (TRAIN_HINT, check_scores_folder, finished_files, read_protocol, read_settings,  # noqa: E402
                  scores_sha256, select_runs)
from score_io import (EXTRACT_HINT, filtered_scores, finite_or_none, read_reference_frames,  # noqa: E402
                    read_references, read_score_files, reference_events)
from tables import HEADLINE, format_headline, format_thresholds, results_table_markdown, write_results  # noqa: E402
from tuning import choose_per_fold, chosen_scoring, ensemble_folds, run_folds  # noqa: E402
from utils import DataError  # noqa: E402

# How a metrics file was scored, recorded in it: the settings, code and libraries its numbers depend on
SCORING = ('HARD_CLASSES', 'THRESHOLD', 'MEDIAN_FILTER', 'MEDIAN_FILTER_BY_CLASS', 'MERGE_GAP', 'MIN_EVENT_LENGTH',
           'SEGMENT_LENGTH', 'TIMELINE', 'F1_THOP_TIME_DECIMALS', 'PAUC_MAX_FPR')
SCORING_CODE = ('evaluate.py', 'score_io.py', 'tuning.py', 'post_processing.py')
SCORING_LIBRARIES = ('sed_eval', 'sed_scores_eval', 'dcase_util', 'scipy', 'numpy', 'pandas')
TIMELINE_NAMES = {'fold': 'one timeline per fold (test files concatenated)', 'file': 'each file on its own timeline'}


def fold_test_groups(stems, folds_dir):
    """[(name, stems)] of the timelines of the 'fold' form: each fold's test files in its list order; score
    files of no test fold each alone."""
    groups, seen = [], set()
    for fold in range(1, config.N_FOLDS + 1):
        try:
            test_ids = utils.read_fold(fold, folds_dir)['test']
        except (FileNotFoundError, ValueError) as error:
            raise DataError(f'{error}; the per-fold timeline needs the fold lists the runs were trained on') from None
        group = [utils.file_stem(i) for i in test_ids if utils.file_stem(i) in stems]
        groups.append((f'fold{fold}', group))
        seen.update(group)
    groups += [(stem, [stem]) for stem in stems if stem not in seen]
    return [(name, group) for name, group in groups if group]


def timelines(stems, scores, ground_truth, durations, timeline, workdir, folds_dir=None, thresholds=None):
    """(reference events, estimated events, evaluated length s) per timeline sed_eval sees, from scores already
    median-filtered (filtered_scores); thresholds: {stem: (11,)}, default config.THRESHOLD."""
    def events(frames, name, stem):              # filtered before, file by file: no second filter here
        return post_process_events(frames, config.HARD_CLASSES, name, None if thresholds is None else
                                   thresholds[stem], filter_lengths=1)
    if timeline == 'file':
        for stem in stems:
            reference = clean_events(dcase_util.containers.MetaDataContainer([
                {'filename': stem, 'onset': onset, 'offset': offset, 'event_label': label}
                for onset, offset, label in ground_truth[stem]]), config.HARD_CLASSES)
            estimated = events(scores[stem][config.HARD_CLASSES].to_numpy(), stem, stem)
            # the timeline is the file's duration; never shorter than an event (sed_eval would cut it off)
            length = max(durations[stem], reference.max_offset, estimated.max_offset)
            yield reference, estimated, length
        return
    if timeline != 'fold':
        raise DataError(f"timeline {timeline!r}: expected 'fold' or 'file' (config.TIMELINE, --timeline)")
    # As the challenge computed it: a fold's test files, in its list order, concatenated frame by frame (the
    # scores, and the hard labels of the soft targets), then post-processed as one recording.
    groups = fold_test_groups(stems, folds_dir or extract_features.read_manifest(workdir, check=False).get(
        'folds_dir', config.FOLDS_DIR))
    reference_frames = read_reference_frames(workdir, stems)
    for name, group in groups:
        score_frames = np.concatenate([scores[s][config.HARD_CLASSES].to_numpy() for s in group])
        hard = np.concatenate([reference_frames[s] for s in group])
        if len(hard) != len(score_frames):
            raise DataError(f'{name}: {len(score_frames)} score frames but {len(hard)} target frames for '
                            f'{group}; scores of other features? {EXTRACT_HINT}')
        reference = events_from_activity(hard, config.HARD_CLASSES, name)
        estimated = events(score_frames, name, group[0])       # a fold's test files share its thresholds
        yield reference, estimated, len(score_frames) * config.FRAME_SECONDS


def segment_metrics(timelines):
    """One sed_eval SegmentBasedMetrics (1 s segments, 11 classes) accumulating every timeline of `timelines`."""
    metrics = sed_eval.sound_event.SegmentBasedMetrics(config.HARD_CLASSES, time_resolution=config.SEGMENT_LENGTH)
    for reference, estimated, length in timelines:
        metrics.evaluate(reference_event_list=reference, estimated_event_list=estimated, evaluated_length_seconds=length)
    return metrics


def f1_micro(metrics):
    """F1_m (%): sed_eval's overall F, 0 where it is undefined (no system segment at all)."""
    return 100 * (finite_or_none(metrics.overall_f_measure()['f_measure']) or 0.0)


def scoring(timeline=None, time_decimals=None):
    """How metrics computed now are scored, as a metrics file records it: SCORING's values, the fingerprints of
    SCORING_CODE, the versions of SCORING_LIBRARIES."""
    values = {name: getattr(config, name) for name in SCORING}
    values['TIMELINE'] = timeline or config.TIMELINE
    values['F1_THOP_TIME_DECIMALS'] = config.F1_THOP_TIME_DECIMALS if time_decimals is None else time_decimals
    values['code'] = utils.code_record(SCORING_CODE)
    values['versions'] = {name: version(name) for name in SCORING_LIBRARIES}
    return json.loads(json.dumps(values))              # as a metrics file reads back: tuples are lists


def evaluate_scores(scores_dir, workdir=None, file_stems=None, timeline=None, folds_dir=None,
                    time_decimals=None, post=None):
    """Every metric for the score files of a folder -> dict (F1 in percent, ER and pAUC fractions).

    scores_dir: a folder of score files, or {stem: score DataFrame} read already (an ensemble's averaged scores).
    file_stems: evaluate only these files. folds_dir: fold lists of the 'fold' timeline (default: those of the
    features' manifest, else config.FOLDS_DIR). post: {stem: (thresholds (11,), median filters (11,) in frames)}
    (default config's for every file). timeline, time_decimals: default config.TIMELINE, F1_THOP_TIME_DECIMALS.
    """
    record = scoring(timeline, time_decimals)
    timeline, time_decimals = record['TIMELINE'], record['F1_THOP_TIME_DECIMALS']
    workdir = config.WORKDIR if workdir is None else workdir
    ground_truth, durations = read_references(workdir)
    scores = scores_dir if isinstance(scores_dir, dict) else read_score_files(scores_dir, ground_truth)
    if file_stems is not None:
        lacking = [s for s in file_stems if s not in scores]
        if lacking:
            where = 'the scores given' if isinstance(scores_dir, dict) else scores_dir
            raise DataError(f'{where}: no score files for {lacking[:3]} ({len(lacking)} files)')
        scores = {s: scores[s] for s in file_stems}
    stems = sorted(scores)
    scores = filtered_scores(scores, None if post is None else {s: post[s][1] for s in stems})
    thresholds = None if post is None else {s: post[s][0] for s in stems}

    metrics = segment_metrics(timelines(stems, scores, ground_truth, durations, timeline, workdir, folds_dir,
                                        thresholds))
    class_f = {c: metrics.class_wise_f_measure(c)['f_measure'] for c in config.HARD_CLASSES}

    # sed_scores_eval: F1_thop and pAUC. It asserts that every class has a reference event; a class without any
    # among the scored files (a partial run, a small data set) has no F or AUROC: counted as 0, as in F1_M.
    subset_gt, present = reference_events(ground_truth, stems)
    f_thop, precision, recall, thresholds, pauc = {}, {}, {}, {}, {}
    if present:
        subset = ({s: scores[s][['onset', 'offset'] + present] for s in stems}, subset_gt,
                  {s: durations[s] for s in stems})
        f_thop, precision, recall, thresholds, _ = sed_scores_eval.segment_based.best_fscore(
            *subset, segment_length=config.SEGMENT_LENGTH, time_decimals=time_decimals)
        pauc, _ = sed_scores_eval.segment_based.auroc(*subset, segment_length=config.SEGMENT_LENGTH,
                                                      max_fpr=config.PAUC_MAX_FPR)

    def defined(values, key, scale=1):   # None where undefined or absent
        value = finite_or_none(values.get(key, float('nan')))
        return None if value is None else scale * value

    def macro(values):                   # mean over the 11 classes, an undefined value counted as 0
        return float(np.mean([defined(values, c) or 0.0 for c in config.HARD_CLASSES]))

    n_total = len(durations)
    report = f'Segment-based metrics over {len(stems)} of {n_total} files, {TIMELINE_NAMES[timeline]}\n' + str(metrics)
    if finite_or_none(metrics.overall_f_measure()['f_measure']) is None:
        report += '  No overall F (no system segment in any file): F1_m counts it as 0\n'
    undefined = [c for c in config.HARD_CLASSES if defined(class_f, c) is None]
    if undefined:   # sed_eval's class-wise average (nanmean) skips them; F1_M counts them as 0
        report += (f'  No F for {undefined} (no reference and no system segment): F1_M counts them as 0, '
                   f'F1_M = {100 * macro(class_f):.2f}% (the class-wise average above leaves them out)\n')

    class_wise = {c: {'F': defined(class_f, c, 100), 'ER': defined(metrics.class_wise_error_rate(c), 'error_rate'),
                      'F1_thop': defined(f_thop, c, 100), 'P_thop': defined(precision, c, 100),
                      'R_thop': defined(recall, c, 100), 'threshold_thop': defined(thresholds, c),
                      'pAUC': defined(pauc, c)}
                  for c in config.HARD_CLASSES}
    return {'ER_m': float(metrics.overall_error_rate()['error_rate']), 'F1_m': f1_micro(metrics),
            'F1_M': 100 * macro(class_f), 'F1_thop': 100 * macro(f_thop), 'pAUC': macro(pauc),
            'class_wise': class_wise, 'thresholds': {c: v['threshold_thop'] for c, v in class_wise.items()},
            'n_files': len(stems), 'n_files_total': n_total, 'files': stems, 'scoring': record, 'report': report}


def summarize_runs(run_metrics):
    """Per-run metric dicts -> {'n_runs', 'mean', 'std', 'runs', 'cost', ...}: the headline metrics' mean and
    standard deviation over runs (ddof=0: nothing says which the published table used), every run but its long
    report, and the runs' cost (cost.py; None for score files of no run)."""
    if not run_metrics:
        raise DataError(f'no runs to summarise; {TRAIN_HINT}')
    values = {key: np.array([m[key] for m in run_metrics], dtype=float) for key in HEADLINE}
    return {'n_runs': len(run_metrics), 'mean': {key: float(v.mean()) for key, v in values.items()},
            'std': {key: float(v.std(ddof=0)) for key, v in values.items()},
            'n_files': sorted({m['n_files'] for m in run_metrics}),
            'n_files_total': max(m['n_files_total'] for m in run_metrics),
            'runs': [{k: v for k, v in m.items() if k != 'report'} for m in run_metrics],
            'cost': cost.over_runs([m.get('cost') for m in run_metrics])}


def score_run(workdir, run_dir):
    """A run's metrics over the files of its finished folds, scored now, with its seed, record id, the digest of
    the score files scored (runs.scores_sha256) and cost (cost.run_cost)."""
    stems = finished_files(run_dir)
    digest = scores_sha256(run_dir, stems)
    metrics = evaluate_scores(Path(run_dir) / 'scores', workdir, file_stems=stems)
    settings = read_settings(run_dir)
    return {**metrics, 'seed': settings['seed'], 'record_id': settings['record_id'], 'scores_sha256': digest,
            'cost': cost.run_cost(run_dir)}


def run_metrics(workdir, run_dir):
    """A run's metrics.json while it holds what scoring the run now would give (the same scoring, record and
    finished score files), else the run scored again, in memory: what compare.py and plot_results.py show never
    mixes scorings or stale files."""
    path = Path(run_dir) / 'metrics.json'
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if (saved.get('scoring') == scoring() and saved.get('record_id') == read_settings(run_dir)['record_id']
            and saved.get('scores_sha256') == scores_sha256(run_dir, finished_files(run_dir))):
        return {**saved, 'cost': cost.run_cost(run_dir)}       # as its folds' files say now
    return score_run(workdir, run_dir)


def evaluate_runs(workdir, run_dirs, json_path=None, verbose=False, variants=None):
    """Re-score each run folder's finished folds -> the summary (summarize_runs) with its 'protocol', then the rows
    of variants (evaluate_variants); its table printed and written to json_path and the .md beside it (default
    <workdir>/results.json, and then each run's metrics.json). verbose: print each run's sed_eval report."""
    run_metrics = []
    for run_dir in run_dirs:
        metrics = score_run(workdir, run_dir)
        if json_path is None:
            utils.write_json_atomic(Path(run_dir) / 'metrics.json', metrics)
        if verbose:
            print(f'== {run_dir}', metrics['report'], format_thresholds(metrics), sep='\n')
        print(f'{Path(run_dir).name}: {format_headline(metrics)}')
        run_metrics.append(metrics)
    summary = summarize_runs(run_metrics)
    summary['protocol'] = read_protocol(workdir, run_dirs, run_metrics[0]['scoring'])
    summary.update(variants or {})
    print(results_table_markdown(summary))
    write_results(json_path or Path(workdir) / 'results.json', summary)
    return summary


def tuned_metrics(workdir, folds, name=''):
    """The metrics of the test scores of folds (as run_folds gives them) cut with each fold's post-processing
    chosen on its validation files (tuning.choose_per_fold), recorded in the scoring."""
    ground_truth, durations = read_references(workdir)
    chosen, post = choose_per_fold(folds, ground_truth, durations, name)
    test = {stem: df for parts in folds.values() for stem, df in parts['test'].items()}
    metrics = evaluate_scores(test, workdir, post=post)
    return {**metrics, 'scoring': chosen_scoring(metrics['scoring'], chosen)}


def evaluate_variants(workdir, run_dirs, tune=False, ensemble=False):
    """The rows beside the protocol's, those asked for, written nowhere -> {'tuned': each run with post-processing
    chosen on validation, 'ensemble': the runs' averaged scores as one system, 'ensemble_tuned': both}."""
    ground_truth, _ = read_references(workdir)
    folds_of_runs = [run_folds(workdir, d, ground_truth, validation=tune) for d in run_dirs]
    names = [Path(d).name for d in run_dirs]
    variants = {}
    if tune:
        runs = []
        for name, run_dir, folds in zip(names, run_dirs, folds_of_runs):
            runs.append({**tuned_metrics(workdir, folds, name), 'seed': read_settings(run_dir)['seed']})
            print(f'{name}, chosen on validation: {format_headline(runs[-1])}')
        variants['tuned'] = summarize_runs(runs)
    if ensemble:
        folds = ensemble_folds(folds_of_runs)
        test = {stem: df for parts in folds.values() for stem, df in parts['test'].items()}
        rows = {'ensemble': evaluate_scores(test, workdir),
                **({'ensemble_tuned': tuned_metrics(workdir, folds, 'ensemble')} if tune else {})}
        for key, metrics in rows.items():
            metrics['scoring'] = {**metrics['scoring'], 'ensemble of': names}
            print(f'ensemble of {len(names)} runs{", chosen on validation" * (key == "ensemble_tuned")}: '
                  f'{format_headline(metrics)}')
            variants[key] = {**summarize_runs([metrics]), 'ensemble of': names}
    return variants


@experiment.command(workdir=True, flags={'--timeline': 'TIMELINE', '--time-decimals': 'F1_THOP_TIME_DECIMALS'})
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR,
                        help='holds metadata/ and runs/ (default: the repository)')
    parser.add_argument('--scores', type=Path, default=None,
                        help='evaluate this folder of score files alone (default: every <workdir>/runs/run*/scores)')
    parser.add_argument('--json', type=Path, default=None,
                        help='write the metrics there and the table beside it (.md), nothing else (default: '
                             '<workdir>/results.json and each run\'s metrics.json, or with --scores '
                             '<scores>/../evaluation.json)')
    parser.add_argument('--runs', type=int, nargs='+', metavar='R',
                        help='combine these runs (default: every run; runs of other settings are refused)')
    parser.add_argument('--timeline', choices=['fold', 'file'], default=config.TIMELINE,
                        help="'fold': each fold's test files on one timeline, as the challenge; 'file': each file "
                             'on its own (--set TIMELINE; default: %(default)s)')
    parser.add_argument('--time-decimals', type=int, default=config.F1_THOP_TIME_DECIMALS,
                        help="F1_thop's best_fscore(time_decimals=...): 30 as the challenge called it, 6 the "
                             'library default (--set F1_THOP_TIME_DECIMALS; default: %(default)s)')
    parser.add_argument('--tune', action='store_true',
                        help='a row more: per fold and class, the threshold and median filter (of '
                             'TUNE_MEDIAN_FILTERS) with the best segment F-score on the fold\'s validation files, '
                             'applied to its test files')
    parser.add_argument('--ensemble', action='store_true',
                        help='a row more: the frame scores of the runs averaged per file, scored as one system '
                             '(with --tune: also chosen on validation)')
    args = experiment.parse_args(parser, argv)
    if args.scores is not None and (args.tune or args.ensemble):
        parser.error('--tune and --ensemble score the runs of --workdir (their folds and validation scores), not '
                     'a folder of --scores')
    if args.scores is not None:
        check_scores_folder(args.workdir, args.scores)
        metrics = evaluate_scores(args.scores, args.workdir)
        print(metrics['report'], format_thresholds(metrics), format_headline(metrics), sep='\n')
        summary = summarize_runs([metrics])
        summary['protocol'] = read_protocol(args.workdir, [args.scores.resolve().parent], metrics['scoring'])
        json_path = args.json or args.scores.resolve().parent / 'evaluation.json'
        print(results_table_markdown(summary))
        write_results(json_path, summary)
        written = []
    else:
        run_dirs, _ = select_runs(args.workdir, args.runs)
        variants = evaluate_variants(args.workdir, run_dirs, args.tune, args.ensemble)   # refused before any write
        evaluate_runs(args.workdir, run_dirs, args.json, verbose=True, variants=variants)
        json_path = args.json or args.workdir / 'results.json'
        written = [] if args.json else [f'the metrics.json of {len(run_dirs)} run{"s" * (len(run_dirs) > 1)}']
    print(f'wrote {", ".join([str(json_path), str(Path(json_path).with_suffix(".md")), *written])}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
