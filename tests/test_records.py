"""Results you can trust: every run carries the record of its settings, runs of other settings never mix, an
evaluation-only setting re-scores without recomputing anything, and bad input is one line, never a traceback."""
import json
import shlex
import shutil

import pytest
import torch

import config
import demo_data
import evaluate
import extract_features
import model
import runs
import runtime
import tables
import task4b
import utils
from helpers import RECORD, SMALL, copy_workdir, write_random_scores, write_run

EPOCH = ['--epochs', '1', '--device', 'cpu']


def fold_test_stems(fold):
    return [utils.file_stem(i) for i in utils.read_fold(fold)['test']]


def score_stems(run_dir):
    return sorted(p.stem for p in (run_dir / 'scores').glob('*.tsv'))


def test_settings_json_records_what_the_run_depends_on(demo_workdir, tmp_path):
    workdir = copy_workdir(demo_workdir, tmp_path)
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '--loss', 'mse', '--seed', '7'] + EPOCH + SMALL) == 0
    run_dir = workdir / config.RUNS_DIR / 'run0'
    settings = json.loads((run_dir / 'settings.json').read_text())
    assert settings['seed'] == 7 and settings['record']['training']['loss'] == 'mse'
    assert settings['record']['training']['epochs'] == 1
    assert settings['record']['training']['config']['LEARNING_RATE'] == config.LEARNING_RATE
    assert settings['record']['features']['params'] == extract_features.feature_params()
    assert settings['record']['features']['dataset'] == 'demo'
    assert {'python', 'torch', 'numpy', 'librosa', 'sed_eval', 'sed_scores_eval'} <= set(settings['versions'])
    assert settings['record_id'] == runs.record_id(settings['record'])
    fold = json.loads((run_dir / 'fold1' / 'metrics.json').read_text())
    assert fold['record_id'] == settings['record_id']                         # the fold names its record


@pytest.mark.slow
def test_a_run_of_other_settings_is_refused_and_restart_replaces_it(demo_workdir, tmp_path, capsys):
    workdir = copy_workdir(demo_workdir, tmp_path)
    run_dir = workdir / config.RUNS_DIR / 'run0'
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '2'] + EPOCH + SMALL) == 0           # bce
    fold1 = sorted(utils.file_stem(i) for i in utils.read_fold(1)['test'])
    assert len(score_stems(run_dir)) == len(fold1) + len(utils.read_fold(2)['test'])

    capsys.readouterr()
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '--loss', 'mse', '--restart'] + EPOCH + SMALL) == 2
    assert "--loss mse gives LOSS = 'mse', the experiment 'bce'" in capsys.readouterr().err   # the workdir's, first
    (workdir / 'experiment.json').unlink()                       # as an older version left it: the run's record
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '--loss', 'mse'] + EPOCH + SMALL) == 2
    err = capsys.readouterr().err
    assert "training.loss: 'bce' there, 'mse' now" in err and '--restart' in err and err.count('\n') == 1

    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '--loss', 'mse', '--restart'] + EPOCH + SMALL) == 0
    assert score_stems(run_dir) == fold1                                       # fold 2's old scores are gone
    results = json.loads((workdir / 'results.json').read_text())
    assert results['runs'][0]['files'] == fold1 and results['protocol']['LOSS'] == 'mse'


@pytest.mark.slow
def test_a_fold_trained_again_replaces_exactly_its_own_score_files(demo_workdir, tmp_path):
    workdir = copy_workdir(demo_workdir, tmp_path)
    run_dir = workdir / config.RUNS_DIR / 'run0'
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '2'] + EPOCH + SMALL) == 0
    fold2 = {p: p.stat().st_mtime_ns for p in (run_dir / 'scores').glob('*.tsv')
             if p.stem in {utils.file_stem(i) for i in utils.read_fold(2)['test']}}
    extra = run_dir / 'scores' / 'cafe_restaurant_07.tsv'                      # a fold 1 file, left by a kill
    killed_at = extra.stat().st_mtime_ns
    assert task4b.main(['--workdir', str(workdir), '--folds', '1'] + EPOCH + SMALL) == 0
    assert extra.stat().st_mtime_ns != killed_at                               # written again
    assert {p: p.stat().st_mtime_ns for p in fold2} == fold2                   # the other fold's untouched


