"""Pictures of what the detector does: one detection picture per file, one per-class picture per workdir.

    python plot_results.py --workdir WD                      # the first run's scores -> WD/pictures/<stem>.png (every
                                                             # file) and WD/pictures/per_class.png
    python plot_results.py --workdir WD --scores WD/runs/run2/scores --files cafe_restaurant_07 city_center_02
    python plot_results.py --workdir WD --all-classes        # 17 rows; the 6 unscored classes show soft labels only
    python plot_results.py --workdir WD --data-root DATA     # soft labels from DATA's annotation files
    python plot_results.py --workdir WD --only per-class --out docs
    python plot_results.py --workdir WD --only per-class --tune   # and F with post-processing chosen on validation
    python plot_results.py --infer-out OUT                   # infer.py's OUT/scores, no reference -> OUT/pictures/

Detection picture (one per file): per class, the soft labels, the hard reference, the frame scores and the detected
events; its title the file's own F1 and ER. Per-class picture (a workdir): per hard class, F at config.THRESHOLD and
F1_thop over the runs, beside its seconds of reference. What each mark means: docs/method.md (Pictures).
"""
import argparse
import sys
from pathlib import Path

import matplotlib
matplotlib.use('Agg')                         # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from tqdm import tqdm  # noqa: E402

import config  # noqa: E402
import experiment  # noqa: E402
import evaluate  # noqa: E402  (first: it silences dcase_util's pkg_resources warning, which sed_eval imports)
import extract_features  # noqa: E402
import post_processing  # noqa: E402
import score_io  # noqa: E402
import tables  # noqa: E402
import utils  # noqa: E402
from runs import check_scores_folder, select_runs  # noqa: E402
from utils import DataError  # noqa: E402

PICTURES_DIR = 'pictures'                     # default output folder, in the workdir or infer.py's output
DPI = 100
WIDTH = 14.0                                  # inches
ROW_HEIGHT = 0.42                             # inches per class row (detection) or per class (per-class picture)
SCORE_COLOUR = '#0072B2'                      # Okabe-Ito blue
EVENT_COLOUR = '#D55E00'                      # Okabe-Ito vermillion
THOP_COLOUR = '#E69F00'                       # Okabe-Ito orange
TUNED_COLOUR = '#009E73'                      # Okabe-Ito bluish green
SOFT_CMAP = LinearSegmentedColormap.from_list('soft', ['#ffffff', '#5a5a5a'])   # 0 white .. 1 dark grey
# a row of the detection picture, bottom to top (row units): event bars, gap, soft band with the score curve
BAR_BOTTOM, BAR_TOP, BAND_BOTTOM, BAND_TOP = 0.06, 0.24, 0.30, 0.94


def plot_learning_curves(path, history, best_epoch, loss_kind, title):
    """PNG: train and validation loss, validation F1 and ER, learning rate over the epochs; the best epoch marked."""
    epochs = [h['epoch'] for h in history]
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    axes[0].plot(epochs, [h['train_loss'] for h in history], label='train loss')
    axes[0].plot(epochs, [h['val_loss'] for h in history], label='validation loss')
    axes[0].set_ylabel(f'loss ({loss_kind})')
    axes[1].plot(epochs, [h['val_F1'] for h in history], label='validation F1 (%)', color='tab:green')
    axes[1].set_ylabel('segment F1 (%)')
    er_axis = axes[1].twinx()
    er_axis.plot(epochs, [h['val_ER'] for h in history], label='validation ER', color='tab:red', alpha=0.6)
    er_axis.set_ylabel('segment ER')
    axes[2].plot(epochs, [h['lr'] for h in history], color='tab:purple')
    axes[2].set(yscale='log', ylabel='learning rate', xlabel='epoch')
    for ax in axes:
        ax.axvline(best_epoch, color='grey', linestyle=':', label=f'best epoch {best_epoch}')
    axes[0].legend()
    handles = axes[1].get_legend_handles_labels()[0] + er_axis.get_legend_handles_labels()[0]
    axes[1].legend(handles=handles, loc='best')
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def scene_of_stem(stem):
    """`cafe_restaurant_07` -> `cafe_restaurant`; None for a name of no known scene (e.g. evaluation files)."""
    scene = stem.rsplit('_', 1)[0]
    return scene if scene in config.SCENES else None


