"""The results table and the printed lines of metrics (evaluate.py, task4b.py): nothing here computes a metric."""
from pathlib import Path

import numpy as np

import config
import cost
import utils
from runs import protocol_differences, protocol_label

HEADLINE = ['ER_m', 'F1_m', 'F1_M', 'F1_thop', 'pAUC']


def format_metric(name, value):
    return f'{value:.3f}' if name in ('ER_m', 'pAUC') else f'{value:.2f}%'


def format_headline(metrics):
    """One line: `ER_m 0.487  F1_m 70.34%  F1_M 35.83%  F1_thop 42.87%  pAUC 0.712  (49 of 49 files)`."""
    values = '  '.join(f'{k} {format_metric(k, metrics[k])}' for k in HEADLINE)
    return f"{values}  ({metrics['n_files']} of {metrics['n_files_total']} files)"


def format_thresholds(metrics):
    return 'F1_thop thresholds: ' + ', '.join(
        f'{c} {"-" if t is None else f"{t:.3f}"}' for c, t in metrics['thresholds'].items())


def _mean_text(values, fmt):
    """The mean of the values that are not None, formatted; '-' when all are None."""
    values = [v for v in values if v is not None]
    return format(float(np.mean(values)), fmt) if values else '-'


VARIANTS = {'tuned': 'Thresholds and median filters chosen on validation (per fold and class)',
            'ensemble': 'Ensemble of {n} run{s} (frame scores averaged per file)',
            'ensemble_tuned': 'Ensemble of {n} run{s}, thresholds and median filters chosen on validation'}


def results_table_markdown(summary):
    """The results table in the published layout (the protocol in the row label; the rows of --tune, --ensemble and
    the published one, the cost per run), then the per-class part and the values chosen on validation. Each mean with
    its standard deviation over runs, as published; none for one run (n = 1: no spread was measured)."""
    def cell(key, mean, std, n):           # `0.487 (+/-0.009)`, `70.34% (+/-0.766)` as published
        return format_metric(key, mean) + (f' (+/-{std:.3f})' if n > 1 else '')

    def row(name, part, runs=True):        # a system: its name, runs and files, each metric's mean (+/-std)
        n = part['n_runs']
        label = f"{name}; {n} run{'s (mean +/-std)' if n != 1 else ' (n = 1)'}, " if runs else f'{name}; '
        label += f"{'/'.join(map(str, part['n_files']))} of {part['n_files_total']} files"
        return f'| {label} | ' + ' | '.join(cell(k, part['mean'][k], part['std'][k], n) for k in HEADLINE) + ' |'
    protocol = summary.get('protocol', {})
    lines = ['| System | ' + ' | '.join(HEADLINE) + ' |', '| --- |' + ' --- |' * len(HEADLINE),
             row(f'This baseline: {protocol_label(protocol)}', summary)]
    for key, name in VARIANTS.items():           # evaluate.py --tune, --ensemble: beside the protocol's row
        if key in summary:
            ensemble = len(summary[key].get('ensemble of', []))           # one system: no spread over runs
            lines.append(row(name.format(n=ensemble, s='s' * (ensemble != 1)), summary[key], runs=not ensemble))
    if protocol.get('data set') == config.PUBLISHED_PROTOCOL['data set']:
        differences = protocol_differences(protocol)
        note = 'same protocol' if not differences else 'protocol differs: ' + ', '.join(differences)
        published = [cell(k, *config.PUBLISHED[k], n=10) if k in config.PUBLISHED else '-' for k in HEADLINE]
        lines.append(f'| Published baseline (MAESTRO Real, 10 runs, 49 files; {note}) | ' + ' | '.join(published) + ' |')
    costs = cost.table_lines(summary.get('cost'))            # none without a record: no blank line either
    lines += [''] * bool(costs) + [f'- {line}' for line in costs]

    lines += ['', f'| Class | F (threshold {config.THRESHOLD:g}) | F1_thop | precision at F1_thop | recall at F1_thop '
                  '| threshold |',
              '| --- | --- | --- | --- | --- | --- |']
    for c in config.HARD_CLASSES:
        values = [_mean_text([m['class_wise'][c].get(key) for m in summary['runs']], '.2f')
                  for key in ('F', 'F1_thop', 'P_thop', 'R_thop')]
        threshold = _mean_text([m['thresholds'][c] for m in summary['runs']], '.3f')
        lines.append(f'| {c} | ' + ' | '.join(values) + f' | {threshold} |')
    for key in ('tuned', 'ensemble_tuned'):
        if key in summary:
            n = len(summary[key].get('ensemble of', []))
            lines += ['', *chosen_table(VARIANTS[key].format(n=n, s='s' * (n != 1)), summary[key]['runs'])]
    return '\n'.join(lines) + '\n'


def most_chosen(filters):
    """The median filter chosen most often, the shorter one on a tie."""
    return min(filters, key=lambda f: (-filters.count(f), f))


def chosen_table(name, runs):
    """The thresholds and median filters chosen on validation per class and fold, as Markdown lines: the mean threshold
    over the runs, the filter most of them chose, and the class's F-score with them (sed_eval, mean over the runs)."""
    chosen = [run['scoring']['chosen on validation']['values'] for run in runs]
    folds = list(chosen[0])
    lines = [f'{name}: threshold / median filter (frames) per fold, mean threshold over {len(runs)} '
             f'run{"s" * (len(runs) != 1)}, the filter most chose (kept: no reference event of the class among the '
             f"fold's validation files, config's threshold and filter kept; none: below every validation score, "
             f'every frame active; (none in n): so in n runs, the mean of the others)', '',
             '| Class | F (chosen on validation) | ' + ' | '.join(folds) + ' |',
             '| --- | --- |' + ' --- |' * len(folds)]
    for c in config.HARD_CLASSES:
        cells = []
        for fold in folds:
            values = [run[fold][c] for run in chosen if fold in run]
            common = most_chosen([v['median_filter'] for v in values])
            kept = ' (kept)' if all(v['F'] is None for v in values) else ''
            thresholds = [v['threshold'] for v in values if v['threshold'] is not None]
            none = len(values) - len(thresholds)
            mean = 'none' if not thresholds else f'{np.mean(thresholds):.3f}' + (f' (none in {none})' if none else '')
            cells.append(f'{mean} / {common}{kept}')
        f = _mean_text([run['class_wise'][c]['F'] for run in runs], '.2f')
        lines.append(f'| {c} | {f} | ' + ' | '.join(cells) + ' |')
    return lines


def write_results(json_path, summary):
    """summary -> JSON at json_path and the Markdown table beside it (same name, .md), both atomically."""
    json_path = Path(json_path)
    utils.write_json_atomic(json_path, summary)
    utils.write_text_atomic(json_path.with_suffix('.md'), results_table_markdown(summary))
