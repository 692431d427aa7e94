"""System outputs for a folder of recordings (e.g. the 26 files of the challenge evaluation set) from trained models.

    python task4b.py --workdir WD                                   # first: trained fold models
    python infer.py --audio DIR --workdir WD --out OUT              # every DIR/**/*.wav
    python infer.py --audio DIR --workdir WD --out OUT --device cuda
    python infer.py --audio DIR --workdir WD --out OUT --tune       # thresholds and median filters chosen on validation
    python infer.py --workdir WD --validation-scores                # runs trained before task4b.py saved them

For every WAV file under --audio (recursive, sorted), on its own (batch of one, eval mode: the same scores alone or
in a folder): the mel features of the training, then the frame scores of every trained model
`WD/runs/run*/fold*/best_model.pt` (its fold's normalisation, the whole file in one pass), averaged. Written:

    OUT/scores/<stem>.tsv    frame scores of the 11 hard classes (sed_scores_eval format, as task4b's test scores),
                             median-filtered when the evaluation filters (config.MEDIAN_FILTER; none by default)
    OUT/events/<stem>.tsv    onset<TAB>offset<TAB>label, the post-processing of those scores (docs/method.md, Evaluation)
    OUT/events.tsv           filename<TAB>onset<TAB>offset<TAB>event_label for every file (a submission)
    OUT/chosen_on_validation.json   with --tune: each class's threshold and median filter ('values'), what they
                             were chosen on ('chosen on') and what they cut ('cuts')
    OUT/cost.json            the time and energy of the whole inference (cost.py); OUT/emissions.csv, CodeCarbon's row

--tune and --validation-scores: docs/experiments.md, Thresholds and median filters chosen on validation.
"""
import argparse
import shlex
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import audio_io
import config
import cost
import embeddings
import experiment
import extract_features
import front_end
import model as model_module
import post_processing
import runtime
import score_io
import task4b
import tuning
import utils
from runs import check_code_of_runs, finished_folds, missing_validation_scores, run_order, select_runs
from utils import DataError


def find_audio_files(audio_dir):
    """Every *.wav under audio_dir (recursive), sorted; stems must be unique (they name the output files)."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise DataError(f'{audio_dir}: audio folder not found')
    paths = sorted(p for p in audio_dir.rglob('*') if p.suffix.lower() == '.wav' and p.is_file())
    if not paths:
        raise DataError(f'{audio_dir}: no .wav files in this folder or below it')
    seen = {}
    for path in paths:
        if seen.setdefault(path.stem, path) != path:
            raise DataError(f'{path} and {seen[path.stem]}: two recordings named {path.stem!r}; outputs are named '
                            f'after the file name, rename one')
    return paths


def find_models(workdir, runs=None):
    """Paths of the trained fold models of the runs runs.select_runs chooses (runs of other settings are
    refused), `<workdir>/runs/run{r}/fold*/best_model.pt`, in run and fold order."""
    run_dirs, record = select_runs(workdir, runs)
    if run_dirs:
        check_code_of_runs(run_dirs[0], record)
        if config.EMBEDDINGS != 'none':   # the checkpoint given now must be the one the runs' features were made with
            embeddings.check(run_dirs[0] / 'settings.json', record['features'].get('embeddings', {}),
                                              f'python infer.py --workdir {shlex.quote(str(workdir))}')
    paths = [p for d in run_dirs for p in sorted(d.glob('fold*/best_model.pt'))]
    if not paths:
        raise DataError(f'{Path(workdir) / config.RUNS_DIR}: no trained models (run*/fold*/best_model.pt); '
                        f'run: python task4b.py --workdir {shlex.quote(str(workdir))}')
    return paths


def load_model(path, device='cpu'):
    """best_model.pt -> (CRNN in eval mode, in the precision it was trained in, mean (64,), scale (64,), loss kind),
    checked against this config."""
    checkpoint = runtime.load_torch_file(path, 'best_model.pt of task4b.py')
    missing = [k for k in ('model', 'mean', 'scale', 'feature_params', 'loss', 'precision') if k not in checkpoint]
    if missing or not ('settings' in checkpoint or 'architecture' in checkpoint):
        raise DataError(f'{path}: not a best_model.pt of task4b.py (missing {missing or ["settings"]})')
    changed = extract_features.changed_feature_param(checkpoint['feature_params'])
    if changed:
        name, saved, now = changed
        raise DataError(f'{path}: trained with feature parameter {name} = {saved!r}, config.py now gives '
                        f'{now!r}; restore config.py or retrain (python task4b.py --workdir DIR)')
    runtime.check_precision(checkpoint['precision'], device, training=False)
    runtime.float32_arithmetic(device, checkpoint['precision'])
    # the network it was trained as (its settings, whatever config.py says now; older files: 'architecture'), in
    # the layout and precision task4b.py trained in: the same kernels, the same scores
    trained = checkpoint.get('settings', checkpoint.get('architecture'))
    with experiment.applied({name: value for name, value in trained.items() if name in utils.DEFAULTS}):
        net = model_module.build_model(device, checkpoint['precision'])
    net.load_state_dict(checkpoint['model'])
    net.eval()
    mean, scale = (checkpoint[key].numpy().astype(np.float32) for key in ('mean', 'scale'))
    return net, mean, scale, checkpoint['loss']


@torch.inference_mode()
def score_file(audio_path, models, device='cpu'):
    """One recording -> frame scores (frames, 17), the mean over the models of each model's scores."""
    audio = audio_io.read_audio(audio_path)
    features = front_end.compute(audio)                                                      # (frames, 64)
    if config.EMBEDDINGS != 'none':       # the pretrained embeddings beside the mel bands, as extraction stores them
        embedder = embeddings.configured_embedder(config.EMBEDDINGS, config.EMBEDDINGS_CHECKPOINT, device)
        embedded = embeddings.at_frames(embedder, config.EMBEDDINGS, audio, len(features))   # (frames, 768)
        features = np.concatenate([features, embedded], axis=1)                          # (frames, 64 + 768)
    total = None
    for net, mean, scale, loss in models:
        x = torch.from_numpy(((features - mean) / scale).astype(np.float32)).to(device)       # (frames, 64)
        outputs = net(x.unsqueeze(0))                                                         # (1, frames, 17)
        scores = model_module.scores_from_outputs(outputs, loss)[0].float().cpu().numpy()     # (frames, 17)
        total = scores.astype(np.float64) if total is None else total + scores
    return (total / len(models)).astype(np.float32)


