"""Train and test the DCASE2023 Task 4B baseline: the CRNN per fold on soft labels, then the metrics (SPEC 5, 6).

    python extract_features.py --data-root DIR --workdir WD     # first: features, folds and metadata
    python task4b.py --workdir WD                               # 1 run of the 5 folds (config.RUNS)
    python task4b.py --workdir WD --runs 10                     # the published table: 10 runs, seeds 42..51
    python task4b.py --workdir WD --folds 1 3 --epochs 20       # a subset of folds, a shorter schedule
    python task4b.py --workdir WD --resume                      # continue a killed run where it stopped
    python task4b.py --workdir WD --runs 10 --jobs 4            # 4 (run, fold) trainings at once (e.g. one GPU)
    python task4b.py --workdir WD --run 3 --folds 2             # run 3 (seed 45), fold 2 only: one cluster job;
    python evaluate.py --workdir WD                             #   when all jobs are done, the table of every run

Started as a command, it re-executes itself once with tcmalloc preloaded (config.ALLOCATOR; freed memory kept
for reuse: faster training epochs, same numbers bit for bit), when the library is installed
(apt-get install -y libtcmalloc-minimal4); otherwise it says so and goes on with glibc's malloc.

For each run r (seed config.SEED + r) and fold k: Adam, mini-batches of 32 shuffled sequences, at most
config.MAX_EPOCHS epochs; after each epoch the validation loss (model selection, learning-rate decay, early
stop) and the validation segment F1/ER (for the log). The weights of the lowest validation loss then score
each test file of the fold, whole. Outputs (contract):

    WD/runs/run{r}/fold{k}/  checkpoint.pt (resume), best_model.pt, history.csv, learning_curves.png, metrics.json
    WD/runs/run{r}/scores/<stem>.tsv   frame scores of the 11 hard classes (sed_scores_eval format)
    WD/runs/run{r}/metrics.json        the metrics over every score file of the run
    WD/results.json, WD/results.md     every run's metrics, mean and std over runs, the table of SPEC 6

Every fold starts from the run's seed, so a fold trained alone (`--folds K`, e.g. one job of a cluster array)
gives the same scores as inside a full run; on the CPU the same seed gives identical scores.
A fold is finished when its metrics.json exists; `--resume` skips finished folds and continues an unfinished
one from the checkpoint of its last finished epoch (model, optimizer, schedule, history, random states), with
the same final scores as a run that was never interrupted. Without --resume a fold starts over (its earlier
checkpoint, best model and metrics are removed first). A run's metrics cover every score file in its scores/
folder, so folds trained by separate invocations (`--folds 1`, `--folds 2`, ...) add up to the run.
"""
import argparse
import copy
import csv
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path

# Before torch loads its OpenMP runtime (GNU libgomp in the CPU wheels): a waiting thread spins 1000 rounds,
# not 300,000, before it sleeps. Beside another busy torch process on 2 cores, the default made the 2 threads
# of a training step wait on each other: 14 s a step instead of 1.5 s (measured here); alone it changes
# nothing (0.8 s). OMP_WAIT_POLICY=PASSIVE also avoids the collapse but costs 13% alone. The environment wins.
os.environ.setdefault('GOMP_SPINCOUNT', '1000')

import utils  # noqa: E402  (light: config only)

if __name__ == '__main__':          # a command, not an import: start over with tcmalloc preloaded (config.ALLOCATOR)
    utils.reexec_with_allocator()   # before torch loads. Fold 1 full scale, epoch + validation: 5.3 -> 3.5 s, peak
                                    # 1.9 -> 1.5 GiB (python benchmark.py --allocator glibc tcmalloc)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import config  # noqa: E402
from data_generator import load_fold_tensors, sequence_batches, training_batches  # noqa: E402
from model import CRNN, build_model, scores_from_outputs, soft_label_loss  # noqa: E402
from utils import DataError  # noqa: E402



