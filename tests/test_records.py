"""Results you can trust: every run carries the record of its settings, runs of other settings never mix, an
evaluation-only setting re-scores without recomputing anything, and bad input is one line, never a traceback."""
import json

import numpy as np
import pytest
import torch

import config
import demo_data
import evaluate
import extract_features
import runtime
import task4b
import utils
from helpers import copy_workdir

EPOCH = ['--epochs', '1', '--device', 'cpu']


def score_stems(run_dir):
    return sorted(p.stem for p in (run_dir / 'scores').glob('*.tsv'))


def test_settings_json_records_what_the_run_depends_on(demo_workdir, tmp_path):
    workdir = copy_workdir(demo_workdir, tmp_path)
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '--loss', 'mse', '--seed', '7'] + EPOCH) == 0
    run_dir = workdir / config.RUNS_DIR / 'run0'
    settings = json.loads((run_dir / 'settings.json').read_text())
    assert settings['seed'] == 7 and settings['record']['training']['loss'] == 'mse'
    assert settings['record']['training']['epochs'] == 1
    assert settings['record']['training']['config']['LEARNING_RATE'] == config.LEARNING_RATE
    assert settings['record']['features']['params'] == extract_features.feature_params()
    assert settings['record']['features']['dataset'] == 'demo'
    assert {'python', 'torch', 'numpy', 'librosa', 'sed_eval', 'sed_scores_eval'} <= set(settings['versions'])
    assert settings['record_id'] == utils.record_id(settings['record'])
    fold = json.loads((run_dir / 'fold1' / 'metrics.json').read_text())
    assert fold['record_id'] == settings['record_id']                         # the fold names its record


@pytest.mark.slow
def test_a_run_of_other_settings_is_refused_and_restart_replaces_it(demo_workdir, tmp_path, capsys):
    workdir = copy_workdir(demo_workdir, tmp_path)
    run_dir = workdir / config.RUNS_DIR / 'run0'
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '2'] + EPOCH) == 0           # bce
    fold1 = sorted(utils.file_stem(i) for i in utils.read_fold(1)['test'])
    assert len(score_stems(run_dir)) == len(fold1) + len(utils.read_fold(2)['test'])

    capsys.readouterr()
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '--loss', 'mse'] + EPOCH) == 2
    err = capsys.readouterr().err
    assert "training.loss: 'bce' there, 'mse' now" in err and '--restart' in err and err.count('\n') == 1

    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '--loss', 'mse', '--restart'] + EPOCH) == 0
    assert score_stems(run_dir) == fold1                                       # fold 2's old scores are gone
    results = json.loads((workdir / 'results.json').read_text())
    assert results['runs'][0]['files'] == fold1 and results['protocol']['loss'] == 'mse'


@pytest.mark.slow
def test_a_fold_trained_again_replaces_exactly_its_own_score_files(demo_workdir, tmp_path):
    workdir = copy_workdir(demo_workdir, tmp_path)
    run_dir = workdir / config.RUNS_DIR / 'run0'
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '2'] + EPOCH) == 0
    fold2 = {p: p.stat().st_mtime_ns for p in (run_dir / 'scores').glob('*.tsv')
             if p.stem in {utils.file_stem(i) for i in utils.read_fold(2)['test']}}
    extra = run_dir / 'scores' / 'cafe_restaurant_07.tsv'                      # a fold 1 file, left by a kill
    killed_at = extra.stat().st_mtime_ns
    assert task4b.main(['--workdir', str(workdir), '--folds', '1'] + EPOCH) == 0
    assert extra.stat().st_mtime_ns != killed_at                               # written again
    assert {p: p.stat().st_mtime_ns for p in fold2} == fold2                   # the other fold's untouched


def test_the_run_record_names_settings_exactly_and_leaves_file_names_out(monkeypatch):
    recorded = runtime.training_settings(42, 150, 'bce')['config']
    assert recorded['HARD_LABEL_THRESHOLD'] == config.HARD_LABEL_THRESHOLD   # not taken for the evaluation's THRESHOLD
    assert not {'THRESHOLD', 'MERGE_GAP', 'GT_FILE', 'FEATURES_DIR', 'RUNS_DIR', 'SEED', 'LOSS'} & set(recorded)
    monkeypatch.setattr(config, 'GT_FILE', 'reference.csv')
    monkeypatch.setattr(config, 'FEATURES_DIR', 'features_v2')
    assert runtime.training_settings(42, 150, 'bce')['config'] == recorded     # renamed folders, the same run


