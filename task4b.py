"""Train and test the DCASE2023 Task 4B baseline: the CRNN per fold on soft labels, then the metrics.

    python extract_features.py --data-root DIR --workdir WD     # first: features, folds and metadata
    python task4b.py --workdir WD                               # 1 run of the 5 folds (config.RUNS)
    python task4b.py --workdir WD --runs 10 --loss mse          # the published table: 10 runs, seeds 42..51
    python task4b.py --workdir WD --folds 1 3 --epochs 20       # a subset of folds, a shorter schedule
    python task4b.py --workdir WD --resume                      # continue a killed run where it stopped
    python task4b.py --workdir WD --loss mse --restart          # a run folder of other settings: start it over
    python task4b.py --workdir WD --runs 10 --jobs 4            # 4 (run, fold) trainings at once (e.g. one GPU)
    python task4b.py --workdir WD --run 3 --folds 2             # run 3 (seed 45), fold 2 only: one cluster job;
    python evaluate.py --workdir WD                             #   when all jobs are done, the table of every run

For each run r (seed config.SEED + r) and fold k: training with model selection, learning-rate decay and early
stop on the validation loss; the selected weights then score each test and each validation file of the fold, whole
(docs/method.md, Training). Outputs:

    WD/runs/run{r}/fold{k}/  checkpoint.pt (resume), best_model.pt, history.csv, learning_curves.png, metrics.json
                             (with the time and energy of its training and test: cost.py), emissions.csv (CodeCarbon)
    WD/runs/run{r}/scores/<stem>.tsv               frame scores of the 11 evaluated classes (sed_scores_eval format)
    WD/runs/run{r}/scores_all_classes/<stem>.tsv   frame scores of the 17 classes
    WD/runs/run{r}/validation_scores/fold{k}/<stem>.tsv   fold k's validation files, whole, by its selected model
    WD/runs/run{r}/settings.json                   the run's record: seed, settings, versions, git commit
    WD/runs/run{r}/metrics.json                    its metrics over the score files of its finished folds
    WD/results.json, WD/results.md                 every run's metrics, mean and std over runs, the table

A fold trained alone (`--run R --folds K`) gives the scores it gives inside a full run (docs/cluster.md). A fold is
finished when its metrics.json exists; `--resume` skips finished folds and continues an unfinished one from its last
finished epoch, with the scores of an uninterrupted run; without it a fold starts over, replacing its own score
files. A run folder whose settings.json records other settings is refused (naming them) unless --restart.
"""
import argparse
import copy
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchinfo
from tqdm import tqdm

import config
import cost
import experiment
import evaluate
import extract_features
import plot_results
import post_processing
import runtime
import score_io
import tables
import utils
from augment import Augmenter
from data_generator import load_fold_tensors, sequence_batches, training_batches
from model import (CRNN, LOSSES, build_model, init_output_bias, loss_of, model_input_width, output_bias_init,
                   scores_from_outputs, soft_label_loss)
from runs import run_record, start_run, training_settings, validation_files, validation_scores_dir
from utils import DataError


class TrainingError(DataError):
    """Training cannot go on (a NaN loss): the message names the fold, epoch and batch."""


class PlateauSchedule:
    """Model selection, learning-rate decay and early stop over the validation losses, counted as the reference
    code counts them (docs/method.md, Training): with max_epochs E = 150, one decay at best + 45, the stop after
    epoch best + 90."""

    def __init__(self, max_epochs):
        self.decay_patience = int(config.LR_DECAY_PATIENCE * max_epochs)
        self.stop_patience = int(config.EARLY_STOP_PATIENCE * max_epochs)
        self.best_loss, self.best_epoch = math.inf, 0
        self.since_best = self.since_decay = 0

    def step(self, epoch, val_loss):
        """Record epoch `epoch`'s validation loss -> (improved, decay, stop)."""
        improved = val_loss < self.best_loss
        if improved:
            self.best_loss, self.best_epoch = float(val_loss), epoch
            self.since_best = self.since_decay = 0
        self.since_best += 1
        self.since_decay += 1
        decay = self.since_decay > self.decay_patience
        if decay:
            self.since_decay = 0
        stop = self.since_best > self.stop_patience
        return improved, decay, stop

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        vars(self).update(state)


