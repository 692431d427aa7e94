"""Compare two experiments: which settings differ, and whether each metric's change is more than chance.

    python compare.py work/bce work/mse                                   # every run of two workdirs
    python compare.py work/demo work/demo --runs-a 0 1 2 --runs-b 3 4 5   # two run selections of one workdir
    python compare.py work/bce work/mse --out results/bce_vs_mse --seed 0 --bootstrap 1000

A and B: workdirs of scored runs, each side's runs of one record (settings.json but the seed). Per metric and class:
means of A and B, B - A, its 95% interval and p, by Welch's t-test over runs (3 or more a side) or else a paired
bootstrap over files; and each side's cost per run. The method: docs/experiments.md (Comparing two experiments).

Outputs: the tables on screen, OUT/comparison.md, OUT/comparison.json and OUT/per_class.png (default OUT: ./comparison).
"""
import argparse
import difflib
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

import numpy as np
from scipy import stats

import matplotlib
matplotlib.use('Agg')                        # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # dcase_util imports pkg_resources
import sed_eval  # noqa: E402
from sed_scores_eval.base_modules.bootstrap import confidence_interval  # noqa: E402
from sed_scores_eval.segment_based import auroc, best_fscore  # noqa: E402
from sed_scores_eval.segment_based.intermediate_statistics import intermediate_statistics_deltas  # noqa: E402

import config  # noqa: E402
import cost  # noqa: E402
import experiment  # noqa: E402
import evaluate  # noqa: E402
import score_io  # noqa: E402
import utils  # noqa: E402
from runs import CODE_COPY, complete, select_runs  # noqa: E402
from tables import HEADLINE, format_metric  # noqa: E402
from utils import DataError  # noqa: E402

MIN_RUNS = 3                 # fewer runs on a side: too few samples for a test over runs; the files are the samples
CONFIDENCE = 0.95
JOBS = os.cpu_count() or 1   # processes of the bootstrap
BOOTSTRAP = 1000             # resamples of the paired bootstrap (49 demo files, 1 run a side: 40 s of CPU time)
CLASS_KINDS = {'F': 'F (threshold {THRESHOLD:g})', 'F1_thop': 'F1_thop'}   # titles, of result['scoring']
SCORING = ('HARD_CLASSES', 'SEGMENT_LENGTH', 'PAUC_MAX_FPR')   # A and B must agree: what their metrics are over
A_COLOUR, B_COLOUR, MARK_COLOUR = '#0072B2', '#E69F00', '#D55E00'   # Okabe-Ito blue, orange, vermillion


def load_side(workdir, runs):
    """A workdir's runs of one record, chosen and scored inside its own experiment -> {'workdir', 'run_dirs',
    'record', 'metrics' (each run's, scored as evaluate.py scores now: evaluate.run_metrics), 'scoring'}."""
    with experiment.of_workdir(workdir):
        run_dirs, record = select_runs(workdir, runs)
        return {'workdir': Path(workdir), 'run_dirs': [Path(d) for d in run_dirs], 'record': record,
                'metrics': [evaluate.run_metrics(workdir, d) for d in run_dirs], 'scoring': evaluate.scoring()}


def run_value(metrics, key):
    """A headline metric, or (kind, class) of the class-wise ones (None, undefined, counts 0 as in the macros)."""
    if isinstance(key, str):
        return metrics[key]
    kind, label = key
    return metrics['class_wise'][label][kind] or 0.0


def welch_test(a, b):
    """Per-run values of A and B -> Welch's t-test: difference of means, its t interval, two-sided p."""
    # equal values reached by other sums (2/3 from 2 of 3 or 4 of 6 segments) differ in the last bits: a spread of
    # 1e-14 is no spread, and scipy would take it for a real one
    a, b = np.round(np.asarray(a, dtype=float), 9), np.round(np.asarray(b, dtype=float), 9)
    difference = float(b.mean() - a.mean())
    if a.var() == 0 and b.var() == 0:      # no spread (a workdir against itself): t is 0 / 0, the answer is not
        return {'difference': difference, 'low': difference, 'high': difference, 'p': float(difference == 0)}
    with warnings.catch_warnings():      # one side without spread (every run at 100%) is a valid Welch case
        warnings.filterwarnings('ignore', message='Precision loss occurred in moment calculation')
        result = stats.ttest_ind(b, a, equal_var=False)
    interval = result.confidence_interval(CONFIDENCE)
    return {'difference': difference, 'low': float(interval.low), 'high': float(interval.high),
            'p': float(result.pvalue)}