def detection_picture_data(stem, scores_df, soft_targets=None, reference=None, duration=None, all_classes=False,
                           title_note=''):
    """Everything the detection picture shows, as plain values (what the tests check instead of pixels).

    scores_df: DataFrame of a score file (onset, offset, config.HARD_CLASSES), as score_io.read_score_files gives.
    soft_targets: (frames, 17) soft labels or None. reference: [(onset, offset, label)] of gt_dev.csv, or None
    when there is none (infer.py outputs). duration: of the file, s (default: the score frames' end).
    Returns a dict: 'stem', 'scene', 'classes' (row labels, top to bottom), 'scored' (row has scores),
    'edges' (frames + 1,) s, 'scores' {label: (frames,)}, 'soft' {label: (frames,)} or None,
    'reference' {label: [(onset, offset)]} or None, 'events' {label: [(onset, offset)]} (exactly
    post_processing.post_process_events of the scores), 'metrics' {'F1', 'ER'} or None, 'duration', 'note'."""
    filtered = score_io.filtered_scores({stem: scores_df})[stem]     # the evaluation's median filter (none by default)
    hard_scores = filtered[config.HARD_CLASSES].to_numpy(dtype=np.float64)                     # (frames, 11)
    n_frames = len(hard_scores)
    edges = score_io.frame_timestamps(n_frames)                                            # (frames + 1,)
    duration = float(edges[-1]) if duration is None else float(duration)
    classes = list(config.CLASSES if all_classes else config.HARD_CLASSES)
    detected = post_processing.post_process_events(hard_scores, config.HARD_CLASSES, stem, filter_lengths=1)
    events = {c: [(float(e.onset), float(e.offset)) for e in detected if e.event_label == c]
              for c in config.HARD_CLASSES}
    soft = None
    if soft_targets is not None:
        soft_targets = np.asarray(soft_targets, dtype=np.float64)
        if soft_targets.shape != (n_frames, len(config.CLASSES)):
            raise DataError(f'{stem}: soft labels of shape {soft_targets.shape}, but {n_frames} score frames and '
                            f'{len(config.CLASSES)} classes expected; features older than the scores? run: '
                            f'python extract_features.py --data-root DIR --workdir DIR')
        soft = {label: soft_targets[:, config.CLASSES.index(label)] for label in classes}
    ref, metrics = None, None
    if reference is not None:
        ref = {c: [(float(on), float(off)) for on, off, label in reference if label == c] for c in config.HARD_CLASSES}
        # F1_m and ER_m of evaluate.evaluate_scores for this file alone, on its own timeline
        segments = evaluate.segment_metrics(evaluate.timelines([stem], {stem: filtered}, {stem: list(reference)},
                                                               {stem: duration}, timeline='file', workdir=None))
        metrics = {'F1': evaluate.f1_micro(segments), 'ER': float(segments.overall_error_rate()['error_rate'])}
    return {'stem': stem, 'scene': scene_of_stem(stem), 'note': title_note, 'duration': duration, 'edges': edges,
            'classes': classes, 'scored': [label in config.HARD_CLASSES for label in classes],
            'scores': {label: hard_scores[:, c] for c, label in enumerate(config.HARD_CLASSES)},
            'soft': soft, 'reference': ref, 'events': events, 'metrics': metrics}


def load_soft_targets(stem, n_frames, workdir=None, data_root=None):
    """(n_frames, 17) soft labels of a file, or None when there is no source for them (docs/method.md, Pictures)."""
    if data_root is not None:
        scene = scene_of_stem(stem)
        if scene is None:
            return None
        labels = extract_features.read_soft_labels(utils.annotation_path(data_root, f'{scene}/{stem}'))
        return extract_features.rasterize_soft_labels(labels, n_frames)
    if workdir is None:
        return None
    path = Path(workdir) / config.FEATURES_DIR / 'files' / f'{stem}.npz'
    if not path.is_file():
        return None
    with np.load(path) as data:
        targets = data['targets']                                                           # (frames, 17)
    if len(targets) != n_frames:
        raise DataError(f'{path}: {len(targets)} frames of soft labels, the score file has {n_frames}; features '
                        f'and scores of different data? run: python extract_features.py --data-root DIR --workdir DIR')
    return targets