def new_optimizer(model):
    return torch.optim.Adam(model.parameters(), lr=config.LEARNING_RATE, betas=config.ADAM_BETAS,
                            eps=config.ADAM_EPS, weight_decay=0.0)


# -----------------------------------------------------------------------------
# One epoch, validation, test

def train_one_epoch(model, optimizer, X, Y, generator, loss_kind, augmenter):
    """One pass over the shuffled training sequences -> the batch losses (tensor (batches,), not yet synced)."""
    model.train()
    losses = []
    for x, y in training_batches(X, Y, config.BATCH_SIZE, generator):   # (b, 200, 64), (b, 200, 17)
        x, y = augmenter(x, y)                                          # as they were, unless augmentations are on
        optimizer.zero_grad(set_to_none=True)
        loss = soft_label_loss(model(x), y, loss_kind)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)            # one sync per epoch (the NaN check and the log), not one per batch


@torch.inference_mode()
def validate(model, X_val, Y_val, val_reference, loss_kind):
    """-> validation loss (the mean over every frame and class), segment F1 (%) and ER of the post-processed
    scores against the hard labels, the validation sequences as one timeline (for the log only)."""
    model.eval()
    outputs = torch.cat([model(x) for x in sequence_batches(X_val, config.BATCH_SIZE)])   # (n, 200, 17)
    loss = float(soft_label_loss(outputs, Y_val, loss_kind))
    scores = scores_from_outputs(outputs, loss_kind)[..., config.HARD_INDEX]              # (n, 200, 11)
    scores = scores.reshape(-1, len(config.HARD_CLASSES)).float().cpu().numpy()
    estimated = post_processing.post_process_events(scores, config.HARD_CLASSES, 'validation')
    metrics = evaluate.segment_metrics([(val_reference, estimated, len(scores) * config.FRAME_SECONDS)])
    return loss, evaluate.f1_micro(metrics), float(metrics.overall_error_rate()['error_rate'])


@torch.inference_mode()
def file_scores(model, x, loss_kind):
    """One file's features x (frames, 64), whole, through the model in eval mode (no random number drawn) -> its
    frame scores (frames, 17)."""
    model.eval()
    return scores_from_outputs(model(x.unsqueeze(0)), loss_kind)[0].float().cpu().numpy()


def write_test_scores(model, data, run_dir, loss_kind):
    """Each test file, whole, through the model -> run_dir/scores/<stem>.tsv (frames, 11 evaluated classes) and
    run_dir/scores_all_classes/<stem>.tsv (frames, 17)."""
    stems = [utils.file_stem(file_id) for file_id in data['test_files']]
    for stem, x in zip(stems, data['X_test']):                          # x (frames, 64)
        scores = file_scores(model, x, loss_kind)                       # (frames, 17)
        score_io.write_score_file(Path(run_dir) / 'scores' / f'{stem}.tsv', scores[:, config.HARD_INDEX])
        score_io.write_score_file(Path(run_dir) / 'scores_all_classes' / f'{stem}.tsv', scores, config.CLASSES)
    return stems


def write_file_scores(model, workdir, file_ids, mean, scale, out_dir, loss_kind):
    """Each file, whole, through the model as the test files go (its features normalised with the fold's scaler
    mean, scale (64,)) -> out_dir/<stem>.tsv (frames, 11 evaluated classes)."""
    device = next(model.parameters()).device
    for file_id in file_ids:
        with np.load(utils.file_features_path(workdir, file_id)) as stored:
            x = extract_features.normalise(stored['features'], mean, scale)                       # (frames, 64)
        scores = file_scores(model, torch.from_numpy(x).to(device), loss_kind)                    # (frames, 17)
        score_io.write_score_file(Path(out_dir) / f'{utils.file_stem(file_id)}.tsv', scores[:, config.HARD_INDEX])