def choose_for_all_folds(workdir, run_dirs):
    """One threshold and median filter per class, chosen on the validation files of every fold at once (each
    fold's scores averaged over the runs; a file in two folds' validation parts counted once per fold) ->
    {class: {'threshold', 'median_filter', 'F'}} (tuning.choose_on_validation)."""
    ground_truth, durations = score_io.read_references(workdir)
    folds = tuning.ensemble_folds([tuning.run_folds(workdir, d, ground_truth) for d in run_dirs])
    scores = {f'fold{k}/{stem}': df for k, parts in folds.items() for stem, df in parts['validation'].items()}
    stems = {key: key.split('/', 1)[1] for key in scores}
    return tuning.choose_on_validation(scores, {key: ground_truth[stem] for key, stem in stems.items()},
                                         {key: durations[stem] for key, stem in stems.items()})


def tuning_note(model_paths, run_dirs):
    """What --tune's values were chosen on and what they cut, in words -> {'chosen on', 'cuts'}."""
    folds, runs = len({p.parent.name for p in model_paths}), f'{len(run_dirs)} run{"s" * (len(run_dirs) != 1)}'
    models = f'{len(model_paths)} model{"s" * (len(model_paths) != 1)} ({folds} fold{"s" * (folds != 1)} x {runs})'
    return {'chosen on': f"the validation files of each fold, scored by that fold's models averaged over {runs}",
            'cuts': f'the average of {models}' + (': more models than scored each validation file, so narrower '
                                                  'scores; the values fit these outputs less well than they fit the '
                                                  'validation scores') * (folds > 1)}


def write_missing_validation_scores(workdir, runs=None, device='cpu'):
    """The validation files of each finished fold without validation scores, scored by the fold's best_model.pt
    and written as task4b.py writes them after training (write_validation_scores) -> [(run folder, fold)] written."""
    run_dirs, record = select_runs(workdir, runs)
    check_code_of_runs(run_dirs[0], record)
    todo = [(d, k) for d in run_dirs for k in finished_folds(d) if missing_validation_scores(workdir, d, k)]
    for run_dir, fold in tqdm(todo, desc='validation scores', unit='fold'):
        net, mean, scale, loss = load_model(run_dir / f'fold{fold}' / 'best_model.pt', device)
        task4b.write_validation_scores(net, workdir, fold, mean, scale, run_dir, loss)
    return todo