def bootstrap_test(observed, differences):
    """Observed B - A and its resampled values -> percentile interval and two-sided bootstrap p."""
    differences = np.asarray(differences, dtype=float)
    _, low, high = confidence_interval(differences, confidence=CONFIDENCE)
    # (k + 1) / (n + 1): a finite bootstrap never shows p = 0, only that p is below its resolution
    k = min(np.sum(differences <= 0), np.sum(differences >= 0))
    p = min(1.0, 2 * (k + 1) / (len(differences) + 1))
    return {'difference': float(observed), 'low': low, 'high': high, 'p': float(p)}


def file_statistics(workdir, run_dir, stems, time_decimals):
    """One run's per-file building blocks, in the experiment config holds (its scores median-filtered as evaluate.py
    filters them): sed_eval's segment counts of each file on its own timeline, and sed_scores_eval's per-file
    deltas of F1_thop (the run's time_decimals) and of pAUC (as evaluate.py calls auroc: the library's default
    rounding) for the classes with reference events."""
    ground_truth, durations = score_io.read_references(workdir)
    scores = score_io.filtered_scores(score_io.read_score_files(Path(run_dir) / 'scores', ground_truth))
    counts = [evaluate.segment_metrics([timeline]) for timeline in
              evaluate.timelines(stems, scores, ground_truth, durations, 'file', workdir)]
    reference, present = score_io.reference_events(ground_truth, stems)
    scores = {stem: scores[stem][['onset', 'offset', *present]] for stem in stems}
    lengths = {stem: durations[stem] for stem in stems}
    common = dict(segment_length=config.SEGMENT_LENGTH)
    deltas = {'thop': intermediate_statistics_deltas(scores, reference, lengths, time_decimals=time_decimals, **common),
              'pauc': intermediate_statistics_deltas(scores, reference, lengths, **common)} if present else {}
    return {'overall': [m.overall for m in counts], 'class_wise': [m.class_wise for m in counts], 'stems': stems,
            'classes': list(config.HARD_CLASSES), 'present': present, 'segment_length': config.SEGMENT_LENGTH,
            'max_fpr': config.PAUC_MAX_FPR, **deltas}


def _sum_counts(count_dicts, weights):
    return {key: sum(w * d[key] for d, w in zip(count_dicts, weights) if w) for key in count_dicts[0]}


def _weighted_deltas(deltas, stems, weights, classes):
    """Deltas of the drawn files, a file drawn w times weighted w: the library sums deltas over files, so this
    is the same as w copies of the file."""
    return {stem: {c: (deltas[stem][c][0], {k: w * v for k, v in deltas[stem][c][1].items()}) for c in classes}
            for stem, w in zip(stems, weights) if w}


def resampled_metrics(run, weights):
    """Every metric of one run on a draw of its files (weights: how often each file was drawn, (files,))."""
    # sed_eval's SegmentBasedMetrics only adds each evaluated file's counts: summed counts are its state after
    # evaluating the drawn files one by one (49 files x 1000 draws of that: minutes), its formulas unchanged.
    classes = run['classes']
    metrics = sed_eval.sound_event.SegmentBasedMetrics(classes, time_resolution=run['segment_length'])
    metrics.overall = _sum_counts(run['overall'], weights)
    metrics.class_wise = {c: _sum_counts([cw[c] for cw in run['class_wise']], weights) for c in classes}
    class_f = {c: np.nan_to_num(metrics.class_wise_f_measure(c)['f_measure']) for c in classes}
    values = {'ER_m': metrics.overall_error_rate()['error_rate'],
              'F1_m': evaluate.f1_micro(metrics),
              'F1_M': 100 * np.mean(list(class_f.values()))}
    values.update({('F', c): 100 * class_f[c] for c in classes})
    # sed_scores_eval asserts a reference event per class: a class absent from the draw counts 0, as in evaluate.py
    present = [c for c in run['present'] if metrics.class_wise[c]['Nref'] > 0]
    f_thop, pauc = {}, {}
    if present:
        f_thop = best_fscore(None, None, None, segment_length=run['segment_length'],
                             deltas=_weighted_deltas(run['thop'], run['stems'], weights, present))[0]
        pauc = auroc(None, None, None, segment_length=run['segment_length'], max_fpr=run['max_fpr'],
                     deltas=_weighted_deltas(run['pauc'], run['stems'], weights, present))[0]
    values.update({('F1_thop', c): 100 * f_thop.get(c, 0.0) for c in classes})
    values['F1_thop'] = np.mean([values['F1_thop', c] for c in classes])
    values['pAUC'] = np.mean([pauc.get(c, 0.0) for c in classes])
    return values