def _format(value, pattern):
    return 'n/a' if value is None or not np.isfinite(value) else pattern.format(value)


def draw_detection_picture(data, path):
    """detection_picture_data's dict -> PNG at path (atomically)."""
    classes, edges = data['classes'], data['edges']
    n_rows = len(classes)
    fig, ax = plt.subplots(figsize=(WIDTH, 1.7 + ROW_HEIGHT * n_rows), layout='constrained')
    band = BAND_TOP - BAND_BOTTOM
    for k, label in enumerate(classes):
        base = n_rows - 1 - k                                       # first class on top
        if data['soft'] is not None:
            ax.pcolormesh(edges, [base + BAND_BOTTOM, base + BAND_TOP], data['soft'][label][None, :],
                          cmap=SOFT_CMAP, vmin=0.0, vmax=1.0, shading='flat')
        if data['reference'] is not None:
            for onset, offset in data['reference'].get(label, []):
                ax.add_patch(Rectangle((onset, base + BAND_BOTTOM), offset - onset, band, fill=False,
                                       edgecolor='black', linewidth=1.6, zorder=4))
        if data['scored'][k]:
            ax.hlines(base + BAND_BOTTOM + band * config.THRESHOLD, edges[0], edges[-1], colors='#777777',
                      linestyles=':', linewidth=0.8, zorder=2)
            scores = np.clip(data['scores'][label], 0.0, 1.0)
            ax.stairs(base + BAND_BOTTOM + band * scores, edges, baseline=None, color=SCORE_COLOUR,
                      linewidth=1.3, zorder=3)
            for onset, offset in data['events'][label]:
                ax.add_patch(Rectangle((onset, base + BAR_BOTTOM), offset - onset, BAR_TOP - BAR_BOTTOM,
                                       facecolor=EVENT_COLOUR, edgecolor='none', zorder=3))
        if k:
            ax.axhline(base + 1, color='#dddddd', linewidth=0.6)
    ax.set(xlim=(edges[0], max(edges[-1], data['duration'])), ylim=(0, n_rows), xlabel='time (s)')
    ax.set_yticks([n_rows - 1 - k + (BAR_BOTTOM + BAND_TOP) / 2 for k in range(n_rows)], classes, fontsize=10)
    for tick, scored in zip(ax.get_yticklabels(), data['scored']):
        if not scored:
            tick.set_color('#777777')
            tick.set_fontstyle('italic')
    ax.tick_params(axis='y', length=0)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=20, steps=[1, 2, 5, 10], integer=True))   # whole seconds
    ax.grid(axis='x', color='#eeeeee', linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)

    title = data['stem'] + (f"   scene: {data['scene']}" if data['scene'] else '')
    if data['metrics'] is not None:
        title += (f"   F1 {_format(data['metrics']['F1'], '{:.1f}%')}   ER {_format(data['metrics']['ER'], '{:.2f}')}"
                  f"   (segment-based, {config.SEGMENT_LENGTH:g} s segments, this file)")
    else:
        title += '   (no reference)'
    if data['note']:
        title += f"   {data['note']}"
    ax.set_title(title, fontsize=12, loc='left')

    handles = []
    if data['soft'] is not None:
        handles.append(Patch(facecolor=SOFT_CMAP(0.6), edgecolor='#bbbbbb', label='soft labels (darker = higher)'))
    if data['reference'] is not None:
        handles.append(Patch(facecolor='none', edgecolor='black', linewidth=1.6,
                             label=f'reference (soft > {config.HARD_LABEL_THRESHOLD:g})'))
    handles += [Line2D([], [], color=SCORE_COLOUR, linewidth=1.3, label='frame score (band bottom 0, top 1)'),
                Line2D([], [], color='#777777', linestyle=':', label=f'threshold {config.THRESHOLD:g}'),
                Patch(facecolor=EVENT_COLOUR, label='detected events (post-processed)')]
    fig.legend(handles=handles, loc='outside lower center', ncol=len(handles), frameon=False, fontsize=9)
    save_figure(fig, path)