def test_the_run_record_names_settings_exactly_and_leaves_file_names_out(monkeypatch):
    recorded = runs.training_settings(42, 150, 'bce')['config']
    assert recorded['HARD_LABEL_THRESHOLD'] == config.HARD_LABEL_THRESHOLD   # not taken for the evaluation's THRESHOLD
    assert not {'THRESHOLD', 'MERGE_GAP', 'GT_FILE', 'FEATURES_DIR', 'RUNS_DIR', 'SEED', 'LOSS'} & set(recorded)
    monkeypatch.setattr(config, 'GT_FILE', 'reference.csv')
    monkeypatch.setattr(config, 'FEATURES_DIR', 'features_v2')
    assert runs.training_settings(42, 150, 'bce')['config'] == recorded     # renamed folders, the same run


def test_bias_init_is_in_the_run_record_of_bce_runs(monkeypatch):
    manifest = {'params': {}, 'dataset': 'demo', 'folds_sha256': ''}
    monkeypatch.setattr(config, 'OUTPUT_BIAS_INIT', 'prior')
    prior = runs.run_record(manifest, 150, 'bce')
    monkeypatch.setattr(config, 'OUTPUT_BIAS_INIT', 'torch')
    torch_init = runs.run_record(manifest, 150, 'bce')
    assert ('training.config.OUTPUT_BIAS_INIT', 'prior', 'torch') in utils.differences(prior, torch_init)


def test_evaluate_refuses_runs_of_other_settings_and_combines_a_selection(demo_workdir, tmp_path, capsys):
    workdir = copy_workdir(demo_workdir, tmp_path)
    stems = fold_test_stems(1)
    for r, loss in ((0, 'bce'), (1, 'bce'), (2, 'mse')):
        record = {**RECORD, 'training': {**RECORD['training'], 'loss': loss}}
        write_random_scores(workdir, write_run(workdir / config.RUNS_DIR / f'run{r}', stems, record, seed=42 + r),
                            stems, seed=r)
    assert evaluate.main(['--workdir', str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "training.loss: 'bce' vs 'mse'" in err and '--runs 0 1' in err and err.count('\n') == 1
    assert evaluate.main(['--workdir', str(workdir), '--runs', '0', '1']) == 0
    assert json.loads((workdir / 'results.json').read_text())['n_runs'] == 2
    assert evaluate.main(['--workdir', str(workdir), '--runs', '2']) == 0


# -----------------------------------------------------------------------------
# A run's metrics.json is reused only while it is what scoring the run now gives

@pytest.mark.slow
def test_a_fold_trained_as_a_job_after_scoring_is_in_what_compare_and_plot_results_show(demo_workdir, tmp_path):
    import compare
    import plot_results
    workdir = copy_workdir(demo_workdir, tmp_path / 'work')
    run_dir = workdir / config.RUNS_DIR / 'run0'
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '2'] + EPOCH + SMALL) == 0      # trained, scored
    scored = json.loads((run_dir / 'metrics.json').read_text())
    assert scored['files'] == sorted(fold_test_stems(1) + fold_test_stems(2))
    assert task4b.main(['--workdir', str(workdir), '--run', '0', '--folds', '3'] + EPOCH + SMALL) == 0    # a cluster job
    assert json.loads((run_dir / 'metrics.json').read_text()) == scored      # a job writes its fold only
    assert evaluate.main(['--workdir', str(workdir), '--json', str(tmp_path / 'fresh.json')]) == 0
    fresh = json.loads((tmp_path / 'fresh.json').read_text())['runs'][0]
    every = sorted(fold_test_stems(1) + fold_test_stems(2) + fold_test_stems(3))
    assert fresh['files'] == every

    side = compare.load_side(workdir, None)                  # what the Welch test and the bootstrap's files read
    shown = side['metrics'][0]
    assert shown['files'] == every
    assert {k: shown[k] for k in tables.HEADLINE + ['class_wise']} == \
        {k: fresh[k] for k in tables.HEADLINE + ['class_wise']}
    assert compare.main([str(workdir), str(workdir), '--out', str(tmp_path / 'comparison'), '--bootstrap', '10']) == 0
    assert f'paired bootstrap over {len(every)} files' in (tmp_path / 'comparison' / 'comparison.md').read_text()
    data = plot_results.per_class_data(workdir)
    assert data['n_files'] == [len(every)]
    assert data['f1_thop'] == {c: [fresh['class_wise'][c]['F1_thop'] or 0.0] for c in config.HARD_CLASSES}


