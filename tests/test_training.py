"""Training per fold (docs/method.md, Training): batches, the decay and early-stop counters, errors, and task4b.py end to end."""
import copy
import csv
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import config
import cost
import data_generator
import evaluate
import runtime
import score_io
import task4b
from model import build_model
import utils
from helpers import SMALL, SMALL_NETWORK, copy_workdir, score_files


# -----------------------------------------------------------------------------
# Batches

def test_training_batches_give_every_sequence_once_per_epoch_in_a_seeded_order():
    X = torch.arange(10.0).reshape(10, 1, 1).expand(10, 3, 2).contiguous()   # sequence i holds the value i
    Y = X[..., :1] * 2
    generator = torch.Generator().manual_seed(0)
    epoch1 = list(data_generator.training_batches(X, Y, 4, generator))
    epoch2 = list(data_generator.training_batches(X, Y, 4, generator))
    assert [len(x) for x, _ in epoch1] == [4, 4, 2]                    # the remainder is the last batch
    order1 = torch.cat([x[:, 0, 0] for x, _ in epoch1])
    order2 = torch.cat([x[:, 0, 0] for x, _ in epoch2])
    assert sorted(order1.tolist()) == list(range(10)) and sorted(order2.tolist()) == list(range(10))
    assert not torch.equal(order1, order2)                               # shuffled again every epoch
    assert all(torch.equal(y, x[..., :1] * 2) for x, y in epoch1)         # inputs and targets stay paired
    again = torch.cat([x[:, 0, 0] for x, _ in data_generator.training_batches(X, Y, 4, torch.Generator().manual_seed(0))])
    assert torch.equal(again, order1)                                    # the generator's seed fixes the order


# -----------------------------------------------------------------------------
# Learning-rate decay and early stop, on scripted validation losses

def run_schedule(max_epochs, losses):
    schedule = task4b.PlateauSchedule(max_epochs)
    events = [schedule.step(epoch, loss) for epoch, loss in enumerate(losses, start=1)]
    improved = [e for e, (i, _, _) in enumerate(events, start=1) if i]
    decays = [e for e, (_, d, _) in enumerate(events, start=1) if d]
    stops = [e for e, (_, _, s) in enumerate(events, start=1) if s]
    return schedule, improved, decays, stops


def test_schedule_of_150_epochs_decays_once_at_best_plus_45_and_stops_after_best_plus_90():
    # best at epoch 10; both counters reset there, incremented after every epoch: decay when > int(0.3 x 150)
    # = 45 (epoch 55), stop when > int(0.6 x 150) = 90 (epoch 100); the decay counter, reset at 55, is 45 at 100
    losses = [1.0 - 0.01 * e for e in range(10)] + [2.0] * 90
    _, improved, decays, stops = run_schedule(150, losses)
    assert improved == list(range(1, 11))
    assert decays == [55]
    assert stops == [100]


def test_schedule_of_7_epochs_truncates_the_patience_with_int():
    # int(0.3 x 7) = 2, int(0.6 x 7) = 4: decay when 3 epochs have passed without a new best (then 3 more),
    # stop after the 5th; a new best at epoch 3 resets both counters
    _, improved, decays, stops = run_schedule(7, [1.0, 1.1, 0.9, 1.0, 1.0, 1.0, 1.0])
    assert improved == [1, 3]
    assert decays == [5]
    assert stops == [7]
    _, improved, decays, stops = run_schedule(7, [1.0] + [2.0] * 4)
    assert decays == [3] and stops == [5]


def test_schedule_equal_loss_is_not_a_new_best():
    _, improved, _, _ = run_schedule(150, [1.0, 1.0, 0.5])
    assert improved == [1, 3]


def test_schedule_state_round_trips_through_its_state_dict():
    schedule, _, _, _ = run_schedule(10, [1.0, 0.9, 0.95, 0.95, 0.95])
    copy = task4b.PlateauSchedule(10)
    copy.load_state_dict(schedule.state_dict())
    assert copy.step(6, 0.97) == schedule.step(6, 0.97)
    assert vars(copy) == vars(schedule)