def save_figure(fig, path, dpi=DPI):
    """PNG at path, written atomically, figure closed."""
    try:
        utils.atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=dpi))
    finally:
        plt.close(fig)


def reference_seconds(gt_path, stems=None):
    """{hard class: seconds of reference in gt_dev.csv}, over all its files or only `stems` (touching rows are
    merged on reading, so no second is counted twice)."""
    seconds = {label: 0.0 for label in config.HARD_CLASSES}
    for stem, events in score_io.read_ground_truth(gt_path).items():
        if stems is None or stem in stems:
            for onset, offset, label in events:
                seconds[label] += offset - onset
    return seconds


def per_class_data(workdir, run_numbers=None, tune=False):
    """The per-class picture as plain values: 'classes' (config.HARD_CLASSES), 'runs' (names),
    'f1' and 'f1_thop' {label: [% per run]} (an undefined F counted as 0, as in F1_M), 'thresholds'
    {label: [per run]}, 'reference_seconds' {label: s in gt_dev.csv over the files the runs scored: all of them
    after a complete run}, 'n_files' [per run], 'n_files_total'. tune: also 'f1_tuned' {label: [% per run]}, the F
    with each fold's post-processing chosen on its validation files (evaluate.tuned_metrics), and 'chosen' {label:
    [(threshold, median filter) of every run and fold]}."""
    workdir, run_dirs = Path(workdir), select_runs(workdir, run_numbers)[0]
    runs = [(run_dir.name, evaluate.run_metrics(workdir, run_dir)) for run_dir in run_dirs]

    # the files the runs scored (a partial run scores fewer): their reference is what the F-scores are about
    scored = None if any('files' not in m for _, m in runs) else {s for _, m in runs for s in m['files']}

    def value(x):
        return 0.0 if x is None or not np.isfinite(x) else float(x)
    tuned = {}
    if tune:
        runs_tuned = evaluate.evaluate_variants(workdir, run_dirs, tune=True)['tuned']
        chosen = [fold for m in runs_tuned['runs'] for fold in m['scoring']['chosen on validation']['values'].values()]
        tuned = {'f1_tuned': {c: [value(m['class_wise'][c]['F']) for m in runs_tuned['runs']]
                              for c in config.HARD_CLASSES},
                 'chosen': {c: [(v[c]['threshold'], v[c]['median_filter']) for v in chosen]
                            for c in config.HARD_CLASSES}}
    return {**tuned, 'classes': list(config.HARD_CLASSES), 'runs': [name for name, _ in runs],
            'f1': {c: [value(m['class_wise'][c]['F']) for _, m in runs] for c in config.HARD_CLASSES},
            'f1_thop': {c: [value(m['class_wise'][c]['F1_thop']) for _, m in runs] for c in config.HARD_CLASSES},
            'thresholds': {c: [m.get('thresholds', {}).get(c) for _, m in runs] for c in config.HARD_CLASSES},
            'reference_seconds': reference_seconds(workdir / config.METADATA_DIR / config.GT_FILE, scored),
            'n_files': [m.get('n_files') for _, m in runs],
            'n_files_total': max((m.get('n_files_total') or 0) for _, m in runs)}