def write_validation_scores(model, workdir, fold, mean, scale, run_dir, loss_kind):
    """Each validation file of the fold, whole, through the selected model -> run_dir/validation_scores/fold{k}/
    (the 200-frame sequences of training cut across files; evaluate.py --tune needs each file's own scores)."""
    out_dir = validation_scores_dir(run_dir, fold)
    shutil.rmtree(out_dir, ignore_errors=True)          # an earlier training's files of this fold
    write_file_scores(model, workdir, validation_files(workdir, fold), mean, scale, out_dir, loss_kind)


# -----------------------------------------------------------------------------
# One fold: train with validation-based selection, keep the best weights

def train_fold(data, fold_dir, seed, epochs, device, loss_kind, resume=False, name='', precision=None):
    """Train on data['X_train'] with selection on data['X_val'] -> the model with the best weights loaded, and
    the schedule (best epoch and loss). Writes fold_dir/checkpoint.pt and history.csv after every epoch.
    precision: 'float32', 'bfloat16' or 'tf32' (default config.PRECISION; model.CRNN)."""
    checkpoint_path = Path(fold_dir) / 'checkpoint.pt'
    precision = precision or config.PRECISION
    runtime.seed_everything(seed, device, precision)
    model = build_model(device, precision)
    if output_bias_init(loss_kind) == 'prior':         # start each output at its class's prior (bce)
        init_output_bias(model, data['Y_train'])
    optimizer = new_optimizer(model)
    schedule = PlateauSchedule(epochs)
    generator = torch.Generator().manual_seed(seed)      # the shuffling order; its state is checkpointed
    augmenter = Augmenter(seed, data['mean'], data['scale'])   # its draws too
    settings = training_settings(seed, epochs, loss_kind, precision, device)
    history, best_state, start_epoch, finished = [], None, 1, False
    checkpoint = runtime.load_checkpoint(checkpoint_path, settings, generator, device) if resume else None
    if checkpoint:                     # resume: continue after the last finished epoch, exactly
        model.load_state_dict(checkpoint['model'])
        optimizer.load_state_dict(checkpoint['optimizer'])
        schedule.load_state_dict(checkpoint['schedule'])
        history, best_state = checkpoint['history'], checkpoint['best_model']
        start_epoch, finished = checkpoint['epoch'] + 1, checkpoint['finished']
        augmenter.load_state_dict(checkpoint['augment'])

    bar = tqdm(total=epochs, initial=start_epoch - 1, desc=name, unit='epoch', dynamic_ncols=True, disable=finished)
    epoch = start_epoch
    while not finished:
        started = time.perf_counter()
        lr = optimizer.param_groups[0]['lr']
        batch_losses = train_one_epoch(model, optimizer, data['X_train'], data['Y_train'], generator, loss_kind,
                                       augmenter)
        if not torch.isfinite(batch_losses).all():
            batch = int((~torch.isfinite(batch_losses)).nonzero()[0, 0]) + 1
            raise TrainingError(f'{name}: training loss is {float(batch_losses[batch - 1])} at epoch {epoch}, batch '
                                f'{batch} of {len(batch_losses)}; check the features (NaN/inf in the inputs?) and '
                                f'the learning rate (config.LEARNING_RATE)')
        val_loss, val_f1, val_er = validate(model, data['X_val'], data['Y_val'], data['val_reference'], loss_kind)
        if not math.isfinite(val_loss):
            raise TrainingError(f'{name}: validation loss is {val_loss} at epoch {epoch}')

        improved, decay, stop = schedule.step(epoch, val_loss)
        if improved:
            best_state = copy.deepcopy(model.state_dict())
        if decay:
            for group in optimizer.param_groups:
                group['lr'] /= config.LR_DECAY_FACTOR
        finished = stop or epoch == epochs
        history.append({'epoch': epoch, 'train_loss': float(batch_losses.mean()), 'val_loss': val_loss,
                        'val_F1': val_f1, 'val_ER': val_er, 'lr': lr, 'seconds': round(time.perf_counter() - started, 3)})
        # the history first: a kill after the checkpoint then leaves both at this epoch (resume never rewrites
        # the history of a finished fold), a kill between them makes resume redo this epoch and the history
        utils.write_text_atomic(Path(fold_dir) / 'history.csv', pd.DataFrame(history).to_csv(index=False))
        runtime.save_checkpoint(checkpoint_path, {
            'epoch': epoch, 'finished': finished, 'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
            'schedule': schedule.state_dict(), 'best_model': best_state, 'history': history, 'settings': settings,
            'augment': augmenter.state_dict()}, generator, device)
        bar.update(1)
        bar.set_postfix(train=f'{history[-1]["train_loss"]:.4f}', val=f'{val_loss:.4f}', F1=f'{val_f1:.1f}',
                        best=schedule.best_epoch, lr=f'{optimizer.param_groups[0]["lr"]:.0e}')
        if stop and epoch < epochs:
            tqdm.write(f'{name}: early stop at epoch {epoch}, {epoch - schedule.best_epoch} epochs after the best')
        epoch += 1
    bar.close()

    model.load_state_dict(best_state)
    plot_results.plot_learning_curves(Path(fold_dir) / 'learning_curves.png', history, schedule.best_epoch,
                                      loss_kind, name)
    return model, schedule