def scored_run_marked(demo_workdir, path):
    """A run of random scores over fold 1's test files, scored by evaluate.py, its metrics.json then marked (F1_m
    -1, which no scoring gives) -> (workdir, run folder, the metrics as written)."""
    workdir = copy_workdir(demo_workdir, path)
    stems = fold_test_stems(1)
    run_dir = write_run(workdir / config.RUNS_DIR / 'run0', stems)
    write_random_scores(workdir, run_dir, stems)
    assert evaluate.main(['--workdir', str(workdir)]) == 0
    saved = json.loads((run_dir / 'metrics.json').read_text())
    (run_dir / 'metrics.json').write_text(json.dumps({**saved, 'F1_m': -1.0}))
    assert evaluate.run_metrics(workdir, run_dir)['F1_m'] == -1.0          # reused while nothing changed
    return workdir, run_dir, saved


def test_a_runs_metrics_are_scored_again_when_a_fold_wrote_other_score_files(demo_workdir, tmp_path):
    workdir, run_dir, saved = scored_run_marked(demo_workdir, tmp_path)
    stem = fold_test_stems(1)[0]
    write_random_scores(workdir, run_dir, [stem], seed=1)      # the fold trained again: other scores of a file
    again = evaluate.run_metrics(workdir, run_dir)
    expected = evaluate.evaluate_scores(run_dir / 'scores', workdir, file_stems=fold_test_stems(1))
    assert again['F1_m'] == expected['F1_m'] != saved['F1_m']
    assert again['scores_sha256'] != saved['scores_sha256']


def test_a_runs_metrics_of_another_version_of_a_metrics_library_are_scored_again(demo_workdir, tmp_path):
    workdir, run_dir, saved = scored_run_marked(demo_workdir, tmp_path)
    assert set(evaluate.SCORING_LIBRARIES) <= set(saved['scoring']['versions'])
    for library in ('sed_scores_eval', 'scipy'):
        older = {**saved['scoring'], 'versions': {**saved['scoring']['versions'], library: '0.0.1'}}
        (run_dir / 'metrics.json').write_text(json.dumps({**saved, 'F1_m': -1.0, 'scoring': older}))
        again = evaluate.run_metrics(workdir, run_dir)
        assert again['F1_m'] == saved['F1_m'] and again['scoring'] == saved['scoring']


# -----------------------------------------------------------------------------
# The published row: "same protocol" only when every setting that can change the numbers is the published one

def recorded_as_maestro_real(demo_workdir, path):
    """A copy of the demo workdir whose extraction is recorded as MAESTRO Real, so the table shows the published
    row (official folds already) -> (workdir, manifest)."""
    workdir = copy_workdir(demo_workdir, path)
    manifest_path = workdir / config.FEATURES_DIR / 'manifest.json'
    manifest = {**json.loads(manifest_path.read_text()), 'dataset': 'MAESTRO Real'}
    manifest_path.write_text(json.dumps(manifest))
    return workdir, manifest


def published_row(workdir):
    return [line for line in (workdir / 'results.md').read_text().splitlines() if line.startswith('| Published')][0]


@pytest.mark.parametrize('epochs, loss, trained_with, scored_with, note', [
    (150, 'mse', {}, {}, 'same protocol'),
    (2, 'mse', {}, {}, 'protocol differs: MAX_EPOCHS 2 (published: 150)'),
    (150, 'mse', {}, {'THRESHOLD': 0.3}, 'protocol differs: THRESHOLD 0.3 (published: 0.5)'),
    (150, 'mse', {}, {'MERGE_GAP': 0.5, 'MIN_EVENT_LENGTH': 1.0},
     'protocol differs: MERGE_GAP 0.5 (published: 0.1), MIN_EVENT_LENGTH 1.0 (published: 0.1)'),
    (150, 'mse', {}, {'MEDIAN_FILTER_BY_CLASS': {'car': 5}},
     "protocol differs: MEDIAN_FILTER_BY_CLASS {'car': 5} (published: {})"),
    (150, 'mse', {'LEARNING_RATE': 0.01, 'HARD_CLASSES': config.HARD_CLASSES[:-1]}, {},
     f"protocol differs: HARD_CLASSES {config.HARD_CLASSES[:-1]} (published: {config.HARD_CLASSES}), "
     f"LEARNING_RATE 0.01 (published: 0.001)"),
    (150, 'bce', {}, {}, 'protocol differs: LOSS bce (published: mse), OUTPUT_BIAS_INIT prior (published: torch)'),
    (150, 'mse', {'TARGETS': 'hard'}, {}, 'protocol differs: TARGETS hard (published: soft)'),
], ids=['published', 'epochs', 'threshold', 'post-processing', 'median filter', 'training', 'bce', 'hard targets'])
def test_published_row_says_same_protocol_only_when_every_setting_matches(demo_workdir, tmp_path, monkeypatch,
                                                                          epochs, loss, trained_with, scored_with,
                                                                          note):
    workdir, manifest = recorded_as_maestro_real(demo_workdir, tmp_path)
    with monkeypatch.context() as trained:                   # the config.py the run was trained with
        for name, value in trained_with.items():
            trained.setattr(config, name, value)
        record = runs.run_record(manifest, epochs, loss)
    stems = fold_test_stems(1)
    write_random_scores(workdir, write_run(workdir / config.RUNS_DIR / 'run0', stems, record), stems)
    for name, value in scored_with.items():                  # config.py now, when evaluate.py re-scores
        monkeypatch.setattr(config, name, value)
    assert evaluate.main(['--workdir', str(workdir)]) == 0
    assert published_row(workdir).startswith(f'| Published baseline (MAESTRO Real, 10 runs, 49 files; {note}) |')