# -----------------------------------------------------------------------------
# Errors for people

def synthetic_fold(n_train=6, frames=20, seed=0):
    """A fold dict with load_fold's keys, small random data (no audio)."""
    rng = np.random.default_rng(seed)
    n_classes = len(config.CLASSES)

    def part(n):
        return (rng.standard_normal((n, frames, config.N_MELS)).astype(np.float32),
                rng.uniform(0, 1, (n, frames, n_classes)).astype(np.float32))
    X_train, Y_train = part(n_train)
    X_val, Y_val = part(2)
    X_test, Y_test = part(2)
    return {'X_train': X_train, 'Y_train': Y_train, 'X_val': X_val, 'Y_val': Y_val,
            'test_files': ['cafe_restaurant/cafe_restaurant_00', 'city_center/city_center_02'],
            'X_test': list(X_test), 'Y_test': list(Y_test),
            'mean': np.zeros(config.N_MELS, np.float32), 'scale': np.ones(config.N_MELS, np.float32)}


def test_nan_loss_stops_the_fold_naming_the_epoch_and_the_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(config, 'BATCH_SIZE', 2)
    fold = synthetic_fold(n_train=6)
    fold['X_train'][4, 3, 5] = np.nan                                   # one value of sequence 4
    seed = 3
    order = torch.randperm(6, generator=torch.Generator().manual_seed(seed))   # the first epoch's order
    batch = int((order == 4).nonzero()[0, 0]) // 2 + 1
    data = data_generator.fold_tensors(fold)
    with pytest.raises(task4b.TrainingError, match=rf'epoch 1, batch {batch} of 3'):
        task4b.train_fold(data, tmp_path / 'fold1', seed, epochs=2, device='cpu', loss_kind='bce', name='fold 1')


def test_workdir_without_features_says_to_run_extract_features(tmp_path, capsys):
    assert task4b.main(['--workdir', str(tmp_path), '--folds', '1', '--epochs', '1', '--device', 'cpu']) == 2
    assert 'python extract_features.py --data-root' in capsys.readouterr().err


def test_features_of_other_parameters_are_refused_naming_the_parameter(demo_workdir, monkeypatch, capsys):
    monkeypatch.setattr(config, 'FMAX', config.FMAX - 1000)
    assert task4b.main(['--workdir', str(demo_workdir), '--folds', '1', '--epochs', '1', '--device', 'cpu']) == 2
    err = capsys.readouterr().err
    assert 'fmax' in err and 'extract_features.py' in err
    assert not (demo_workdir / config.RUNS_DIR).exists()


# -----------------------------------------------------------------------------
# End to end on the demo data set