# -----------------------------------------------------------------------------
# The experiment: runs x folds, then the metrics

def run_experiment(workdir, folds=None, runs=None, seed=None, epochs=None, device=None, resume=False, loss_kind=None,
                   run_ids=None, summarize=True, restart=False, precision=None):
    """Train and test every (run, fold); write the fold metrics, then (summarize) each run's metrics and the
    table -> the summary dict, or None. runs, seed, epochs, loss_kind, precision: default config's. run_ids: the
    runs to do (default range(runs)). restart: remove a run folder of other settings instead of refusing it."""
    workdir = Path(workdir)
    runs, seed = runs or config.RUNS, config.SEED if seed is None else seed
    epochs, loss_kind, precision = epochs or config.MAX_EPOCHS, loss_kind or config.LOSS, precision or config.PRECISION
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    runtime.check_precision(precision, device)
    record = run_record(extract_features.read_manifest(workdir), epochs, loss_kind, precision, device)
    folds = list(folds or range(1, config.N_FOLDS + 1))
    run_ids = list(range(runs) if run_ids is None else run_ids)
    print(torchinfo.summary(CRNN(), input_size=(config.BATCH_SIZE, config.SEQUENCE_LENGTH, model_input_width()),
                            verbose=0, device='cpu'))
    print(f'workdir {workdir}, folds {folds}, runs {run_ids} (seed {seed} + run), at most {epochs} epochs, '
          f'loss {loss_kind}, {precision}, device {device}')
    for r in run_ids:
        run_dir = workdir / config.RUNS_DIR / f'run{r}'
        record_id = start_run(run_dir, record, seed + r, restart, runtime.device_details(device))
        for k in folds:
            fold_dir = run_dir / f'fold{k}'
            name = f'run {r} fold {k}'
            if resume and (fold_dir / 'metrics.json').is_file():
                print(f'{name}: finished before ({fold_dir / "metrics.json"}), skipped')
                continue
            data = load_fold_tensors(workdir, k, device)
            if not resume:
                runtime.start_fold_over(fold_dir, data['test_files'])
            print(f'{name}: {len(data["X_train"])} training and {len(data["X_val"])} validation sequences, '
                  f'{len(data["test_files"])} test files')
            runtime.reset_gpu_peak(device)
            with cost.tracked(fold_dir, f'{name} training', device) as training:   # time and energy (cost.py)
                model, schedule = train_fold(data, fold_dir, seed + r, epochs, device, loss_kind, resume, name,
                                             precision)
            runtime.save_best_model(fold_dir / 'best_model.pt', model, data, loss_kind)
            with cost.tracked(fold_dir, f'{name} test', device) as test:
                stems = write_test_scores(model, data, run_dir, loss_kind)
            write_validation_scores(model, workdir, k, data['mean'], data['scale'], run_dir, loss_kind)
            metrics = evaluate.evaluate_scores(run_dir / 'scores', workdir, file_stems=stems)
            metrics.update(best_epoch=schedule.best_epoch, best_val_loss=schedule.best_loss, record_id=record_id,
                           device=runtime.device_details(device)['name'], gpu_peak_bytes=runtime.gpu_peak_bytes(device),
                           cost={'training': training, 'test': test})
            utils.write_json_atomic(fold_dir / 'metrics.json', metrics)   # written last: the fold is finished
            gpu = f", peak GPU memory {metrics['gpu_peak_bytes'] / 2**30:.2f} GiB" if metrics['gpu_peak_bytes'] else ''
            print(f'{name}: best epoch {schedule.best_epoch}: {tables.format_headline(metrics)}{gpu}')
            print(f'{name}: training {cost.describe(training)}; test {cost.describe(test)}')
    return gather(workdir, run_ids) if summarize else None