class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss): the message names the fold, epoch and batch."""


class StopRequested(Exception):
    """The hidden flag --stop-after-epochs ended the process early, as a kill would (tests of --resume)."""


# -----------------------------------------------------------------------------
# Schedule: model selection, learning-rate decay, early stop (SPEC 5)

class PlateauSchedule:
    """Model selection, learning-rate decay and early stop over the validation losses, counted as the
    reference code counts them (E = max_epochs):

    - best: the epoch of the lowest validation loss so far (strictly lower than every earlier one); a new best
      resets both counters to 0;
    - at the end of every epoch both counters are incremented; when the decay counter is > int(0.3 E) the
      learning rate is divided by config.LR_DECAY_FACTOR and that counter reset to 0;
    - when the stop counter is > int(0.6 E), training ends.
    With E = 150: one decay at best + 45, the stop after epoch best + 90.
    """

    def __init__(self, max_epochs):
        self.decay_patience = int(config.LR_DECAY_PATIENCE * max_epochs)
        self.stop_patience = int(config.EARLY_STOP_PATIENCE * max_epochs)
        self.best_loss = math.inf
        self.best_epoch = 0
        self.since_best = 0
        self.since_decay = 0

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


# -----------------------------------------------------------------------------
# Setup

def seed_everything(seed, device):
    """One seed for torch (weights, dropout), numpy and python random; deterministic kernels on the CPU."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if torch.device(device).type == 'cpu':
        torch.use_deterministic_algorithms(True)


def new_optimizer(model):
    return torch.optim.Adam(model.parameters(), lr=config.LEARNING_RATE, betas=config.ADAM_BETAS,
                            eps=config.ADAM_EPS, weight_decay=0.0)


# config values a checkpoint need not agree with to be resumed: places, and what only other scripts use
NOT_RESUME_SETTINGS = ('DEMO_', 'ZENODO_', '_ARCHIVES', 'FEATURE_JOBS', 'RUNS', 'PUBLISHED')


def settings(seed, epochs):
    """What a checkpoint must agree with to be resumed: the run's seed, the schedule, the config values."""
    values = {k: v for k, v in vars(config).items()
              if k.isupper() and not isinstance(v, Path) and not any(s in k for s in NOT_RESUME_SETTINGS)}
    return {'seed': seed, 'epochs': epochs, 'config': values}


def rng_states(generator):
    states = {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(), 'python': random.getstate(),
              'shuffle': generator.get_state()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states, generator):
    torch.set_rng_state(states['torch'])
    np.random.set_state(states['numpy'])
    random.setstate(states['python'])
    generator.set_state(states['shuffle'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


# -----------------------------------------------------------------------------
# One epoch, validation, test

def train_one_epoch(model, optimizer, X, Y, generator, loss_kind):
    """One pass over the shuffled training sequences -> the batch losses (tensor (batches,), not yet synced)."""
    model.train()
    losses = []
    for x, y in training_batches(X, Y, config.BATCH_SIZE, generator):   # (b, 200, 64), (b, 200, 17)
        optimizer.zero_grad(set_to_none=True)
        loss = soft_label_loss(model(x), y, loss_kind)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)            # one sync per epoch (the NaN check and the log), not one per batch


@torch.inference_mode()
def predict(model, X):
    """Sequences X (n, frames, 64) -> raw outputs (n, frames, 17), in eval mode, batch by batch, no autograd."""
    model.eval()
    return torch.cat([model(x) for x in sequence_batches(X, config.BATCH_SIZE)])


def validation_loss_and_scores(model, X_val, Y_val, loss_kind):
    """-> (validation loss over every frame and class, frame scores of the hard classes (n x 200, 11) numpy)."""
    outputs = predict(model, X_val)                 # (n, 200, 17)
    loss = float(soft_label_loss(outputs, Y_val, loss_kind))
    scores = scores_from_outputs(outputs, loss_kind)[..., config.HARD_INDEX]
    return loss, scores.reshape(-1, len(config.HARD_CLASSES)).float().cpu().numpy()


def validation_reference(val_hard):
    """Events of the validation hard labels (n x 200, 11), the validation sequences as one timeline."""
    import evaluate
    return evaluate.events_from_activity(val_hard, config.HARD_CLASSES, 'validation'), len(val_hard)


def validation_f1_er(scores, reference):
    """Segment-based F1 (percent) and ER (sed_eval, 1 s segments) of validation frame scores against the reference.

    For the log only (model selection uses the loss). The validation files are concatenated in the sequences,
    so they are evaluated as one timeline, as the reference code evaluated a fold.
    """
    import evaluate
    import sed_eval
    reference_events, n_frames = reference
    estimated = evaluate.post_process_events(scores, config.HARD_CLASSES, 'validation')
    metrics = sed_eval.sound_event.SegmentBasedMetrics(config.HARD_CLASSES, time_resolution=config.SEGMENT_LENGTH)
    metrics.evaluate(reference_events, estimated, evaluated_length_seconds=n_frames * config.FRAME_SECONDS)
    f1 = metrics.overall_f_measure()['f_measure']
    er = metrics.overall_error_rate()['error_rate']
    return 100 * float(np.nan_to_num(f1)), float(er)


@torch.inference_mode()
def write_test_scores(model, data, run_dir, loss_kind):
    """Each test file, whole, through the model -> run_dir/scores/<stem>.tsv (frames, 11 evaluated classes) and
    run_dir/scores_all_classes/<stem>.tsv (frames, 17)."""
    import evaluate
    model.eval()
    stems = []
    for file_id, x in zip(data['test_files'], data['X_test']):          # x (frames, 64)
        scores = scores_from_outputs(model(x.unsqueeze(0)), loss_kind)[0].float().cpu().numpy()   # (frames, 17)
        stem = utils.file_stem(file_id)
        evaluate.write_score_file(Path(run_dir) / 'scores' / f'{stem}.tsv', scores[:, config.HARD_INDEX])
        evaluate.write_score_file(Path(run_dir) / 'scores_all_classes' / f'{stem}.tsv', scores, config.CLASSES)
        stems.append(stem)
    return stems


# -----------------------------------------------------------------------------
# Records: checkpoint, history, learning curves

HISTORY_FIELDS = ['epoch', 'train_loss', 'val_loss', 'val_F1', 'val_ER', 'lr', 'seconds']


def save_torch_atomic(path, obj):
    utils.atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_history(path, history):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_FIELDS, lineterminator='\n')
    writer.writeheader()
    writer.writerows(history)
    utils.write_text_atomic(path, out.getvalue())


