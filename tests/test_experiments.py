"""Experiments (experiment.py): an idea as --set or an experiment file, a workdir that keeps it, and runs of other
code than the run's own never combined, continued or resumed."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import compare
import config
import evaluate
import experiment
import task4b
import utils
from helpers import SMALL, copy_workdir, score_files

REPO = Path(__file__).resolve().parent.parent
EPOCH = ['--folds', '1', '--epochs', '1', '--device', 'cpu']


def recorded(workdir, run=0):
    return json.loads((Path(workdir) / config.RUNS_DIR / f'run{run}' / 'settings.json').read_text())


def recorded_config(workdir, run=0):
    return recorded(workdir, run)['record']['training']['config']


# -----------------------------------------------------------------------------
# --set and experiment files

@pytest.fixture(scope='module')
def default_run(demo_workdir, tmp_path_factory):
    workdir = copy_workdir(demo_workdir, tmp_path_factory.mktemp('default'))
    assert task4b.main(['--workdir', str(workdir)] + EPOCH) == 0
    return workdir


def test_set_and_an_experiment_file_change_the_recorded_value_and_the_scores_not_config_py(default_run, demo_workdir,
                                                                                            tmp_path):
    config_py = (REPO / 'config.py').read_bytes()
    by_set = copy_workdir(demo_workdir, tmp_path / 'set')
    assert task4b.main(['--workdir', str(by_set), '--set', 'LEARNING_RATE=0.01'] + EPOCH) == 0
    experiment_file = tmp_path / 'faster.py'
    experiment_file.write_text('"""A larger step."""\nLEARNING_RATE = 10 * LEARNING_RATE   # from config.py\'s\n')
    by_file = copy_workdir(demo_workdir, tmp_path / 'file')
    assert task4b.main(['--workdir', str(by_file), '--config', str(experiment_file)] + EPOCH) == 0

    assert recorded_config(default_run)['LEARNING_RATE'] == 0.001
    assert recorded_config(default_run)['CHANNELS_LAST'] is True             # rounds otherwise: recorded
    assert 'runtime.py' in recorded(default_run)['record']['training']['code']   # the RNG restore, TF32
    assert recorded_config(by_set)['LEARNING_RATE'] == recorded_config(by_file)['LEARNING_RATE'] == 0.01
    assert score_files(by_set) == score_files(by_file) != score_files(default_run)
    assert recorded(by_file)['experiment'] == {'settings': {'LEARNING_RATE': 0.01, 'MAX_EPOCHS': 1},
                                               'sources': [f'--config {experiment_file}', '--epochs 1']}
    assert (REPO / 'config.py').read_bytes() == config_py and config.LEARNING_RATE == 0.001


@pytest.mark.parametrize('argv, message', [
    (['--set', 'LEARNIG_RATE=0.01'], 'error: --set LEARNIG_RATE=0.01: config.py has no setting LEARNIG_RATE; did you '
                                     'mean LEARNING_RATE?\n'),
    (['--set', 'BATCH_SIZE=1.5'], 'error: --set BATCH_SIZE=1.5: expected an integer, as config.BATCH_SIZE = 32\n'),
    (['--set', 'LOG_MEL=yes'], "error: --set LOG_MEL=yes: expected True or False, as config.LOG_MEL = False\n"),
    (['--set', 'POOL_SIZES=[5, 2.5, 2]'], 'error: config.POOL_SIZES = [5, 2.5, 2]: expected a list of items, each an '
                                          'integer of at least 1; set by --set POOL_SIZES=[5, 2.5, 2]\n'),
    (['--epochs', 'ten'], "error: --epochs ten: expected an integer, as config.MAX_EPOCHS = 150\n"),
    (['--set', 'LEARNING_RATE'], 'error: --set LEARNING_RATE: expected NAME=VALUE, e.g. --set LEARNING_RATE=0.003\n'),
    (['--set', 'HARD_INDEX=[0]'], 'error: --set HARD_INDEX=[0]: HARD_INDEX is derived (from CLASSES and HARD_CLASSES, '
                                  'or HOP_LENGTH and SAMPLE_RATE); set those instead\n'),
    (['--set', 'BATCH_SIZE=0'], 'error: config.BATCH_SIZE = 0: expected an integer of at least 1; set by --set '
                                'BATCH_SIZE=0\n'),
], ids=['typo', 'int', 'bool', 'list', 'flag', 'no value', 'derived', 'checked'])
def test_a_wrong_setting_is_one_line_naming_it(argv, message, tmp_path, capsys):
    assert task4b.main(['--workdir', str(tmp_path)] + argv + EPOCH) == 2
    assert capsys.readouterr().err == message
    assert not any(tmp_path.iterdir())


def test_an_experiment_file_with_a_typo_or_a_wrong_type_is_one_line_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / 'bad.py'
    for text, message in [
        ('LOSS = "mse"\nLERNING_RATE = 0.01\n', f'error: {bad}, line 2: config.py has no setting LERNING_RATE; did '
                                                f'you mean LEARNING_RATE?\n'),
        ('BATCH_SIZE = "16"\n', f"error: {bad}, line 1: BATCH_SIZE = '16': expected an integer, as "
                                f"config.BATCH_SIZE = 32\n"),
        ('import nothing_here\n', f"error: {bad}: ModuleNotFoundError: No module named 'nothing_here'\n"),
        ('import config\nconfig.BATCH_SIZE = 16\n', f'error: {bad}: writes config.BATCH_SIZE, which no record would '
                                                   f'see; assign BATCH_SIZE = ... in the file instead\n'),
    ]:
        bad.write_text(text)
        assert evaluate.main(['--workdir', str(tmp_path), '--config', str(bad)]) == 2
        assert capsys.readouterr().err == message
    assert config.BATCH_SIZE == 32


def test_an_experiment_file_that_imports_a_setting_gives_it(tmp_path):
    imports = tmp_path / 'imports.py'
    imports.write_text('from experiments.hard_targets import TARGETS\nfrom experiments.log_mel import *\n')
    assert experiment.read_experiment_file(imports) == {'TARGETS': 'hard', 'LOG_MEL': True}
    with experiment.for_command(['--config', str(imports)]):
        assert (config.TARGETS, config.LOG_MEL) == ('hard', True)
    assert (config.TARGETS, config.LOG_MEL) == ('soft', False)


def test_derived_values_follow_the_settings_they_come_from_and_come_back_after_the_command(tmp_path):
    hard = ['car', 'footsteps', 'metro leaving']
    with experiment.for_command(['--set', f'HARD_CLASSES={hard}', '--set', 'HOP_LENGTH=4410']):
        assert config.HARD_CLASSES == hard
        assert config.HARD_INDEX == [config.CLASSES.index(c) for c in hard] == [1, 3, 12]
        assert config.FRAME_SECONDS == 0.1
    assert len(config.HARD_INDEX) == 11 and config.FRAME_SECONDS == 0.2


def test_strings_need_no_quotes_and_numbers_of_a_float_may_be_integers():
    with experiment.for_command(['--set', 'LOSS=mse', '--set', "WINDOW='hann'", '--set', 'LEARNING_RATE=1',
                                 '--set', 'ADAM_BETAS=[0.8, 0.99]']):
        assert config.LOSS == 'mse' and config.WINDOW == 'hann'
        assert config.LEARNING_RATE == 1.0 and isinstance(config.LEARNING_RATE, float)
        assert config.ADAM_BETAS == (0.8, 0.99)
    assert config.LOSS == 'bce' and config.ADAM_BETAS == (0.9, 0.999)


@pytest.mark.parametrize('script, argv', [(evaluate, ['--conf', 'x.py', '--workdir', 'W']),
                                           (task4b, ['--work', 'W', '--folds', '1']),
                                           (task4b, ['--epoch', '1', '--workdir', 'W'])], ids=['conf', 'work', 'epoch'])
def test_an_abbreviated_option_is_refused_and_nothing_written(script, argv, tmp_path, capsys):
    argv = [str(tmp_path / 'W') if a == 'W' else a for a in argv]
    repository = sorted(REPO.iterdir())
    with pytest.raises(SystemExit) as stop:
        script.main(argv)
    assert stop.value.code == 2 and f'unrecognized arguments: {argv[0]}' in capsys.readouterr().err
    assert sorted(REPO.iterdir()) == repository and not (tmp_path / 'W').exists()


# -----------------------------------------------------------------------------
# A workdir keeps its experiment

@pytest.mark.slow
def test_later_commands_on_a_workdir_use_its_experiment_or_refuse_naming_the_difference(demo_root, tmp_path, capsys):
    import extract_features
    workdir = tmp_path / 'lr'
    # the first command saves what defines the experiment, not how it ran (THRESHOLD: evaluation, FEATURE_JOBS: speed)
    assert extract_features.main(['--data-root', str(demo_root), '--workdir', str(workdir), '--set', 'FEATURE_JOBS=1',
                                  '--set', 'LEARNING_RATE=0.003', '--set', 'THRESHOLD=0.3']) == 0
    assert json.loads((workdir / 'experiment.json').read_text())['settings'] == {'LEARNING_RATE': 0.003}
    assert task4b.main(['--workdir', str(workdir)] + EPOCH) == 0              # nothing repeated
    assert task4b.main(['--workdir', str(workdir), '--run', '1'] + EPOCH) == 0
    assert recorded_config(workdir, 0)['LEARNING_RATE'] == recorded_config(workdir, 1)['LEARNING_RATE'] == 0.003
    assert json.loads((workdir / 'experiment.json').read_text())['settings'] == {'LEARNING_RATE': 0.003,
                                                                                  'MAX_EPOCHS': 1}
    assert evaluate.main(['--workdir', str(workdir)]) == 0                    # the two runs combine
    summary = json.loads((workdir / 'results.json').read_text())
    assert summary['n_runs'] == 2 and summary['protocol']['THRESHOLD'] == 0.5 and summary['protocol']['MAX_EPOCHS'] == 1

    for argv, given in [(['--set', 'LEARNING_RATE=0.01'] + EPOCH, 'LEARNING_RATE = 0.01'),
                        (['--folds', '1', '--epochs', '2'], 'MAX_EPOCHS = 2'),     # a flag is a --set
                        (['--set', 'CHANNELS_LAST=False'] + EPOCH, 'CHANNELS_LAST = False')]:
        capsys.readouterr()
        assert task4b.main(['--workdir', str(workdir), '--run', '2'] + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {workdir / 'experiment.json'}: this workdir's experiment is LEARNING_RATE=0.003")
        assert given in err and 'another --workdir' in err and err.count('\n') == 1
        assert not (workdir / config.RUNS_DIR / 'run2').exists()
    # an evaluation setting re-scores for one command, unsaved, and --json writes that file and nothing else
    assert evaluate.main(['--workdir', str(workdir), '--set', 'THRESHOLD=0.3', '--json', str(tmp_path / 'r.json')]) == 0
    assert json.loads((tmp_path / 'r.json').read_text())['protocol']['THRESHOLD'] == 0.3
    assert json.loads((workdir / 'experiment.json').read_text())['settings'] == {'LEARNING_RATE': 0.003,
                                                                                  'MAX_EPOCHS': 1}


def test_a_precision_the_device_lacks_is_refused_before_anything_is_written(demo_workdir, tmp_path, capsys):
    workdir = copy_workdir(demo_workdir, tmp_path / 'wd')
    before = sorted(workdir.rglob('*'))
    for jobs in ('1', '2'):
        assert task4b.main(['--workdir', str(workdir), '--jobs', jobs, '--precision', 'tf32'] + EPOCH) == 2
        assert "precision 'tf32'" in capsys.readouterr().err
    assert sorted(workdir.rglob('*')) == before


TRAIN = """
import sys
sys.argv[1:] = {argv!r}
sys.path.insert(0, {repo!r})
import torch, task4b
torch.set_num_threads(1)
raise SystemExit(task4b.main())
"""


@pytest.mark.slow
def test_two_experiments_trained_at_once_give_the_scores_of_each_trained_alone(default_run, demo_workdir, tmp_path):
    experiments = {'default': [], 'mse': ['--set', 'LOSS=mse', '--set', 'BATCH_SIZE=8', *SMALL]}
    alone = {'default': score_files(default_run)}
    workdir = copy_workdir(demo_workdir, tmp_path / 'mse_alone')
    assert task4b.main(['--workdir', str(workdir)] + experiments['mse'] + EPOCH) == 0
    alone['mse'] = score_files(workdir)
    processes = {name: subprocess.Popen([sys.executable, '-c', TRAIN.format(
        argv=['--workdir', str(copy_workdir(demo_workdir, tmp_path / name))] + settings + EPOCH, repo=str(REPO))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        for name, settings in experiments.items()}
    for name, process in processes.items():
        assert process.wait(timeout=600) == 0, process.stderr.read().decode()[-2000:]
        assert score_files(tmp_path / name) == alone[name] and alone[name]
    assert alone['default'] != alone['mse']


# -----------------------------------------------------------------------------
# Code: part of a run's record

def checkout(tmp_path):
    """A copy of this repository's code, to edit."""
    repo = tmp_path / 'repo'
    repo.mkdir()
    for path in REPO.glob('*.py'):
        shutil.copy(path, repo)
    shutil.copytree(REPO / 'development_folds', repo / 'development_folds')
    shutil.copy(REPO / 'development_split.csv', repo)
    return repo