# -----------------------------------------------------------------------------
# Runs trained on other features or folds than the workdir holds now

@pytest.fixture(scope='module')
def reextracted(demo_root, demo_workdir, tmp_path_factory):
    """A workdir with run0 of the official folds, then extracted again with other fold files (make_folds.py)."""
    import make_folds
    path = tmp_path_factory.mktemp('reextracted')
    workdir = copy_workdir(demo_workdir, path / 'work')
    manifest = json.loads((workdir / config.FEATURES_DIR / 'manifest.json').read_text())
    stems = fold_test_stems(1)
    write_random_scores(workdir, write_run(workdir / config.RUNS_DIR / 'run0', stems,
                                           runs.run_record(manifest, 150, 'mse')), stems)
    assert evaluate.main(['--workdir', str(workdir)]) == 0
    assert make_folds.main(['--folds-dir', str(path / 'folds'), '--split', str(path / 'split.csv')]) == 0
    extract_features.extract(demo_root, workdir, path / 'folds', jobs=1, split_file=path / 'split.csv')
    return workdir


@pytest.mark.parametrize('script', ['evaluate', 'evaluate --scores', 'infer', 'plot_results', 'plot_results --scores',
                                    'compare'])
def test_runs_of_other_fold_files_than_the_workdir_now_are_refused_naming_them(reextracted, demo_root, script,
                                                                               tmp_path, capsys):
    import compare
    import infer
    import plot_results
    scores = reextracted / config.RUNS_DIR / 'run0' / 'scores'
    calls = {'evaluate': (evaluate.main, ['--workdir', reextracted]),
             'evaluate --scores': (evaluate.main, ['--workdir', reextracted, '--scores', scores]),
             'plot_results --scores': (plot_results.main, ['--workdir', reextracted, '--scores', scores, '--only',
                                                           'files', '--out', tmp_path / 'pictures']),
             'infer': (infer.main, ['--audio', demo_root / config.AUDIO_DIR / 'cafe_restaurant', '--workdir',
                                    reextracted, '--out', tmp_path / 'out']),
             'plot_results': (plot_results.main, ['--workdir', reextracted, '--out', tmp_path / 'pictures']),
             'compare': (compare.main, [reextracted, reextracted, '--out', tmp_path / 'comparison'])}
    main, argv = calls[script]
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    run_dir = reextracted / config.RUNS_DIR / 'run0'
    assert err.startswith(f'error: {run_dir}: trained on other features than ') and err.count('\n') == 1
    assert 'features.folds_sha256: the official folds then, other fold files (hash ' in err
    assert '--run 0 --restart' in err and not any(tmp_path.iterdir())


# -----------------------------------------------------------------------------
# Paths with spaces: the printed hints are shell commands that work when pasted

def pasted(err, script):
    """The command after 'run: ' in an error line, split as a shell splits it -> the arguments of `script`."""
    argv = shlex.split(err.split('run: ', 1)[1])
    assert argv[:2] == ['python', script], argv
    return argv[2:]