def common_files(side_a, side_b):
    """The files every run of A and B scored; a DataError when they differ (the paired test pairs files)."""
    files = {(name, d.name): set(m['files']) for name, side in (('A', side_a), ('B', side_b))
             for d, m in zip(side['run_dirs'], side['metrics'])}
    (first, stems), *others = files.items()
    for other, other_stems in others:
        if other_stems != stems:
            only = sorted(stems - other_stems)[:2], sorted(other_stems - stems)[:2]
            raise DataError(f'{first[0]} {first[1]} and {other[0]} {other[1]} scored different files (only in the '
                            f'first: {only[0]}..., only in the second: {only[1]}...): the paired bootstrap over files '
                            f'needs the same files; their folds or file sets differ')
    return sorted(stems)


def _side_values(sides, keys, draws):
    """(draws, 2 sides, keys): per draw (weights of the files) and side, the mean over the side's runs of each
    metric on the drawn files."""
    return np.array([[np.mean([[values[k] for k in keys] for values in (resampled_metrics(run, w) for run in runs)],
                              axis=0) for runs in sides] for w in draws]).reshape(len(draws), 2, len(keys))


def paired_bootstrap(side_a, side_b, stems, keys, n_resamples, seed):
    """{key: test} of the paired bootstrap over the files `stems`, with each side's observed values (mean over
    its runs, on all the files)."""
    sides = []
    for side in (side_a, side_b):
        with experiment.of_workdir(side['workdir']):          # each side post-processed in its own experiment
            sides.append([file_statistics(side['workdir'], d, stems, m['scoring']['F1_THOP_TIME_DECIMALS'])
                          for d, m in zip(side['run_dirs'], side['metrics'])])
    observed = _side_values(sides, keys, [np.ones(len(stems), dtype=int)])[0]
    # sed_scores_eval's bootstrap_from_deltas leaves a fifth of the files out at a time (no draws with replacement),
    # so only its confidence_interval is used; the draws are counts per file, (resamples, files)
    draws = np.random.default_rng(seed).multinomial(len(stems), np.full(len(stems), 1 / len(stems)), n_resamples)
    # the draws are independent: one process per core (the same numbers with any number of processes)
    chunks = np.array_split(draws, min(n_resamples, 4 * JOBS))
    with ProcessPoolExecutor(JOBS) as pool:
        values = np.concatenate(list(pool.map(_side_values, repeat(sides), repeat(keys), chunks)))
    differences = values[:, 1] - values[:, 0]                                # (resamples, keys): B - A
    return {k: {'mean_a': float(observed[0, i]), 'mean_b': float(observed[1, i]),
                **bootstrap_test(observed[1, i] - observed[0, i], differences[:, i])} for i, k in enumerate(keys)}


def code_differences(side_a, side_b, differences):
    """{file name: unified diff} of the files whose code fingerprint differs between the records of A and B, from
    the copies of the code in the first run of each side."""
    diffs = {}
    for name in [key.split('.code.', 1)[1] for key, _, _ in differences if '.code.' in key]:
        paths = [side['run_dirs'][0] / CODE_COPY / name for side in (side_a, side_b)]
        texts = [path.read_text().splitlines(keepends=True) if path.is_file() else None for path in paths]
        diffs[name] = '' if None in texts else ''.join(difflib.unified_diff(
            texts[0], texts[1], f"A/{side_a['run_dirs'][0].name}/{name}", f"B/{side_b['run_dirs'][0].name}/{name}"))
    return diffs