def history_without_seconds(path):
    return [line.rsplit(',', 1)[0] for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_training_writes_scores_results_history_curves_and_learns(demo_workdir, tmp_path, monkeypatch):
    # Batches of 4: the demo fold has 16 training sequences, so 4 updates per epoch instead of 1 and the
    # model learns in 25 epochs (the schedule, loss and optimiser are the real ones). The CRNN is 32 filters and 16
    # GRU units wide, a third of the time of config.py's 128 and 32 and as clear a result (measured on this fold:
    # F1_m 69% against 12% untrained; 86% against 16% at full width).
    monkeypatch.setattr(config, 'BATCH_SIZE', 4)
    monkeypatch.setattr(config, 'CONV_CHANNELS', 32)
    monkeypatch.setattr(config, 'GRU_UNITS', 16)
    workdir = copy_workdir(demo_workdir, tmp_path / 'wd')
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '--epochs', '25', '--device', 'cpu']) == 0

    run_dir = workdir / config.RUNS_DIR / 'run0'
    fold_dir = run_dir / 'fold1'
    test_ids = utils.read_fold(1)['test']
    assert sorted(score_files(workdir)) == sorted(f'{utils.file_stem(i)}.tsv' for i in test_ids)
    history = (fold_dir / 'history.csv').read_text().splitlines()
    assert history[0] == 'epoch,train_loss,val_loss,val_F1,val_ER,lr,seconds' and len(history) == 1 + 25
    assert (fold_dir / 'learning_curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    best = torch.load(fold_dir / 'best_model.pt', weights_only=True)
    assert {'model', 'mean', 'scale', 'feature_params', 'loss'} <= set(best)
    fold_metrics = json.loads((fold_dir / 'metrics.json').read_text())
    assert fold_metrics['n_files'] == len(test_ids)
    assert json.loads((run_dir / 'metrics.json').read_text())['n_files'] == len(test_ids)
    results = json.loads((workdir / 'results.json').read_text())
    assert results['n_runs'] == 1
    for key in ('ER_m', 'F1_m', 'F1_M', 'F1_thop'):
        assert key in results['mean'] and key in results['std'] and key in results['runs'][0]
    assert set(results['runs'][0]['class_wise']) == set(config.HARD_CLASSES)
    assert 'F' in results['runs'][0]['class_wise']['car']
    assert (workdir / 'results.md').read_text().startswith('| System |')

    # It learned: the trained model beats the same network untrained on the fold's test files.
    runtime.seed_everything(config.SEED, 'cpu')
    untrained = build_model('cpu')
    data = data_generator.load_fold_tensors(workdir, 1)
    untrained_dir = tmp_path / 'untrained_scores'
    stems = task4b.write_test_scores(untrained, data, untrained_dir, config.LOSS)
    untrained_f1 = evaluate.evaluate_scores(untrained_dir / 'scores', workdir, file_stems=stems)['F1_m']
    assert fold_metrics['F1_m'] > untrained_f1 + 15, (fold_metrics['F1_m'], untrained_f1)


ARGS = ['--folds', '1', '2', '--epochs', '2', '--seed', '7', '--device', 'cpu'] + SMALL


@pytest.fixture(scope='module')
def straight_run(demo_workdir, tmp_path_factory):
    """Folds 1 and 2, 2 epochs each of the small CRNN, never interrupted."""
    workdir = copy_workdir(demo_workdir, tmp_path_factory.mktemp('straight'))
    assert task4b.main(['--workdir', str(workdir)] + ARGS) == 0
    return workdir


@pytest.mark.slow
def test_same_seed_gives_identical_scores_also_with_the_folds_trained_separately(straight_run, demo_workdir, tmp_path):
    workdir = copy_workdir(demo_workdir, tmp_path / 'again')
    fold_1, fold_2, rest = ARGS[:2], ARGS[2:3], ARGS[3:]          # ['--folds', '1'], ['2'], the other flags
    assert task4b.main(['--workdir', str(workdir), '--folds'] + fold_2 + rest) == 0
    assert task4b.main(['--workdir', str(workdir)] + fold_1 + rest) == 0
    assert score_files(workdir) == score_files(straight_run)
    assert json.loads((workdir / 'results.json').read_text())['mean'] == \
        json.loads((straight_run / 'results.json').read_text())['mean']
    assert len(score_files(workdir)) == len(utils.read_fold(1)['test']) + len(utils.read_fold(2)['test'])


def training_rows(fold_dir):
    """The kWh of CodeCarbon's rows of a fold's training in its emissions.csv, in order: one per stretch between
    checkpoints, and the last one's of each process."""
    with open(fold_dir / cost.TRACKER_FILE) as f:
        return [float(row['energy_consumed']) for row in csv.DictReader(f) if row['project_name'].endswith('training')]


def kill_after_checkpoints(monkeypatch, n):
    """Stop the process as a kill would, right after the n-th checkpoint is written."""
    real, written = runtime.save_checkpoint, []

    def save_then_die(*args):
        real(*args)
        written.append(1)
        if len(written) == n:
            raise KeyboardInterrupt
    monkeypatch.setattr(runtime, 'save_checkpoint', save_then_die)


@pytest.mark.slow
def test_interrupted_and_resumed_run_gives_the_scores_of_an_uninterrupted_one(straight_run, demo_workdir, tmp_path,
                                                                              monkeypatch):
    workdir = copy_workdir(demo_workdir, tmp_path / 'resumed')
    run_dir = workdir / config.RUNS_DIR / 'run0'
    # killed after the last epoch of fold 1, before its test files were scored
    with monkeypatch.context() as patch:
        kill_after_checkpoints(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            task4b.main(['--workdir', str(workdir)] + ARGS)
    checkpoint = torch.load(run_dir / 'fold1' / 'checkpoint.pt', weights_only=True)
    assert checkpoint['epoch'] == 2 and checkpoint['finished']
    carried = {'fold1': checkpoint['cost']}          # the time and energy of its 2 epochs (cost.py)
    killed_rows = {'fold1': len(training_rows(run_dir / 'fold1'))}
    assert not (run_dir / 'fold1' / 'metrics.json').exists() and not score_files(workdir)

    # resumed: fold 1 is tested without training again; killed again after epoch 1 of fold 2
    with monkeypatch.context() as patch:
        kill_after_checkpoints(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            task4b.main(['--workdir', str(workdir), '--resume'] + ARGS)
    fold1_metrics = run_dir / 'fold1' / 'metrics.json'
    finished_at = fold1_metrics.stat().st_mtime_ns
    checkpoint = torch.load(run_dir / 'fold2' / 'checkpoint.pt', weights_only=True)
    assert checkpoint['epoch'] == 1 and not checkpoint['finished']
    carried['fold2'] = checkpoint['cost']
    killed_rows['fold2'] = len(training_rows(run_dir / 'fold2'))
    assert not (workdir / 'results.json').exists()

    # another schedule is not resumed silently
    changed = ['--workdir', str(workdir), '--resume'] + ARGS[:ARGS.index('--epochs')] + ['--epochs', '3'] + ARGS[ARGS.index('--seed'):]
    assert task4b.main(changed) == 2

    assert task4b.main(['--workdir', str(workdir), '--resume'] + ARGS) == 0
    assert fold1_metrics.stat().st_mtime_ns == finished_at                  # the finished fold was not redone
    assert score_files(workdir) == score_files(straight_run)
    for fold in ('fold1', 'fold2'):
        assert (history_without_seconds(run_dir / fold / 'history.csv')
                == history_without_seconds(straight_run / config.RUNS_DIR / 'run0' / fold / 'history.csv'))
    assert json.loads((workdir / 'results.json').read_text())['mean'] == \
        json.loads((straight_run / 'results.json').read_text())['mean']
    # each fold's training cost is its checkpoint's and the resuming process's, added: CodeCarbon's rows of the
    # killed process up to its last checkpoint, then those of the resuming one; not the killed one's last stretch
    for fold, before in carried.items():
        spent = json.loads((run_dir / fold / 'metrics.json').read_text())['cost']['training']
        assert spent['processes'] == 2 and spent['seconds'] > before['seconds'] > 0
        assert before['kWh'] > 0 and spent['kWh'] > before['kWh']
        rows, killed = training_rows(run_dir / fold), killed_rows[fold]
        assert before['kWh'] == pytest.approx(sum(rows[:killed - 1]))
        assert spent['kWh'] == pytest.approx(sum(rows[:killed - 1]) + sum(rows[killed:]))


# -----------------------------------------------------------------------------
# Selection, decay and stop inside the training loop (scripted validation losses, real training)

def train_with_scripted_losses(tmp_path, monkeypatch, losses, epochs):
    """train_fold on a small synthetic fold whose validation losses are `losses`; the model weights saved in
    each epoch's checkpoint are kept -> (model, schedule, weights per epoch, the last checkpoint)."""
    real_validate, scripted = task4b.validate, iter(losses)
    monkeypatch.setattr(task4b, 'validate', lambda *args: (next(scripted),) + real_validate(*args)[1:])
    real_save, weights = runtime.save_checkpoint, []

    def keep_weights(path, state, *rest):
        weights.append(copy.deepcopy(state['model']))
        real_save(path, state, *rest)
    monkeypatch.setattr(runtime, 'save_checkpoint', keep_weights)
    data = data_generator.fold_tensors(synthetic_fold())
    model, schedule = task4b.train_fold(data, tmp_path / 'fold1', 0, epochs, 'cpu', 'bce')
    return model, schedule, weights, torch.load(tmp_path / 'fold1' / 'checkpoint.pt', weights_only=True)


def test_the_returned_model_holds_the_weights_of_the_lowest_validation_loss(tmp_path, monkeypatch):
    model, schedule, weights, _ = train_with_scripted_losses(tmp_path, monkeypatch, [0.5, 0.3, 0.9, 0.8], 4)
    assert schedule.best_epoch == 2
    state = model.state_dict()
    assert all(torch.equal(state[k], weights[1][k]) for k in state)                    # epoch 2's weights
    assert not all(torch.equal(state[k], weights[3][k]) for k in state)                # not the last epoch's


def test_the_learning_rate_is_divided_in_the_optimizer_at_the_decay_epoch(tmp_path, monkeypatch):
    # E = 7: decay when more than int(2.1) = 2 epochs passed without a new best -> after epoch 3
    _, _, _, checkpoint = train_with_scripted_losses(tmp_path, monkeypatch, [1.0, 2.0, 2.0, 2.0, 2.0], 7)
    history = pd.read_csv(tmp_path / 'fold1' / 'history.csv')
    lr = config.LEARNING_RATE
    assert history['lr'].tolist() == [lr, lr, lr, lr / 10, lr / 10]                 # the rate each epoch ran with
    assert checkpoint['optimizer']['param_groups'][0]['lr'] == pytest.approx(lr / 10)


def test_early_stopping_ends_the_training_loop_at_its_epoch(tmp_path, monkeypatch):
    # E = 7: stop when more than int(4.2) = 4 epochs passed since the best (epoch 1) -> after epoch 5 of 7
    _, schedule, weights, checkpoint = train_with_scripted_losses(tmp_path, monkeypatch, [1.0] + [2.0] * 6, 7)
    assert len(weights) == 5 and checkpoint['epoch'] == 5 and checkpoint['finished']
    assert len(pd.read_csv(tmp_path / 'fold1' / 'history.csv')) == 5


def test_mse_option_trains_and_scores_are_the_raw_outputs(tmp_path):
    data = data_generator.fold_tensors(synthetic_fold())
    model, _ = task4b.train_fold(data, tmp_path / 'fold1', 0, epochs=1, device='cpu', loss_kind='mse')
    stems = task4b.write_test_scores(model, data, tmp_path, 'mse')
    written = score_io.read_score_files(tmp_path / 'scores')[stems[0]][config.HARD_CLASSES].to_numpy()
    all_classes = pd.read_csv(tmp_path / 'scores_all_classes' / f'{stems[0]}.tsv', sep='\t')
    with torch.inference_mode():
        outputs = model(data['X_test'][0].unsqueeze(0))[0].numpy()                # (frames, 17)
    np.testing.assert_allclose(written, outputs[:, config.HARD_INDEX], rtol=1e-6, atol=1e-7)
    assert list(all_classes.columns) == ['onset', 'offset'] + config.CLASSES
    np.testing.assert_allclose(all_classes[config.CLASSES].to_numpy(), outputs, rtol=1e-6, atol=1e-7)



# -----------------------------------------------------------------------------
# The output layer's bias starts at the class priors (bce); torch's initialisation otherwise

def initial_weights(monkeypatch, fold_dir, data, loss_kind, bias_init, seed=5):
    """The network's weights as train_fold hands them to the optimizer, before the first step (one epoch runs)."""
    monkeypatch.setattr(config, 'OUTPUT_BIAS_INIT', bias_init)
    real_optimizer, initial = task4b.new_optimizer, {}

    def keep_initial(model):
        initial.update(copy.deepcopy(model.state_dict()))
        return real_optimizer(model)
    with monkeypatch.context() as patch:
        patch.setattr(task4b, 'new_optimizer', keep_initial)
        task4b.train_fold(data, fold_dir, seed, 1, 'cpu', loss_kind)
    return initial


def torch_initialisation(seed=5):
    runtime.seed_everything(seed, 'cpu')
    return build_model('cpu').state_dict()


def test_bce_output_bias_starts_at_the_logit_of_each_class_mean_soft_target(demo_workdir, tmp_path, monkeypatch):
    import extract_features
    fold = extract_features.load_fold(demo_workdir, 1)
    prior = np.asarray(fold['Y_train'], dtype=np.float64).mean(axis=(0, 1))                 # (17,) over every frame
    clipped = np.clip(prior, config.OUTPUT_BIAS_CLIP, 1 - config.OUTPUT_BIAS_CLIP)
    initial = initial_weights(monkeypatch, tmp_path / 'f', data_generator.fold_tensors(fold), 'bce', 'prior')
    np.testing.assert_allclose(initial['dense2.bias'].numpy(), np.log(clipped / (1 - clipped)), rtol=1e-6)
    reference = torch_initialisation()
    assert not torch.equal(initial['dense2.bias'], reference['dense2.bias'])
    assert all(torch.equal(initial[k], reference[k]) for k in reference if k != 'dense2.bias')


def test_a_class_never_or_always_active_gets_the_clipped_finite_bias(tmp_path, monkeypatch):
    fold = synthetic_fold()
    fold['Y_train'][..., 0] = 0.0                      # never active in the training frames
    fold['Y_train'][..., 1] = 1.0                      # always active
    bias = initial_weights(monkeypatch, tmp_path / 'f', data_generator.fold_tensors(fold), 'bce', 'prior')['dense2.bias']
    edge = math.log(config.OUTPUT_BIAS_CLIP / (1 - config.OUTPUT_BIAS_CLIP))
    assert bias[0].item() == pytest.approx(edge, rel=1e-6) and bias[1].item() == pytest.approx(-edge, rel=1e-6)


def test_torch_option_and_mse_keep_torch_initialisation_exactly(tmp_path, monkeypatch):
    data = data_generator.fold_tensors(synthetic_fold())
    reference = torch_initialisation()
    for loss_kind, bias_init in (('bce', 'torch'), ('mse', 'prior'), ('mse', 'torch')):
        initial = initial_weights(monkeypatch, tmp_path / f'{loss_kind}_{bias_init}', data, loss_kind, bias_init)
        assert all(torch.equal(initial[k], reference[k]) for k in reference), (loss_kind, bias_init)


@pytest.mark.slow
def test_mse_scores_do_not_depend_on_output_bias_init_and_the_runs_combine(demo_workdir, tmp_path, monkeypatch):
    args = ['--folds', '1', '--epochs', '3', '--loss', 'mse', '--device', 'cpu'] + SMALL
    scores, records = [], []
    for bias_init in ('prior', 'torch'):
        monkeypatch.setattr(config, 'OUTPUT_BIAS_INIT', bias_init)
        workdir = copy_workdir(demo_workdir, tmp_path / bias_init)
        assert task4b.main(['--workdir', str(workdir)] + args) == 0
        scores.append(score_files(workdir))
        records.append(json.loads((workdir / config.RUNS_DIR / 'run0' / 'settings.json').read_text())['record_id'])
    assert scores[0] == scores[1] and len(scores[0]) == len(utils.read_fold(1)['test'])
    assert records[0] == records[1]                        # one kind of run: never refused as other settings


@pytest.mark.slow
def test_prior_bias_reaches_a_lower_validation_loss_than_torch_initialisation_in_20_epochs(demo_workdir, tmp_path,
                                                                                          monkeypatch):
    data = data_generator.load_fold_tensors(demo_workdir, 1)           # one batch of 32 per epoch: 20 steps
    for name, value in SMALL_NETWORK.items():      # the small CRNN: the two runs differ in the output bias alone
        monkeypatch.setattr(config, name, value)
    best = {}
    for bias_init in ('prior', 'torch'):
        monkeypatch.setattr(config, 'OUTPUT_BIAS_INIT', bias_init)
        _, schedule = task4b.train_fold(data, tmp_path / bias_init, config.SEED, 20, 'cpu', 'bce')
        best[bias_init] = schedule.best_loss
    assert best['prior'] < best['torch'], best