@pytest.mark.slow
def test_a_workdir_with_a_space_runs_end_to_end_and_its_hints_work_when_pasted(demo_root, tmp_path, monkeypatch,
                                                                               capsys):
    workdir, folds = tmp_path / 'work dir', tmp_path / 'my folds'
    shutil.copytree(config.FOLDS_DIR, folds)
    train = ['--workdir', str(workdir), '--folds', '1', '--loss', 'mse'] + EPOCH + SMALL
    assert extract_features.main(['--data-root', str(demo_root), '--workdir', str(workdir), '--folds-dir',
                                  str(folds), '--jobs', '1']) == 0
    assert task4b.main(train) == 0 and evaluate.main(['--workdir', str(workdir)]) == 0

    monkeypatch.setattr(config, 'FMAX', 13000.0)              # config.py edited after extraction
    capsys.readouterr()
    assert evaluate.main(['--workdir', str(workdir)]) == 2 and task4b.main(train) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0] == err[1]                  # both name the features and the command to run
    argv = pasted(err[0], 'extract_features.py')
    assert argv[argv.index('--workdir') + 1] == str(workdir) and argv[argv.index('--folds-dir') + 1] == str(folds)
    assert extract_features.main(argv + ['--jobs', '1']) == 0

    capsys.readouterr()                                        # the run was trained on the old features
    assert evaluate.main(['--workdir', str(workdir)]) == 2
    argv = pasted(capsys.readouterr().err, 'task4b.py')
    assert task4b.main(argv + ['--folds', '1', '--loss', 'mse'] + EPOCH + SMALL) == 0
    assert evaluate.main(['--workdir', str(workdir)]) == 0
    assert json.loads((workdir / 'results.json').read_text())['n_runs'] == 1


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
    assert err.startswith("error: config.LOSS = 'hinge': expected one of ") and err.endswith('; set in config.py\n')
    assert all(repr(name) in err for name in model.LOSSES) and err.count('\n') == 1


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
        runtime.load_checkpoint(path, runs.training_settings(42, 1, 'bce'), torch.Generator())


def test_a_truncated_checkpoint_is_refused_in_one_line(tmp_path):
    path = tmp_path / 'checkpoint.pt'
    torch.save({'epoch': 3, 'model': {'w': torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(utils.DataError, match='checkpoint.pt: not a checkpoint of task4b.py that loads safely'):
        runtime.load_checkpoint(path, runs.training_settings(42, 1, 'bce'), torch.Generator())


@pytest.mark.slow
def test_a_failing_jobs_child_is_named_with_its_log_and_the_others_finish(demo_workdir, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    workdir = copy_workdir(demo_workdir, tmp_path)
    (workdir / config.FEATURES_DIR / 'fold2.npz').unlink()                    # fold 2 cannot train
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '2', '--jobs', '2'] + EPOCH + SMALL) == 2
    err = capsys.readouterr().err
    log = workdir / config.RUNS_DIR / 'run0' / 'fold2.log'
    assert f'run 0 fold 2 (log {log})' in err and err.count('\n') == 1
    assert 'fold2.npz: missing' in log.read_text()
    assert (workdir / config.RUNS_DIR / 'run0' / 'fold1' / 'metrics.json').is_file()        # the other finished
    assert not (workdir / config.RUNS_DIR / 'run0' / 'fold2').exists()
    assert not (workdir / 'results.json').exists()


# -----------------------------------------------------------------------------
# A setting added to config.py at its default changes nothing for the runs recorded before it

def test_a_run_recorded_before_a_setting_existed_reads_it_as_its_default(demo_workdir, tmp_path):
    workdir, manifest = recorded_as_maestro_real(demo_workdir, tmp_path)
    today = runs.run_record(manifest, 150, 'mse')
    older = json.loads(json.dumps(today))                  # as a version without FRONT_END recorded it
    del older['training']['config']['FRONT_END'], older['features']['params']['front_end']
    assert runs.record_id(older) == runs.record_id(today)
    assert utils.differences(runs.complete(older), runs.complete(today)) == []
    stems = fold_test_stems(1)
    for run, record in (('run0', older), ('run1', today)):
        write_random_scores(workdir, write_run(workdir / config.RUNS_DIR / run, stems, record), stems)
    assert [d.name for d in runs.select_runs(workdir)[0]] == ['run0', 'run1']        # they combine
    assert evaluate.main(['--workdir', str(workdir)]) == 0
    assert published_row(workdir).startswith('| Published baseline (MAESTRO Real, 10 runs, 49 files; same protocol) |')

    other = json.loads(json.dumps(today))
    other['training']['config']['GRU_UNITS'] = 16
    assert runs.record_id(other) != runs.record_id(today)
    assert utils.differences(runs.complete(older), runs.complete(other)) == [('training.config.GRU_UNITS', 32, 16)]