def differences(side_a, side_b):
    """What differs between A and B -> {'settings_differ': [{setting, a, b}], 'code_differs': {file: diff}}; sides
    whose metrics are over other classes or segments are refused, naming the setting."""
    for name in SCORING:
        if side_a['scoring'][name] != side_b['scoring'][name]:
            raise DataError(f"{side_a['workdir']} and {side_b['workdir']} score over other {name} "
                            f"({side_a['scoring'][name]!r} vs {side_b['scoring'][name]!r}): their metrics do not "
                            f'compare; give both experiments the same {name}')
    differ = utils.differences(complete(side_a["record"]), complete(side_b["record"]))
    return {'a': {'workdir': str(side_a['workdir']), 'runs': [d.name for d in side_a['run_dirs']]},
            'b': {'workdir': str(side_b['workdir']), 'runs': [d.name for d in side_b['run_dirs']]},
            'settings_differ': [{'setting': k, 'a': a, 'b': b} for k, a, b in differ],
            'code_differs': code_differences(side_a, side_b, differ)}


def compare(side_a, side_b, n_resamples=BOOTSTRAP, seed=0):
    """The comparison: what differs (differences), the method, and a test per headline metric and per class and
    kind; a class with reference events in no compared file on either side is undefined (None), as in evaluate.py."""
    classes = side_a['scoring']['HARD_CLASSES']
    result = differences(side_a, side_b)
    undefined = [c for c in classes if all(m['class_wise'][c]['F1_thop'] is None
                                           for side in (side_a, side_b) for m in side['metrics'])]
    keys = HEADLINE + [(kind, c) for kind in CLASS_KINDS for c in classes if c not in undefined]
    n_a, n_b = len(side_a['run_dirs']), len(side_b['run_dirs'])
    if min(n_a, n_b) >= MIN_RUNS:
        method, note = f'Welch t-test over runs (n={n_a} vs {n_b})', ''
        tests = {}
        for k in keys:
            a, b = ([run_value(m, k) for m in side['metrics']] for side in (side_a, side_b))
            tests[k] = {'mean_a': float(np.mean(a)), 'mean_b': float(np.mean(b)), **welch_test(a, b)}
    else:
        stems = common_files(side_a, side_b)
        method = f'paired bootstrap over {len(stems)} files, {n_resamples} resamples (seed {seed})'
        note = (f'fewer than {MIN_RUNS} runs on a side (A {n_a}, B {n_b}): no test over runs; {method} instead, '
                f'ER_m, F1_m and F1_M with each file on its own timeline')
        tests = paired_bootstrap(side_a, side_b, stems, keys, n_resamples, seed)
    for test in tests.values():
        test['method'] = method
        test['marked'] = not test['low'] <= 0 <= test['high']
    if undefined:
        note += ('; ' if note else '') + (f'no reference events of {", ".join(undefined)} in the compared files: '
                                          f'undefined, counted 0 in the macro averages as evaluate.py does')
    shown = {k: v for k, v in side_a['scoring'].items() if k not in ('code', 'versions', 'HARD_CLASSES')}
    return {**result, 'scoring': shown, 'method': method, 'note': note, 'metrics': {k: tests[k] for k in HEADLINE},
            'cost': {side: cost.over_runs([m.get('cost') for m in s['metrics']])
                     for side, s in (('a', side_a), ('b', side_b))},
            'per_class': {c: {kind: tests.get((kind, c)) for kind in CLASS_KINDS} for c in classes}}


def _signed(key, value):
    return f'{value:+.3f}' if key in ('ER_m', 'pAUC') else f'{value:+.2f}'