def plot_learning_curves(path, history, best_epoch, title):
    """PNG: train and validation loss, validation F1 and ER, learning rate over the epochs; the best epoch marked."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    epochs = [h['epoch'] for h in history]
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    axes[0].plot(epochs, [h['train_loss'] for h in history], label='train loss')
    axes[0].plot(epochs, [h['val_loss'] for h in history], label='validation loss')
    axes[0].set_ylabel(f'loss ({config.LOSS})')
    axes[1].plot(epochs, [h['val_F1'] for h in history], label='validation F1 (%)', color='tab:green')
    axes[1].set_ylabel('segment F1 (%)')
    er_axis = axes[1].twinx()
    er_axis.plot(epochs, [h['val_ER'] for h in history], label='validation ER', color='tab:red', alpha=0.6)
    er_axis.set_ylabel('segment ER')
    axes[2].plot(epochs, [h['lr'] for h in history], color='tab:purple')
    axes[2].set_yscale('log')
    axes[2].set_ylabel('learning rate')
    axes[2].set_xlabel('epoch')
    for ax in axes:
        ax.axvline(best_epoch, color='grey', linestyle=':', label=f'best epoch {best_epoch}')
    axes[0].legend()
    handles = axes[1].get_legend_handles_labels()[0] + er_axis.get_legend_handles_labels()[0]
    axes[1].legend(handles=handles, loc='best')
    fig.suptitle(title)
    fig.tight_layout()
    utils.atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=90))
    plt.close(fig)


# -----------------------------------------------------------------------------
# One fold: train with validation-based selection, keep the best weights

def train_fold(data, fold_dir, seed, epochs, device, resume=False, loss_kind=None, name='',
               stop_after=None):
    """Train on data['X_train'] with selection on data['X_val'] -> the model with the best weights loaded.

    Writes fold_dir/checkpoint.pt and history.csv after every epoch, learning_curves.png at the end.
    loss_kind: default config.LOSS. stop_after: a callable told after each checkpoint; it raises
    StopRequested to end the process.
    """
    loss_kind = loss_kind or config.LOSS
    fold_dir = Path(fold_dir)
    checkpoint_path = fold_dir / 'checkpoint.pt'
    seed_everything(seed, device)
    model = build_model(device)
    optimizer = new_optimizer(model)
    schedule = PlateauSchedule(epochs)
    generator = torch.Generator().manual_seed(seed)      # the shuffling order; its state is checkpointed
    run_settings = settings(seed, epochs)
    history, best_state, start_epoch, finished = [], None, 1, False

    if resume and checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location='cpu', weights_only=False)
        for key in ('seed', 'epochs'):
            if checkpoint['settings'][key] != run_settings[key]:
                raise DataError(f'{checkpoint_path}: trained with {key} {checkpoint["settings"][key]}, asked now '
                                f'{run_settings[key]}; resume with the same flags, or run without --resume')
        changed = utils.first_difference(checkpoint['settings']['config'], run_settings['config'])
        if changed:
            k, old, new = changed
            raise DataError(f'{checkpoint_path}: config.{k} was {old!r}, is now {new!r}; restore it, or run '
                            f'without --resume to start over')
        model.load_state_dict(checkpoint['model'])
        optimizer.load_state_dict(checkpoint['optimizer'])
        schedule.load_state_dict(checkpoint['schedule'])
        best_state = checkpoint['best_model']
        history = checkpoint['history']
        set_rng_states(checkpoint['rng'], generator)
        start_epoch, finished = checkpoint['epoch'] + 1, checkpoint['finished']

    reference = validation_reference(data['val_hard'])
    bar = tqdm(total=epochs, initial=start_epoch - 1, desc=name, unit='epoch', dynamic_ncols=True,
               disable=finished)
    epoch = start_epoch
    while not finished:
        start = time.perf_counter()
        lr = optimizer.param_groups[0]['lr']
        batch_losses = train_one_epoch(model, optimizer, data['X_train'], data['Y_train'], generator, loss_kind)
        bad = ~torch.isfinite(batch_losses)
        if bad.any():
            batch = int(bad.nonzero()[0, 0]) + 1
            raise TrainingError(f'{name}: training loss is {float(batch_losses[batch - 1])} at epoch {epoch}, batch '
                                f'{batch} of {len(batch_losses)}; check the features (NaN/inf in the inputs?) and '
                                f'the learning rate (config.LEARNING_RATE)')
        train_loss = float(batch_losses.mean())   # batches of equal weight (the last one may be smaller)
        val_loss, val_scores = validation_loss_and_scores(model, data['X_val'], data['Y_val'], loss_kind)
        if not math.isfinite(val_loss):
            raise TrainingError(f'{name}: validation loss is {val_loss} at epoch {epoch}')
        val_f1, val_er = validation_f1_er(val_scores, reference)

        improved, decay, stop = schedule.step(epoch, val_loss)
        if improved:
            best_state = copy.deepcopy(model.state_dict())
        if decay:
            for group in optimizer.param_groups:
                group['lr'] /= config.LR_DECAY_FACTOR
        finished = stop or epoch == epochs
        history.append({'epoch': epoch, 'train_loss': train_loss, 'val_loss': val_loss, 'val_F1': val_f1,
                        'val_ER': val_er, 'lr': lr, 'seconds': round(time.perf_counter() - start, 3)})

        # every epoch: the state to continue from, exactly (write then rename: a kill leaves the previous one)
        save_torch_atomic(checkpoint_path, {
            'epoch': epoch, 'finished': finished, 'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
            'schedule': schedule.state_dict(), 'best_model': best_state, 'best_epoch': schedule.best_epoch,
            'best_val_loss': schedule.best_loss, 'history': history, 'rng': rng_states(generator),
            'settings': run_settings})
        write_history(fold_dir / 'history.csv', history)
        bar.update(1)
        bar.set_postfix(train=f'{train_loss:.4f}', val=f'{val_loss:.4f}', F1=f'{val_f1:.1f}',
                        best=schedule.best_epoch, lr=f'{optimizer.param_groups[0]["lr"]:.0e}')
        if stop and epoch < epochs:
            tqdm.write(f'{name}: early stop at epoch {epoch}, {epoch - schedule.best_epoch} epochs after the best')
        if stop_after is not None:
            stop_after()
        epoch += 1
    bar.close()

    model.load_state_dict(best_state)
    plot_learning_curves(fold_dir / 'learning_curves.png', history, schedule.best_epoch, name)
    return model, schedule.best_epoch, schedule.best_loss


def save_best_model(path, model, data, loss_kind, best_epoch, best_loss):
    """best_model.pt (contract): the weights of the lowest validation loss and what inference needs with them."""
    import extract_features
    save_torch_atomic(path, {
        'model': {k: v.detach().cpu() for k, v in model.state_dict().items()},
        'mean': data['mean'], 'scale': data['scale'], 'feature_params': extract_features.feature_params(),
        'loss': loss_kind, 'classes': list(config.CLASSES), 'epoch': best_epoch, 'val_loss': best_loss})


# -----------------------------------------------------------------------------
# The experiment: runs x folds, then the metrics

def run_experiment(workdir, folds=None, runs=config.RUNS, seed=config.SEED, epochs=config.MAX_EPOCHS,
                   device=None, resume=False, loss_kind=None, stop_after_epochs=None, run_ids=None, summarize=True):
    """Train and test every (run, fold); write the fold, run and overall metrics -> the summary dict.

    run_ids: the runs to do (default range(runs)), e.g. [R] for one job of a cluster array. summarize=False:
    only the folds (a job of --jobs; the parent writes the run metrics and the summary) -> None.
    """
    loss_kind = loss_kind or config.LOSS
    import evaluate
    import torchinfo
    workdir = Path(workdir)
    folds = list(folds or range(1, config.N_FOLDS + 1))
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    print(torchinfo.summary(CRNN(), input_size=(config.BATCH_SIZE, config.SEQUENCE_LENGTH, config.N_MELS),
                            verbose=0, device='cpu'))
    print(f'workdir {workdir}, folds {folds}, runs {runs} (seeds {seed}..{seed + runs - 1}), at most {epochs} '
          f'epochs, loss {loss_kind}, device {device}')

    epochs_done = 0

    def count_epoch():                       # the hidden --stop-after-epochs: a kill at a chosen epoch end
        nonlocal epochs_done
        epochs_done += 1
        if stop_after_epochs is not None and epochs_done >= stop_after_epochs:
            raise StopRequested(f'stopped after {epochs_done} epochs (--stop-after-epochs); continue with --resume')

    run_ids = list(range(runs) if run_ids is None else run_ids)
    for r in run_ids:
        run_dir = workdir / config.RUNS_DIR / f'run{r}'
        scores_dir = run_dir / 'scores'
        for k in folds:
            fold_dir = run_dir / f'fold{k}'
            name = f'run {r} fold {k}'
            if resume and (fold_dir / 'metrics.json').is_file():
                print(f'{name}: finished before ({fold_dir / "metrics.json"}), skipped')
                continue
            if not resume:      # starting over: nothing of an earlier run of this fold may pass for this one's
                for stale in ('metrics.json', 'checkpoint.pt', 'best_model.pt'):
                    (fold_dir / stale).unlink(missing_ok=True)
            data = load_fold_tensors(workdir, k, device)
            utils.write_json_atomic(run_dir / 'settings.json', {'seed': seed + r, 'loss': loss_kind, 'epochs': epochs})
            print(f'{name}: {len(data["X_train"])} training and {len(data["X_val"])} validation sequences, '
                  f'{len(data["test_files"])} test files')
            model, best_epoch, best_loss = train_fold(data, fold_dir, seed + r, epochs, device, resume, loss_kind,
                                                      name, count_epoch)
            save_best_model(fold_dir / 'best_model.pt', model, data, loss_kind, best_epoch, best_loss)
            stems = write_test_scores(model, data, run_dir, loss_kind)
            metrics = evaluate.evaluate_scores(scores_dir, workdir, file_stems=stems)
            metrics['best_epoch'], metrics['best_val_loss'] = best_epoch, best_loss
            utils.write_json_atomic(fold_dir / 'metrics.json', metrics)   # written last: the fold is finished
            print(f'{name}: best epoch {best_epoch}: {evaluate.format_headline(metrics)}')

    if not summarize:
        return None
    summary = evaluate.evaluate_runs(workdir, [workdir / config.RUNS_DIR / f'run{r}' for r in run_ids])
    evaluate.write_results(workdir / 'results.json', summary)
    print(evaluate.results_table_markdown(summary))
    return summary


def run_jobs(args, jobs):
    """Train the (run, fold) pairs as `jobs` child processes at once (this script, --run R --folds K each, its
    output in runs/run{r}/fold{k}.log), then gather the run metrics and the summary as a sequential run would.

    For one GPU and several trainings, or a CPU with cores to spare; on the CPU each child gets cpu_count // jobs
    math threads (same arithmetic as a sequential run with that many threads).
    """
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    import evaluate
    workdir = Path(args.workdir)
    folds = args.folds or list(range(1, config.N_FOLDS + 1))
    run_ids = [args.run] if args.run is not None else list(range(args.runs))
    env = dict(os.environ)
    if args.device != 'cuda' and not torch.cuda.is_available():
        env.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // jobs)))

    def job(r, k):
        log = workdir / config.RUNS_DIR / f'run{r}' / f'fold{k}.log'
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(Path(__file__).resolve()), '--workdir', str(workdir), '--run', str(r),
                   '--folds', str(k), '--seed', str(args.seed), '--epochs', str(args.epochs), '--loss', args.loss]
        command += ['--device', args.device] if args.device else []
        command += ['--resume'] if args.resume else []
        with open(log, 'w') as out:
            rc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
        print(f'run {r} fold {k}: exit status {rc}, log {log}', flush=True)
        return rc

    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(lambda rk: job(*rk), [(r, k) for r in run_ids for k in folds]))
    if any(codes):
        print(f'error: {sum(c != 0 for c in codes)} of {len(codes)} jobs failed; see their logs', file=sys.stderr)
        return max(codes)
    summary = evaluate.evaluate_runs(workdir, [workdir / config.RUNS_DIR / f'run{r}' for r in run_ids])
    evaluate.write_results(workdir / 'results.json', summary)
    print(evaluate.results_table_markdown(summary))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR,
                        help='holds features/ and metadata/ (extract_features.py); runs/ and results go here')
    parser.add_argument('--folds', type=int, nargs='+', choices=range(1, config.N_FOLDS + 1), metavar='K',
                        help=f'folds to train and test (default: all {config.N_FOLDS})')
    parser.add_argument('--runs', type=int, default=config.RUNS, help='independent runs; run r uses seed + r')
    parser.add_argument('--run', type=int, metavar='R',
                        help='run R alone (seed + R): one job of a cluster array; gather with evaluate.py --workdir')
    parser.add_argument('--jobs', type=int, default=1, metavar='N',
                        help='train N (run, fold) pairs at once as child processes (one GPU, several trainings)')
    parser.add_argument('--seed', type=int, default=config.SEED)
    parser.add_argument('--epochs', type=int, default=config.MAX_EPOCHS,
                        help='maximum epochs; the decay and early-stop patience scale with it (0.3 E, 0.6 E)')
    parser.add_argument('--loss', choices=['bce', 'mse'], default=config.LOSS,
                        help="'bce' on sigmoid(logits), or 'mse' on the raw outputs as the published baseline "
                             '(default: config.LOSS = %(default)s)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], help='default: cuda when available')
    parser.add_argument('--resume', action='store_true', help='skip finished folds, continue an unfinished one')
    parser.add_argument('--stop-after-epochs', type=int, help=argparse.SUPPRESS)   # tests: a kill after N epochs
    args = parser.parse_args(argv)
    if args.runs < 1 or args.epochs < 1 or args.jobs < 1:
        parser.error('--runs, --epochs and --jobs must be at least 1')
    if args.run is not None and args.run < 0:
        parser.error('--run must be at least 0')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device visible to torch (a CPU-only build, or no GPU)')
    try:
        if args.jobs > 1:
            return run_jobs(args, args.jobs)
        # --run R is one job of many (a cluster array, a child of --jobs): it writes its folds only; the gathering
        # (evaluate.py, or the --jobs parent) writes what belongs to a run or to the table
        run_experiment(args.workdir, args.folds, args.runs, args.seed, args.epochs, args.device, args.resume,
                       args.loss, stop_after_epochs=args.stop_after_epochs,
                       run_ids=None if args.run is None else [args.run], summarize=args.run is None)
    except DataError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    except TrainingError as error:
        print(f'error: {error}', file=sys.stderr)
        return 3
    except StopRequested as error:
        print(str(error), file=sys.stderr)
        return 75
    return 0


if __name__ == '__main__':
    sys.exit(main())