def run_script(repo, script, *argv):
    """A script of the checkout `repo` in its own process -> (exit status, stderr)."""
    done = subprocess.run([sys.executable, str(repo / script), *map(str, argv)], capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=600)
    return done.returncode, done.stderr


def test_a_fingerprint_ignores_comments_docstrings_and_layout_not_code(tmp_path):
    source = (REPO / 'model.py').read_text()
    path = tmp_path / 'model.py'
    fingerprints = {}
    for name, text in {
        'same': source,
        'comment': source.replace('# (batch, frames, 64)', '# (batch, frames, bands)'),
        'docstring': source.replace('Three conv blocks', 'Three convolution blocks'),
        'layout': source.replace('x = x.unsqueeze(1)', 'x = x.unsqueeze( 1 )'),
        'code': source.replace('x = x.unsqueeze(1)', 'x = x.unsqueeze(-3)'),
    }.items():
        assert name == 'same' or text != source
        path.write_text(text)
        fingerprints[name] = utils.code_fingerprint(path)
    assert fingerprints['comment'] == fingerprints['docstring'] == fingerprints['layout'] == fingerprints['same']
    assert fingerprints['code'] != fingerprints['same']


@pytest.mark.slow
def test_runs_of_other_code_are_never_continued_resumed_or_combined(demo_workdir, tmp_path, capsys):
    repo = checkout(tmp_path)
    workdir = copy_workdir(demo_workdir, tmp_path / 'work')
    model_py = repo / 'model.py'
    original = model_py.read_text()
    train = ['--workdir', workdir, '--epochs', '1', '--device', 'cpu', *SMALL, '--set', 'TRACK_ENERGY=False']
    assert run_script(repo, 'task4b.py', *train, '--folds', '1')[0] == 0
    assert (workdir / 'runs' / 'run0' / 'code' / 'model.py').read_text() == original
    settings = recorded(workdir)
    assert settings['record']['training']['code']['model.py'] == utils.code_fingerprint(REPO / 'model.py')
    assert {'git_commit', 'git_dirty'} <= set(settings)

    # a comment-only edit: the same code, so run 0 goes on (documented: comments and docstrings do not count)
    model_py.write_text(original.replace('# (batch, 128, frames, 3)', '# (batch, channels, frames, bands)'))
    assert run_script(repo, 'task4b.py', *train, '--run', '0', '--folds', '2')[0] == 0

    # a code edit: run 0 is neither continued nor resumed; run 1 trains; the two are not combined
    model_py.write_text(original.replace('return self.dense2(x)', 'return self.dense2(x) - 1'))
    for extra in (['--run', '0', '--folds', '3'], ['--run', '0', '--resume', '--folds', '1', '2', '3']):
        code, err = run_script(repo, 'task4b.py', *train, *extra)
        assert code == 2 and "training.code.model.py: '" in err and err.count('\n') == 1, err
    assert not (workdir / 'runs' / 'run0' / 'fold3').exists()
    assert run_script(repo, 'task4b.py', *train, '--run', '1', '--folds', '1', '2')[0] == 0
    capsys.readouterr()
    assert evaluate.main(['--workdir', str(workdir)]) == 2
    err = capsys.readouterr().err
    assert 'run0 and run1' in err and "training.code.model.py: '" in err and '--runs 0' in err

    assert evaluate.main(['--workdir', str(workdir), '--runs', '0']) == 0          # each run alone: fine
    assert evaluate.main(['--workdir', str(workdir), '--runs', '1']) == 0
    out = tmp_path / 'comparison'
    assert compare.main([str(workdir), str(workdir), '--runs-a', '0', '--runs-b', '1', '--out', str(out),
                         '--bootstrap', '20']) == 0
    markdown = (out / 'comparison.md').read_text()
    assert "- training.code.model.py: '" in markdown and 'Code of model.py that differs' in markdown
    assert '\n-        return self.dense2(x)  ' in markdown and '\n+        return self.dense2(x) - 1  ' in markdown
    assert list(json.loads((out / 'comparison.json').read_text())['code_differs']) == ['model.py']