def gather(workdir, run_ids):
    """Each run's metrics over its score files, the table over the runs -> results.json, results.md."""
    return evaluate.evaluate_runs(workdir, [Path(workdir) / config.RUNS_DIR / f'run{r}' for r in run_ids])


@experiment.command(workdir=True, flags={'--epochs': 'MAX_EPOCHS', '--loss': 'LOSS', '--precision': 'PRECISION',
                                        '--seed': 'SEED'})
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR,
                        help='holds features/ and metadata/ (extract_features.py); runs/ and results go here')
    parser.add_argument('--folds', type=int, nargs='+', choices=range(1, config.N_FOLDS + 1), metavar='K',
                        help=f'folds to train and test (default: all {config.N_FOLDS})')
    parser.add_argument('--runs', type=int, default=config.RUNS, help='independent runs; run r uses seed + r')
    parser.add_argument('--run', type=int, metavar='R',
                        help='run R alone (seed + R), its folds only: one job of a cluster array; gather with '
                             'evaluate.py --workdir')
    parser.add_argument('--jobs', type=int, default=1, metavar='N',
                        help='train N (run, fold) pairs at once as child processes (one GPU, several trainings)')
    parser.add_argument('--seed', type=int, default=config.SEED, help='--set SEED (default: %(default)s)')
    parser.add_argument('--epochs', type=int, default=config.MAX_EPOCHS,
                        help='--set MAX_EPOCHS: the decay and early-stop patience scale with it (0.3 E, 0.6 E)')
    parser.add_argument('--loss', choices=list(LOSSES), default=config.LOSS,
                        help="--set LOSS, a name of model.LOSSES: 'bce' on sigmoid(logits), or 'mse' on the raw "
                             'outputs as the published baseline (default: %(default)s)')
    parser.add_argument('--precision', choices=utils.CHECKS['PRECISION'].values, default=config.PRECISION,
                        help="--set PRECISION: 'float32' as the published baseline, 'bfloat16' the conv blocks in "
                             "bfloat16 (faster on a CPU or GPU with native bfloat16, other numbers), 'tf32' float32 "
                             'with TF32 on NVIDIA GPUs (default: %(default)s)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], help='default: cuda when available')
    parser.add_argument('--resume', action='store_true', help='skip finished folds, continue an unfinished one')
    parser.add_argument('--restart', action='store_true',
                        help='a run folder of other settings is removed and trained again (default: refused)')
    args = experiment.parse_args(parser, argv)
    loss_of(config.LOSS)                  # an unknown loss, refused before anything is read or written
    if args.resume and args.restart:
        parser.error('--resume continues a run, --restart removes it: give one of them')
    if args.runs < 1 or args.epochs < 1 or args.jobs < 1:
        parser.error('--runs, --epochs and --jobs must be at least 1')
    if args.run is not None and args.run < 0:
        parser.error('--run must be at least 0')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device visible to torch (a CPU-only build, or no GPU)')
    runtime.check_precision(config.PRECISION, args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    runtime.keep_freed_memory()
    run_ids = [args.run] if args.run is not None else list(range(args.runs))
    folds = args.folds or list(range(1, config.N_FOLDS + 1))
    if args.jobs > 1:
        runtime.run_jobs(Path(__file__).resolve(), args, run_ids, folds)
        gather(args.workdir, run_ids)
        return 0
    # --run R is one job of many (a cluster array, a child of --jobs): it writes its folds only; the gathering
    # (evaluate.py, or the --jobs parent) writes what belongs to a run or to the table
    run_experiment(args.workdir, folds, args.runs, args.seed, args.epochs, args.device, args.resume, args.loss,
                   run_ids, summarize=args.run is None, restart=args.restart, precision=args.precision)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