def test_evaluate_refuses_runs_of_other_settings_and_combines_a_selection(demo_workdir, tmp_path, capsys):
    from helpers import RECORD, write_run
    workdir = copy_workdir(demo_workdir, tmp_path)
    stems = [utils.file_stem(i) for i in utils.read_fold(1)['test']]
    rng = np.random.default_rng(0)
    for r, loss in ((0, 'bce'), (1, 'bce'), (2, 'mse')):
        record = {**RECORD, 'training': {**RECORD['training'], 'loss': loss}}
        run_dir = write_run(workdir / config.RUNS_DIR / f'run{r}', stems, record, seed=42 + r)
        for stem in stems:
            n_frames = len(np.load(utils.file_features_path(workdir, stem))['targets'])
            evaluate.write_score_file(run_dir / 'scores' / f'{stem}.tsv', rng.random((n_frames, len(config.HARD_CLASSES))))
    assert evaluate.main(['--workdir', str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "training.loss: 'bce' vs 'mse'" in err and '--runs 0 1' in err and err.count('\n') == 1
    assert evaluate.main(['--workdir', str(workdir), '--runs', '0', '1']) == 0
    assert json.loads((workdir / 'results.json').read_text())['n_runs'] == 2
    assert evaluate.main(['--workdir', str(workdir), '--runs', '2']) == 0


# -----------------------------------------------------------------------------
# Bad input: one line naming the file or setting, exit status 2

def test_demo_data_with_a_scale_of_zero_or_below_is_one_line(tmp_path, capsys):
    for scale in ('0', '-1'):
        assert demo_data.main(['--out', str(tmp_path), '--scale', scale]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f'error: --scale {float(scale)}') and err.count('\n') == 1


def test_an_unknown_loss_in_config_is_one_line(demo_workdir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config, 'LOSS', 'hinge')
    assert task4b.main(['--workdir', str(copy_workdir(demo_workdir, tmp_path)), '--folds', '1'] + EPOCH) == 2
    err = capsys.readouterr().err
    assert err == "error: config.LOSS = 'hinge': expected 'bce' or 'mse'; set it in config.py\n"


def test_an_unknown_pad_mode_in_config_is_one_line(demo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config, 'PAD_MODE', 'reflect')
    assert extract_features.main(['--data-root', str(demo_root), '--workdir', str(tmp_path), '--jobs', '1']) == 2
    err = capsys.readouterr().err
    assert "error: config.PAD_MODE = 'reflect'" in err and 'Traceback' not in err


def test_a_manifest_of_an_older_version_is_refused_naming_it(demo_workdir, tmp_path):
    workdir = copy_workdir(demo_workdir, tmp_path)
    manifest_path = workdir / config.FEATURES_DIR / 'manifest.json'
    manifest = json.loads(manifest_path.read_text())
    del manifest['folds_sha256']
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(utils.DataError, match=r'manifest.json: written by an older version \(no folds_sha256\)'):
        extract_features.load_fold(workdir, 1)


def test_a_checkpoint_missing_a_key_is_refused_naming_it(tmp_path):
    path = tmp_path / 'checkpoint.pt'
    torch.save({'epoch': 3, 'model': {}}, path)
    with pytest.raises(utils.DataError, match=r"checkpoint.pt: not a checkpoint of this version .*'optimizer'"):
        runtime.load_checkpoint(path, runtime.training_settings(42, 1, 'bce'), torch.Generator())


def test_a_truncated_checkpoint_is_refused_in_one_line(tmp_path):
    path = tmp_path / 'checkpoint.pt'
    torch.save({'epoch': 3, 'model': {'w': torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(utils.DataError, match='checkpoint.pt: not a checkpoint of task4b.py that loads safely'):
        runtime.load_checkpoint(path, runtime.training_settings(42, 1, 'bce'), torch.Generator())


@pytest.mark.slow
def test_a_failing_jobs_child_is_named_with_its_log_and_the_others_finish(demo_workdir, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    workdir = copy_workdir(demo_workdir, tmp_path)
    (workdir / config.FEATURES_DIR / 'fold2.npz').unlink()                    # fold 2 cannot train
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '2', '--jobs', '2'] + EPOCH) == 2
    err = capsys.readouterr().err
    log = workdir / config.RUNS_DIR / 'run0' / 'fold2.log'
    assert f'run 0 fold 2 (log {log})' in err and err.count('\n') == 1
    assert 'fold2.npz: missing' in log.read_text()
    assert (workdir / config.RUNS_DIR / 'run0' / 'fold1' / 'metrics.json').is_file()        # the other finished
    assert not (workdir / config.RUNS_DIR / 'run0' / 'fold2').exists()
    assert not (workdir / 'results.json').exists()