def differences_markdown(result):
    """The sides, the settings and the code that differ, as Markdown (printed before the tests run)."""
    a, b = result['a'], result['b']
    lines = [f"A: {a['workdir']} ({', '.join(a['runs'])}); B: {b['workdir']} ({', '.join(b['runs'])})", '',
             'Settings that differ (A vs B):']
    lines += ([f"- {d['setting']}: {d['a']!r} vs {d['b']!r}" for d in result['settings_differ']]
              or ['- no setting differs'])
    for name, diff in result['code_differs'].items():
        lines += ['', f'Code of {name} that differs (A vs B, from the runs\' copies in runs/run*/{CODE_COPY}/):', '',
                  '```diff', *(diff.splitlines() or ['(no copy of it in one of the runs)']), '```']
    return '\n'.join(lines) + '\n'


def cost_markdown(a, b):
    """The time and energy per run of A and B and their difference, as Markdown lines (none without a record). An
    energy per run only where every fold has one (cost.energy_text says what the tracked folds spent otherwise,
    and there is no difference); the PUE where CodeCarbon's scaled a side."""
    if not a or not b:
        return []

    def change(new, old, unit):
        if new is None or old is None:
            return '-'
        text = f'{new - old:+.3g} kWh' if unit == 'kWh' else f'{new - old:+.1f} s'
        return text + (f' ({100 * (new - old) / old:+.0f}%)' if old else '')
    lines = ['', 'Cost per run (means over runs, as the folds recorded it when they trained):', '',
             '| cost | A | B | B - A |', '| --- | --- | --- | --- |']
    for step, name in (('training', 'training'), ('test', 'test inference')):
        old, new = a[f'{step}_per_run'], b[f'{step}_per_run']
        lines += [f"| {name} energy | {cost.energy_text(a, step)} | {cost.energy_text(b, step)} | "
                  f"{change(new['kWh'], old['kWh'], 'kWh')} |",
                  f"| {name} time | {cost.format_seconds(old['seconds'])} | {cost.format_seconds(new['seconds'])} | "
                  f"{change(new['seconds'], old['seconds'], 's')} |"]
    kinds = [side['training'].get('kind') or 'not tracked' for side in (a, b)]
    devices = [', '.join(side['devices']) or 'not recorded' for side in (a, b)]
    lines += [f'| energy | {kinds[0]} | {kinds[1]} | |', f'| device | {devices[0]} | {devices[1]} | |']
    pues = [cost.pue_value(side['training'].get('settings')) for side in (a, b)]
    if pues != ['1', '1']:
        lines += [f'| PUE (CodeCarbon) | {pues[0]} | {pues[1]} | |']
    partly = [name for name, side in (('A', a), ('B', b)) if any(
        side[step]['kWh'] is not None and side[f'{step}_per_run']['kWh'] is None for step in ('training', 'test'))]
    if partly:
        lines += ['', f"Some folds of {' and '.join(partly)} recorded no energy (TRACK_ENERGY off, or CodeCarbon "
                      'failed): the energy shown is that of the tracked folds, with no figure per run to compare.']
    if kinds[0] != kinds[1]:
        lines += ['', f'The energy of A is {kinds[0]}, of B {kinds[1]}: their difference is no measurement.']
    if pues[0] != pues[1]:
        lines += ['', f"CodeCarbon's PUE scaled the energy of A by {pues[0]}, of B by {pues[1]}: their difference is "
                      "partly the PUE's."]
    if devices[0] != devices[1]:
        lines += ['', 'A and B trained on other devices: their time and energy differ by the machines too.']
    return lines


def comparison_markdown(result):
    """What differs, the headline table and the per-class table, as Markdown."""
    lines = [differences_markdown(result).rstrip('\n'), '', 'Both scored with ' + ', '.join(
        f'{k} {v}' for k, v in result['scoring'].items()) + '.']
    if result['note']:
        lines += ['', f"Note: {result['note']}."]
    lines += ['', '| metric | A | B | B - A | 95% interval | p | method |', '| --- |' + ' --- |' * 6]
    for k, t in result['metrics'].items():
        lines.append(f"| {k} | {format_metric(k, t['mean_a'])} | {format_metric(k, t['mean_b'])} | "
                     f"{_signed(k, t['difference'])} | [{_signed(k, t['low'])}, {_signed(k, t['high'])}] | "
                     f"{t['p']:.3g} | {t['method']} |")
    lines += cost_markdown(result['cost']['a'], result['cost']['b'])
    lines += ['', '| class | F A | F B | F B - A | F1_thop A | F1_thop B | F1_thop B - A |',
              '| --- | --- | --- | --- | --- | --- | --- |']
    for c, kinds in result['per_class'].items():
        cells = ['- | - | undefined' if t is None else f"{t['mean_a']:.2f} | {t['mean_b']:.2f} | "
                 f"{t['difference']:+.2f}{' *' if t['marked'] else ''}" for t in kinds.values()]
        lines.append(f'| {c} | ' + ' | '.join(cells) + ' |')
    lines += ['', f"Per class: F in percent, means over runs; * the 95% interval of the change excludes 0 "
                  f"({result['method']})."]
    return '\n'.join(lines) + '\n'