def test_a_snapshot_holds_the_code_and_the_experiment_of_its_time(tmp_path):
    repo = checkout(tmp_path)
    workdir = tmp_path / 'work'
    workdir.mkdir()
    done = subprocess.run([sys.executable, str(repo / 'runtime.py'), '--workdir', str(workdir), '--set',
                           'LEARNING_RATE=0.01', '--set', 'TARGETS=hard', '--set', 'THRESHOLD=0.3'],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    snapshot = Path(done.stdout.strip())
    assert snapshot.parent == workdir / 'snapshots'
    original = (repo / 'model.py').read_text()
    (repo / 'model.py').write_text(original.replace('return self.dense2(x)', 'return self.dense2(x) - 1'))
    assert (snapshot / 'model.py').read_text() == original                        # what was there then
    assert (snapshot / 'development_folds' / 'fold1_test.csv').is_file()
    assert experiment.read_experiment_file(snapshot / 'settings.py') == {'LEARNING_RATE': 0.01, 'TARGETS': 'hard',
                                                                        'THRESHOLD': 0.3}
    assert json.loads((workdir / 'experiment.json').read_text())['settings'] == {'LEARNING_RATE': 0.01,
                                                                                  'TARGETS': 'hard'}
    state = json.loads((snapshot / 'snapshot.json').read_text())
    assert state['repository'] == str(repo.resolve()) and state['git_commit'] is None      # the copy is no git tree


# -----------------------------------------------------------------------------
# Each side of a comparison in its own experiment; post-processing re-scored, never retrained

def train_fold1(workdir, *argv):
    assert task4b.main(['--workdir', str(workdir), *argv] + EPOCH) == 0
    return workdir


@pytest.mark.slow
def test_compare_scores_each_side_in_its_own_experiment_and_refuses_other_classes(default_run, demo_root, tmp_path,
                                                                                  capsys):
    import extract_features
    log_mel = tmp_path / 'log_mel'
    assert extract_features.main(['--data-root', str(demo_root), '--workdir', str(log_mel),
                                  '--config', str(REPO / 'experiments' / 'log_mel.py')]) == 0
    train_fold1(log_mel)
    out = tmp_path / 'comparison'
    capsys.readouterr()
    # fold 1 of the demo data has no reference event of 'metro leaving': undefined there, as evaluate.py has it
    assert compare.main([str(default_run), str(log_mel), '--out', str(out), '--bootstrap', '20']) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / 'comparison.json').read_text())
    assert {d['setting']: (d['a'], d['b']) for d in result['settings_differ']} == {
        'training.config.LOG_MEL': (False, True), 'features.params.log_mel': (False, True)}
    assert printed.index('features.params.log_mel') < printed.index('| metric |')
    assert result['per_class']['metro leaving'] == {'F': None, 'F1_thop': None}
    assert 'no reference events of metro leaving' in result['note']
    assert '| metro leaving | - | - | undefined |' in printed
    for side, workdir in (('mean_a', default_run), ('mean_b', log_mel)):
        assert result['metrics']['F1_thop'][side] == pytest.approx(json.loads(
            (workdir / 'runs' / 'run0' / 'metrics.json').read_text())['F1_thop'])

    fewer = tmp_path / 'fewer'
    assert extract_features.main(['--data-root', str(demo_root), '--workdir', str(fewer),
                                  '--set', f'HARD_CLASSES={config.HARD_CLASSES[:-1]}']) == 0
    train_fold1(fewer)
    capsys.readouterr()
    assert compare.main([str(default_run), str(fewer), '--out', str(tmp_path / 'refused')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'score over other HARD_CLASSES' in err and err.count('\n') == 1


@pytest.mark.slow
def test_an_edit_of_the_event_code_re_scores_the_runs_without_retraining(demo_workdir, tmp_path):
    repo = checkout(tmp_path)
    workdir = copy_workdir(demo_workdir, tmp_path / 'work')
    assert run_script(repo, 'extract_features.py', '--data-root', json.loads(
        (workdir / 'features' / 'manifest.json').read_text())['data_root'], '--workdir', workdir)[0] == 0
    # torch's initialisation: after 1 epoch the scores cross the threshold, so there are events for the edit to change
    # (from the class priors 1 epoch detects nothing: F1_m is nan before and after, and nan != nan)
    train = [*EPOCH, *SMALL, '--set', 'OUTPUT_BIAS_INIT=torch', '--set', 'TRACK_ENERGY=False']
    assert run_script(repo, 'task4b.py', '--workdir', workdir, *train)[0] == 0
    trained = {p: p.read_bytes() for p in workdir.glob('runs/run0/**/*') if p.is_file() and 'metrics' not in p.name}
    before = json.loads((workdir / 'runs' / 'run0' / 'metrics.json').read_text())
    gt_dev = (workdir / 'metadata' / 'gt_dev.csv').read_bytes()

    # active frames widened by 2 frames on each side before they become events: a post-processing idea
    post_processing = repo / 'post_processing.py'
    line = ('    return events_from_activity(median_filter(frame_scores, filter_lengths) > thresholds, class_labels, '
            'filename)')
    assert line in post_processing.read_text()
    post_processing.write_text(post_processing.read_text().replace(line, (
        '    active = scipy.ndimage.binary_dilation(median_filter(frame_scores, filter_lengths) > thresholds,\n'
        '                                           structure=np.ones((5, 1), dtype=bool))\n'
        '    return events_from_activity(active, class_labels, filename)')))
    code, err = run_script(repo, 'evaluate.py', '--workdir', workdir)
    assert code == 0, err
    assert 'gt_dev.csv: rebuilt from the stored targets' in err
    after = json.loads((workdir / 'runs' / 'run0' / 'metrics.json').read_text())
    assert after['scoring']['code']['post_processing.py'] == utils.code_fingerprint(post_processing)
    assert after['scoring']['code']['post_processing.py'] != before['scoring']['code']['post_processing.py']
    assert after['F1_m'] != before['F1_m'] and after['F1_thop'] == before['F1_thop']   # events only: not the scores
    assert (workdir / 'metadata' / 'gt_dev.csv').read_bytes() == gt_dev     # its events come from the same code
    assert {p: p.read_bytes() for p in trained} == trained                  # nothing trained again


@pytest.mark.slow
def test_extraction_workers_started_by_spawn_apply_the_command_experiment(demo_root, tmp_path, monkeypatch):
    import multiprocessing

    import extract_features
    arrays = {}
    for method in ('fork', 'spawn'):
        with monkeypatch.context() as patch:
            context = multiprocessing.get_context(method)
            patch.setattr(multiprocessing, 'get_context', lambda *_: context)
            assert extract_features.main(['--data-root', str(demo_root), '--workdir', str(tmp_path / method),
                                          '--jobs', '2', '--config', str(REPO / 'experiments' / 'log_mel.py')]) == 0
        with np.load(tmp_path / method / 'features' / 'files' / 'cafe_restaurant_00.npz') as data:
            arrays[method] = data['features']
    assert np.array_equal(arrays['spawn'], arrays['fork'])
    assert arrays['fork'].min() < 0               # log-compressed: linear mel magnitudes are never negative