def draw_per_class_picture(data, path):
    """per_class_data's dict -> PNG at path (atomically): F-score panel and reference-seconds panel side by side."""
    seconds = data['reference_seconds']
    classes = sorted(data['classes'], key=lambda c: (-seconds[c], data['classes'].index(c)))   # rare at the bottom
    n = len(classes)
    y = np.arange(n)[::-1].astype(float)                               # first class on top
    fig, (ax, ax_ref) = plt.subplots(1, 2, figsize=(WIDTH, 1.6 + 1.2 * ROW_HEIGHT * n), sharey=True,
                                     gridspec_kw={'width_ratios': [3.2, 1]}, layout='constrained')
    n_runs = len(data['runs'])
    series = [('f1', f'F at threshold {config.THRESHOLD:g} (sed_eval class-wise)', SCORE_COLOUR),
              ('f1_thop', "F at the class's optimal threshold thr (F1_thop)", THOP_COLOUR)]
    if 'f1_tuned' in data:
        series.append(('f1_tuned', 'F with the threshold thr and median filter chosen on validation (per fold)',
                       TUNED_COLOUR))
    height = 0.76 / len(series)
    rng = np.random.default_rng(0)                                     # jitter of the run dots, fixed
    for k, (key, label, colour) in enumerate(series):
        shift = height * ((len(series) - 1) / 2 - k)                   # the first series on top
        values = [np.array(data[key][c], dtype=float) for c in classes]
        means = np.array([v.mean() for v in values])
        stds = np.array([v.std() for v in values])
        ax.barh(y + shift, means, height=height, color=colour, label=label, zorder=2)
        if n_runs > 1:
            ax.errorbar(means, y + shift, xerr=stds, fmt='none', ecolor='black', elinewidth=1, capsize=3, zorder=3)
            for yk, v in zip(y + shift, values):
                ax.scatter(v, yk + rng.uniform(-height / 4, height / 4, len(v)), s=24, color='black', zorder=4,
                           edgecolors='white', linewidths=0.7)
        for yk, mean, top, c in zip(y + shift, means, means + stds, classes):
            text = f'{mean:.1f}'
            thresholds = [t for t in data['thresholds'][c] if t is not None]
            if key == 'f1_thop' and thresholds:
                text += f'  (thr {np.mean(thresholds):.2f})'
            if key == 'f1_tuned':         # a threshold None is below every validation score
                chosen = [t for t, _ in data['chosen'][c] if t is not None]
                text += (f"  (thr {f'{np.mean(chosen):.2f}' if chosen else 'none'}, filter "
                         f"{tables.most_chosen([f for _, f in data['chosen'][c]])})")
            ax.text(top + 1, yk, text, va='center', fontsize=8, color='#333333')
    ax.set_yticks(y, classes, fontsize=10)
    ax.set(xlim=(0, 105), ylim=(-0.6, n - 0.4), xlabel='F-score (%)')
    ax.grid(axis='x', color='#eeeeee', zorder=0)

    ref = np.array([seconds[c] for c in classes])
    ax_ref.barh(y, ref, height=0.6, color='#999999', zorder=2)
    top = max(ref.max(), 1.0)
    for yk, s in zip(y, ref):
        ax_ref.text(s + top * 0.02, yk, f'{s:.0f} s' if s > 0 else 'none', va='center', fontsize=8)
    ax_ref.set(xlim=(0, top * 1.35), xlabel=f'reference seconds ({config.GT_FILE})')
    ax_ref.grid(axis='x', color='#eeeeee', zorder=0)
    ax_ref.tick_params(axis='y', length=0)

    files = '/'.join(sorted({str(k) for k in data['n_files']}))
    spread = f'bars: mean over {n_runs} runs, whiskers: +/- 1 std, dots: runs' if n_runs > 1 else 'one run'
    fig.suptitle(f'Per-class F-score of the {n} evaluated classes, {files} of {data["n_files_total"]} files; '
                 f'{spread}', fontsize=12)
    fig.legend(loc='outside lower center', ncol=len(series), frameon=False, fontsize=9)
    save_figure(fig, path)


def select_stems(available, wanted, where):
    """The stems asked for (file ids, stems or .wav names) among those with score files, or all of them."""
    if not wanted:
        return sorted(available)
    stems = [score_io.stem_of(w) for w in wanted]
    missing = [s for s in stems if s not in available]
    if missing:
        raise DataError(f'{where}: no score file for {missing} (files there: {", ".join(sorted(available)[:5])}...)')
    return stems