def infer(audio_dir, workdir, out_dir, device='cpu', runs=None, tune=False):
    """Scores and events for every WAV under audio_dir, from the fold models of the runs -> stems written; the time
    and energy of it all in out_dir/cost.json. tune: choose_for_all_folds's thresholds and median filters."""
    audio_paths = find_audio_files(audio_dir)
    model_paths = find_models(workdir, runs)
    thresholds, lengths = None, post_processing.median_filter_lengths(config.HARD_CLASSES)
    out_dir = Path(out_dir)
    if tune:
        run_dirs = sorted({p.parent.parent for p in model_paths}, key=run_order)
        chosen = choose_for_all_folds(workdir, run_dirs)
        thresholds = [tuning.cut_threshold(chosen[c]) for c in config.HARD_CLASSES]
        lengths = [chosen[c]['median_filter'] for c in config.HARD_CLASSES]
        note = tuning_note(model_paths, run_dirs)
        print(f"--tune: thresholds and median filters chosen on {note['chosen on']}; they cut {note['cuts']}")
        utils.write_json_atomic(out_dir / 'chosen_on_validation.json', {**note, 'values': chosen})
    with cost.tracked(out_dir, 'infer.py', device) as spent:
        models = [load_model(p, device) for p in model_paths]
        runs = sorted({p.parent.parent.name for p in model_paths})
        print(f'{len(audio_paths)} recordings, {len(models)} models ({", ".join(runs)}), device {device}')
        combined = ['filename\tonset\toffset\tevent_label\n']
        for path in tqdm(audio_paths, desc='infer', unit='file', disable=len(audio_paths) < 3):
            scores = score_file(path, models, device)[:, config.HARD_INDEX]                               # (frames, 11)
            scores = post_processing.median_filter(scores, lengths)     # the scores the events are cut from
            score_io.write_score_file(out_dir / 'scores' / f'{path.stem}.tsv', scores)
            events = post_processing.post_process_events(scores, config.HARD_CLASSES, path.stem, thresholds,
                                                         filter_lengths=1)
            lines = [f'{e.onset:.1f}\t{e.offset:.1f}\t{e.event_label}\n' for e in events]     # DCASE's, no header
            utils.write_text_atomic(out_dir / 'events' / f'{path.stem}.tsv', ''.join(lines))
            combined += [f'{path.stem}.wav\t{line}' for line in lines]
        utils.write_text_atomic(out_dir / 'events.tsv', ''.join(combined))
    utils.write_json_atomic(out_dir / 'cost.json', {'inference': spent, 'recordings': len(audio_paths),
                                                    'models': len(model_paths)})
    print(f'inference of {len(audio_paths)} recordings: {cost.describe(spent)}')
    return [p.stem for p in audio_paths]


@experiment.command(workdir=True)
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--audio', type=Path, help='folder of WAV files (searched recursively)')
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR, help='holds runs/run*/fold*/best_model.pt')
    parser.add_argument('--out', type=Path, help='output folder (scores/, events/, events.tsv)')
    parser.add_argument('--tune', action='store_true',
                        help="each class's threshold and median filter chosen on the validation files of every fold "
                             '(default: config.THRESHOLD and config.MEDIAN_FILTER)')
    parser.add_argument('--validation-scores', action='store_true',
                        help='instead: write the validation scores of finished folds that lack them, from their '
                             'best_model.pt (runs trained before task4b.py saved them)')
    parser.add_argument('--runs', type=int, nargs='+', metavar='R',
                        help='the models of these runs (default: every run; runs of other settings are refused)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu',
                        help='cpu (default; reproduces scores of a CPU training run to the last bit) or cuda')
    args = experiment.parse_args(parser, argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device visible to torch')
    if args.validation_scores:
        written = write_missing_validation_scores(args.workdir, args.runs, args.device)
        print(f'wrote the validation scores of {len(written)} fold{"s" * (len(written) != 1)}: '
              + (', '.join(f'{d.name} fold{k}' for d, k in written) or 'every finished fold had them'))
        return 0
    if args.audio is None or args.out is None:
        parser.error('the following arguments are required: --audio, --out (or --validation-scores)')
    stems = infer(args.audio, args.workdir, args.out, args.device, args.runs, args.tune)
    print(f'wrote {args.out}/scores, {args.out}/events ({len(stems)} files), {args.out}/events.tsv and '
          f'{args.out}/cost.json')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