def plot_per_class(result, path):
    """Horizontal bars of A and B per class, F at 0.5 and F1_thop side by side; marked changes in vermillion."""
    classes = [c for c, kinds in result['per_class'].items() if None not in kinds.values()]
    y = np.arange(len(classes))[::-1]
    fig, axes = plt.subplots(1, len(CLASS_KINDS), figsize=(11, 0.45 * len(classes) + 1.6), sharey=True)
    for ax, (kind, title) in zip(axes, CLASS_KINDS.items()):
        tests = [result['per_class'][c][kind] for c in classes]
        ax.barh(y + 0.2, [t['mean_a'] for t in tests], height=0.4, color=A_COLOUR, label='A', zorder=2)
        ax.barh(y - 0.2, [t['mean_b'] for t in tests], height=0.4, color=B_COLOUR, label='B', zorder=2)
        for yk, t in zip(y, tests):
            if t['marked']:
                ax.text(max(t['mean_a'], t['mean_b']) + 1, yk, f"{t['difference']:+.1f}", va='center',
                        color=MARK_COLOUR, fontweight='bold', fontsize=8)
        ax.set(title=f"{title.format(**result['scoring'])}, percent", xlim=(0, 110))
        ax.grid(axis='x', color='#eeeeee', zorder=0)
    axes[0].set_yticks(y, classes)
    for tick, c in zip(axes[0].get_yticklabels(), classes):
        if any(result['per_class'][c][kind]['marked'] for kind in CLASS_KINDS):
            tick.set_color(MARK_COLOUR)
            tick.set_fontweight('bold')
    axes[0].legend(loc='lower right')
    fig.suptitle(f"A: {result['a']['workdir']}  vs  B: {result['b']['workdir']}; vermillion: the change's 95% "
                 f"interval excludes 0\n{result['method']}", fontsize=9)
    fig.tight_layout()
    utils.atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=120))
    plt.close(fig)


@experiment.command
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('a', type=Path, help='workdir of experiment A')
    parser.add_argument('b', type=Path, help='workdir of experiment B (may be A, with other --runs-b)')
    parser.add_argument('--runs-a', type=int, nargs='+', metavar='R', help="A's runs (default: every run)")
    parser.add_argument('--runs-b', type=int, nargs='+', metavar='R', help="B's runs (default: every run)")
    parser.add_argument('--out', type=Path, default=Path('comparison'),
                        help='folder of comparison.md, comparison.json, per_class.png (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the bootstrap draws (default: %(default)s)')
    parser.add_argument('--bootstrap', type=int, default=BOOTSTRAP,
                        help='resamples of the paired bootstrap (default: %(default)s)')
    args = experiment.parse_args(parser, argv)
    if args.bootstrap < 1:
        raise DataError(f'--bootstrap {args.bootstrap}: expected at least 1 resample')
    side_a, side_b = load_side(args.a, args.runs_a), load_side(args.b, args.runs_b)
    first = differences_markdown(differences(side_a, side_b))
    print(first, end='', flush=True)                  # before the tests, which may take minutes
    result = compare(side_a, side_b, args.bootstrap, args.seed)
    markdown = comparison_markdown(result)
    print(markdown[len(first):])
    utils.write_text_atomic(args.out / 'comparison.md', markdown)
    utils.write_json_atomic(args.out / 'comparison.json', result)
    plot_per_class(result, args.out / 'per_class.png')
    print(f"wrote {args.out / 'comparison.md'}, comparison.json and per_class.png")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