def plot_files(workdir, scores_dir, out_dir, files=None, all_classes=False, data_root=None):
    """Detection pictures of the score files of scores_dir -> list of paths: a run of workdir, with its reference,
    or (workdir None) infer.py's `<out>/scores`, without reference."""
    ground_truth, durations = score_io.read_references(workdir) if workdir else (None, None)
    scores = score_io.read_score_files(scores_dir, ground_truth)
    note = f'[{Path(scores_dir).resolve().parent.name}]' if workdir else '[infer.py]'
    written, without_soft = [], []
    for stem in tqdm(select_stems(scores, files, scores_dir), desc='pictures', unit='file'):
        soft = load_soft_targets(stem, len(scores[stem]), workdir, data_root)
        if soft is None and workdir:
            without_soft.append(stem)
        reference, duration = (ground_truth[stem], durations[stem]) if workdir else (None, None)
        data = detection_picture_data(stem, scores[stem], soft, reference, duration, all_classes, title_note=note)
        path = Path(out_dir) / f'{stem}.png'
        draw_detection_picture(data, path)
        written.append(path)
    if without_soft:
        print(f'note: no soft labels for {len(without_soft)} files ({", ".join(without_soft[:3])}...): '
              f'{Path(workdir) / config.FEATURES_DIR / "files"}/<stem>.npz not found; pass --data-root DIR to read '
              f'them from the annotation files', file=sys.stderr)
    return written


@experiment.command(workdir=True)
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR,
                        help='holds metadata/, features/ and runs/ (default: the repository)')
    parser.add_argument('--scores', type=Path, default=None,
                        help='score files to draw (default: the first <workdir>/runs/run*/scores)')
    parser.add_argument('--infer-out', type=Path, default=None,
                        help="infer.py's --out folder: draw its scores/ without reference (no per-class picture)")
    parser.add_argument('--files', nargs='+', default=None, metavar='STEM',
                        help='only these files (stems such as cafe_restaurant_07, or file ids; default: all)')
    parser.add_argument('--all-classes', action='store_true',
                        help=f'one row per class of all {len(config.CLASSES)} (default: the '
                             f'{len(config.HARD_CLASSES)} evaluated ones)')
    parser.add_argument('--data-root', type=Path, default=None,
                        help='read the soft labels from the annotation files here (default: the features npz)')
    parser.add_argument('--runs', type=int, nargs='+', metavar='R',
                        help='these runs (default: every run; runs of other settings are refused); the detection '
                             'pictures draw the first')
    parser.add_argument('--only', choices=['files', 'per-class'], default=None,
                        help='draw only the detection pictures or only the per-class picture')
    parser.add_argument('--out', type=Path, default=None,
                        help=f'output folder (default: <workdir>/{PICTURES_DIR}, or <infer-out>/{PICTURES_DIR})')
    parser.add_argument('--tune', action='store_true',
                        help="per-class picture: a third bar, the F with each fold's threshold and median filter "
                             'chosen on its validation files (evaluate.py --tune)')
    args = experiment.parse_args(parser, argv)
    written = []
    if args.infer_out is not None:
        if args.only == 'per-class':
            parser.error('--infer-out has no reference: no per-class picture')
        out = args.out or args.infer_out / PICTURES_DIR
        written += plot_files(None, args.infer_out / 'scores', out, args.files, args.all_classes, args.data_root)
    else:
        out = args.out or args.workdir / PICTURES_DIR
        if args.only != 'per-class':
            scores_dir = args.scores or select_runs(args.workdir, args.runs)[0][0] / 'scores'
            check_scores_folder(args.workdir, scores_dir)
            written += plot_files(args.workdir, scores_dir, out, args.files, args.all_classes, args.data_root)
        if args.only != 'files':
            draw_per_class_picture(per_class_data(args.workdir, args.runs, args.tune), out / 'per_class.png')
            written.append(out / 'per_class.png')
    print(f'wrote {len(written)} picture{"s" if len(written) != 1 else ""} to {out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
