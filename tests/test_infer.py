"""infer.py end to end, and `evaluate.py --scores` against what task4b.py printed, on a short training run.

One small pipeline for the module: 10 demo files (2 per scene), a 5-fold split of them, features, and
task4b.py trained 1 epoch on fold 1 only (so fold 1's test files are scored by the one model infer.py finds).
"""
import contextlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest

import config
import demo_data
import evaluate
import extract_features
import infer
import post_processing
import runs
import score_io
import task4b
import tuning
import utils
from helpers import energy_kind
from utils import DataError

FILE_IDS = [f'{scene}/{scene}_{nns[k]}' for scene, nns in config.SCENES.items() for k in (0, 1)]   # 10 files


def write_folds(folds_dir, split_file):
    """Fold k: test = ids 2k-2, 2k-1; validation = the next two; training = the other six."""
    utils.write_text_atomic(split_file, 'filename\n' + ''.join(f'{i}\n' for i in FILE_IDS))
    for fold in range(1, config.N_FOLDS + 1):
        test = FILE_IDS[2 * fold - 2: 2 * fold]
        val = [FILE_IDS[(2 * fold + k) % len(FILE_IDS)] for k in (0, 1)]
        parts = {'test': test, 'val': val, 'train': [i for i in FILE_IDS if i not in test + val]}
        for part, ids in parts.items():
            utils.write_text_atomic(utils.fold_file(fold, part, folds_dir), 'filename\n' + ''.join(f'{i}\n' for i in ids))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('pipeline')
    data_root, workdir = root / 'data', root / 'work'
    demo_data.generate_demo_dataset(data_root, scale=0.1, seed=1, file_ids=FILE_IDS, progress=False)
    write_folds(root / 'folds', root / 'split.csv')
    extract_features.extract(data_root, workdir, root / 'folds', jobs=1, split_file=root / 'split.csv')
    printed = io.StringIO()
    # torch's initialisation: after 1 epoch its outputs cross the 0.5 threshold, so there are events to compare
    # (from the class priors, 1 epoch detects nothing)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, 'OUTPUT_BIAS_INIT', 'torch')
        with contextlib.redirect_stdout(printed):
            task4b.run_experiment(workdir, folds=[1], runs=1, epochs=1, device='cpu')
        yield {'data_root': data_root, 'workdir': workdir, 'printed': printed.getvalue(), 'root': root,
               'test_stems': [utils.file_stem(i) for i in FILE_IDS[:2]]}


def audio_of(trained, file_id):
    return utils.audio_path(trained['data_root'], file_id)


def audio_folder(trained, folder, file_ids):
    """One flat folder of these development files' audio, as an evaluation set is handed to infer.py."""
    folder.mkdir()
    for file_id in file_ids:
        shutil.copy(audio_of(trained, file_id), folder)
    return folder


def test_evaluate_scores_reproduces_what_task4b_printed(trained, capsys):
    workdir = trained['workdir']
    printed_line = [line for line in trained['printed'].splitlines() if line.startswith('run0: ')][-1]
    assert evaluate.main(['--workdir', str(workdir), '--scores', str(workdir / 'runs' / 'run0' / 'scores')]) == 0
    out = capsys.readouterr().out
    assert printed_line[len('run0: '):] in out.splitlines()
    assert '(2 of 10 files)' in printed_line
    saved = json.loads((workdir / 'runs' / 'run0' / 'metrics.json').read_text())
    again = json.loads((workdir / 'runs' / 'run0' / 'evaluation.json').read_text())['runs'][0]
    for key in ('ER_m', 'F1_m', 'F1_M', 'F1_thop', 'pAUC', 'class_wise', 'thresholds'):
        assert again[key] == saved[key]


def test_infer_reproduces_the_test_scores_of_the_fold_model(trained, tmp_path):
    # only fold 1 was trained: infer's average over models is that model, and fold 1's test files were scored by it
    audio = tmp_path / 'audio'
    for file_id in FILE_IDS[:2]:
        (audio / utils.scene_of(file_id)).mkdir(parents=True, exist_ok=True)
        shutil.copy(audio_of(trained, file_id), audio / utils.scene_of(file_id))
    assert infer.main(['--audio', str(audio), '--workdir', str(trained['workdir']), '--out', str(tmp_path / 'out')]) == 0
    for stem in trained['test_stems']:
        ours = (tmp_path / 'out' / 'scores' / f'{stem}.tsv').read_text()
        assert ours == (trained['workdir'] / 'runs' / 'run0' / 'scores' / f'{stem}.tsv').read_text()


def test_infer_records_the_time_and_energy_of_the_inference(trained, tmp_path):
    audio = audio_folder(trained, tmp_path / 'audio', FILE_IDS[:1])
    assert infer.main(['--audio', str(audio), '--workdir', str(trained['workdir']), '--out', str(tmp_path / 'out')]) == 0
    recorded = json.loads((tmp_path / 'out' / 'cost.json').read_text())
    assert recorded['recordings'] == 1 and recorded['models'] == 1
    spent = recorded['inference']
    assert spent['seconds'] > 0 and spent['kWh'] > 0 and spent['kind'] == energy_kind(spent['sources'])
    assert 'infer.py' in (tmp_path / 'out' / 'emissions.csv').read_text()


def test_scores_are_the_same_alone_and_in_a_folder(trained, tmp_path):
    folder, alone = tmp_path / 'folder', tmp_path / 'alone'
    for file_id in FILE_IDS[2:5]:
        (folder / utils.scene_of(file_id)).mkdir(parents=True, exist_ok=True)
        shutil.copy(audio_of(trained, file_id), folder / utils.scene_of(file_id))
    alone.mkdir()
    shutil.copy(audio_of(trained, FILE_IDS[4]), alone)
    # a second model, so that the average is over more than one (the same weights under another fold name)
    second = trained['workdir'] / 'runs' / 'run1' / 'fold2'
    second.mkdir(parents=True)
    shutil.copy(trained['workdir'] / 'runs' / 'run0' / 'fold1' / 'best_model.pt', second / 'best_model.pt')
    try:
        stems = infer.infer(folder, trained['workdir'], tmp_path / 'out_folder')
        infer.infer(alone, trained['workdir'], tmp_path / 'out_alone')
    finally:
        shutil.rmtree(trained['workdir'] / 'runs' / 'run1')
    assert stems == sorted(utils.file_stem(i) for i in FILE_IDS[2:5])
    stem = utils.file_stem(FILE_IDS[4])
    assert (tmp_path / 'out_alone' / 'scores' / f'{stem}.tsv').read_bytes() == \
        (tmp_path / 'out_folder' / 'scores' / f'{stem}.tsv').read_bytes()


def test_event_lists_are_the_post_processed_scores(trained, tmp_path):
    audio = audio_folder(trained, tmp_path / 'audio', FILE_IDS[6:8])
    infer.infer(audio, trained['workdir'], tmp_path / 'out')
    combined = pd.read_csv(tmp_path / 'out' / 'events.tsv', sep='\t')
    assert list(combined.columns) == ['filename', 'onset', 'offset', 'event_label']
    n_events = 0
    for file_id in FILE_IDS[6:8]:
        stem = utils.file_stem(file_id)
        scores = score_io.read_score_files(tmp_path / 'out' / 'scores')[stem]
        expected = [(e.onset, e.offset, e.event_label) for e in
                    post_processing.post_process_events(scores[config.HARD_CLASSES].to_numpy(), config.HARD_CLASSES, stem)]
        lines = (tmp_path / 'out' / 'events' / f'{stem}.tsv').read_text().splitlines()
        assert [(float(a), float(b), c) for a, b, c in (line.split('\t') for line in lines)] == expected
        rows = combined[combined['filename'] == f'{stem}.wav']
        assert list(zip(rows['onset'], rows['offset'], rows['event_label'])) == expected
        n_events += len(expected)
    assert len(combined) == n_events > 0
    assert set(combined['event_label']) <= set(config.HARD_CLASSES)


def test_folder_without_wavs_is_an_error(trained, tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no audio here')
    assert infer.main(['--audio', str(tmp_path / 'empty'), '--workdir', str(trained['workdir']),
                       '--out', str(tmp_path / 'out')]) == 2
    assert f'{tmp_path / "empty"}: no .wav files' in capsys.readouterr().err


def test_workdir_without_models_says_what_to_run(trained, tmp_path):
    with pytest.raises(DataError, match=r'no run\*/scores folder with score files; run: python task4b.py'):
        infer.infer(trained['data_root'], tmp_path, tmp_path / 'out')


def test_model_of_other_feature_parameters_is_refused(trained, tmp_path, monkeypatch):
    workdir = tmp_path / 'models'           # the runs alone: a workdir's features are checked before its models
    shutil.copytree(trained['workdir'] / config.RUNS_DIR, workdir / config.RUNS_DIR)
    monkeypatch.setattr(config, 'FMAX', 12000.0)
    with pytest.raises(DataError, match=r'best_model.pt: trained with feature parameter fmax = 14000.0, '
                                        r'config.py now gives 12000.0'):
        infer.infer(trained['data_root'], workdir, tmp_path / 'out')


def test_features_changed_since_training_are_refused_before_the_models(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(config, 'FMAX', 12000.0)
    with pytest.raises(DataError, match=r'manifest.json: feature parameter fmax changed since extraction'):
        infer.infer(trained['data_root'], trained['workdir'], tmp_path / 'out')


def test_infer_outputs_are_read_by_evaluate(trained, tmp_path):
    # infer's score files of development files can be evaluated like task4b's (same format, validated)
    audio = audio_folder(trained, tmp_path / 'audio', FILE_IDS[:2])
    infer.infer(audio, trained['workdir'], tmp_path / 'out')
    ours = evaluate.evaluate_scores(tmp_path / 'out' / 'scores', trained['workdir'])
    theirs = evaluate.evaluate_scores(trained['workdir'] / 'runs' / 'run0' / 'scores', trained['workdir'])
    assert ours['n_files'] == 2 and np.isclose(ours['F1_m'], theirs['F1_m'])


def test_a_model_runs_as_the_network_it_was_trained_as_whatever_config_py_says_now(trained, tmp_path, monkeypatch):
    infer.infer(trained['data_root'], trained['workdir'], tmp_path / 'as_trained')
    monkeypatch.setattr(config, 'GRU_UNITS', 16)               # best_model.pt records the settings it was built with
    infer.infer(trained['data_root'], trained['workdir'], tmp_path / 'edited')
    written = {p.name: p.read_bytes() for p in sorted((tmp_path / 'as_trained' / 'scores').glob('*.tsv'))}
    assert written and written == {p.name: p.read_bytes() for p in sorted((tmp_path / 'edited' / 'scores').glob('*.tsv'))}


def test_runs_of_other_settings_are_refused_and_a_selection_is_used(trained, tmp_path):
    workdir = tmp_path / 'work'
    shutil.copytree(trained['workdir'], workdir)
    shutil.copytree(workdir / 'runs' / 'run0', workdir / 'runs' / 'run1')
    settings_path = workdir / 'runs' / 'run1' / 'settings.json'
    settings = json.loads(settings_path.read_text())
    settings['record']['training']['epochs'] = 2
    settings['record_id'] = runs.record_id(settings['record'])
    settings_path.write_text(json.dumps(settings))
    with pytest.raises(DataError, match=r'run0 and run1 .* other settings \(training.epochs: 1 vs 2\)'):
        infer.infer(trained['data_root'], workdir, tmp_path / 'out')
    assert infer.infer(trained['data_root'], workdir, tmp_path / 'out', runs=[1]) == [p.stem for p in
                                                                                     infer.find_audio_files(trained['data_root'])]


def test_an_evaluation_setting_changed_after_training_rescores_and_recomputes_nothing(trained, tmp_path, monkeypatch):
    workdir = tmp_path / 'work'
    shutil.copytree(trained['workdir'], workdir)
    features = {p: p.stat().st_mtime_ns for p in (workdir / config.FEATURES_DIR).rglob('*.npz')}
    assert evaluate.main(['--workdir', str(workdir), '--json', str(tmp_path / 'before.json')]) == 0
    monkeypatch.setattr(config, 'MIN_EVENT_LENGTH', 3.0)
    extract_features.load_fold(workdir, 1)                                    # the features still stand
    assert evaluate.main(['--workdir', str(workdir), '--json', str(tmp_path / 'after.json')]) == 0
    before, after = (json.loads((tmp_path / f'{n}.json').read_text())['mean'] for n in ('before', 'after'))
    assert before['F1_m'] != after['F1_m']                                    # re-scored with the new setting
    infer.infer(trained['data_root'], workdir, tmp_path / 'out')              # the models still load
    assert {p: p.stat().st_mtime_ns for p in (workdir / config.FEATURES_DIR).rglob('*.npz')} == features


# -----------------------------------------------------------------------------
# Validation scores (what evaluate.py --tune chooses on) and outputs with the values chosen on validation

def validation_stems(trained, fold=1):
    return sorted(utils.file_stem(i) for i in utils.read_fold(fold, trained['root'] / 'folds')['val'])


def test_training_writes_the_scores_of_each_validation_file_of_the_fold_whole(trained):
    folder = runs.validation_scores_dir(trained['workdir'] / 'runs' / 'run0', 1)
    assert sorted(p.stem for p in folder.glob('*.tsv')) == validation_stems(trained)
    for stem in validation_stems(trained):
        with np.load(utils.file_features_path(trained['workdir'], stem)) as data:
            assert len(pd.read_csv(folder / f'{stem}.tsv', sep='\t')) == len(data['features'])


def test_validation_files_are_scored_as_the_test_files(trained, tmp_path):
    run_dir = trained['workdir'] / 'runs' / 'run0'
    net, mean, scale, loss = infer.load_model(run_dir / 'fold1' / 'best_model.pt')
    task4b.write_file_scores(net, trained['workdir'], FILE_IDS[:2], mean, scale, tmp_path, loss)
    for stem in trained['test_stems']:
        assert (tmp_path / f'{stem}.tsv').read_bytes() == (run_dir / 'scores' / f'{stem}.tsv').read_bytes()


def test_validation_scores_written_again_from_best_model_are_those_of_training(trained, tmp_path, capsys):
    workdir = tmp_path / 'work'
    shutil.copytree(trained['workdir'], workdir)
    folder = runs.validation_scores_dir(workdir / 'runs' / 'run0', 1)
    trained_scores = {p.name: p.read_bytes() for p in folder.glob('*.tsv')}
    shutil.rmtree(folder)
    assert infer.main(['--workdir', str(workdir), '--validation-scores']) == 0
    assert {p.name: p.read_bytes() for p in folder.glob('*.tsv')} == trained_scores
    assert 'run0 fold1' in capsys.readouterr().out
    assert infer.main(['--workdir', str(workdir), '--validation-scores']) == 0
    assert 'every finished fold had them' in capsys.readouterr().out


def test_infer_tune_cuts_events_with_the_threshold_and_filter_chosen_on_the_validation_files(trained, tmp_path):
    audio = audio_folder(trained, tmp_path / 'audio', FILE_IDS[6:8])
    infer.infer(audio, trained['workdir'], tmp_path / 'plain')
    infer.infer(audio, trained['workdir'], tmp_path / 'tuned', tune=True)
    written = json.loads((tmp_path / 'tuned' / 'chosen_on_validation.json').read_text())
    chosen = written['values']
    # one model: what the values were chosen on is what they cut, and nothing says otherwise
    assert written['cuts'] == 'the average of 1 model (1 fold x 1 run)'
    # one run of one fold: the choice over every fold's validation files is evaluate.py --tune's for fold 1
    ground_truth, _ = score_io.read_references(trained['workdir'])
    folds = tuning.run_folds(trained['workdir'], trained['workdir'] / 'runs' / 'run0', ground_truth)
    tuned = evaluate.tuned_metrics(trained['workdir'], folds)
    assert chosen == tuned['scoring']['chosen on validation']['values']['fold1']
    assert any(v['threshold'] != config.THRESHOLD or v['median_filter'] != 1 for v in chosen.values())   # not a no-op
    thresholds = [tuning.cut_threshold(chosen[c]) for c in config.HARD_CLASSES]         # None: -inf
    lengths = [chosen[c]['median_filter'] for c in config.HARD_CLASSES]
    for file_id in FILE_IDS[6:8]:
        stem = utils.file_stem(file_id)
        plain = score_io.read_score_files(tmp_path / 'plain' / 'scores')[stem][config.HARD_CLASSES].to_numpy()
        scores = score_io.read_score_files(tmp_path / 'tuned' / 'scores')[stem][config.HARD_CLASSES].to_numpy()
        np.testing.assert_array_equal(scores, post_processing.median_filter(plain, lengths))
        expected = post_processing.post_process_events(scores, config.HARD_CLASSES, stem, thresholds, 1)
        lines = (tmp_path / 'tuned' / 'events' / f'{stem}.tsv').read_text().splitlines()
        assert [(float(a), float(b), c) for a, b, c in (line.split('\t') for line in lines)] == \
            [(e.onset, e.offset, e.event_label) for e in expected]


def test_infer_tune_says_when_its_values_cut_an_average_of_more_models_than_they_were_chosen_on(trained, tmp_path):
    models = [trained['workdir'] / 'runs' / 'run0' / f'fold{k}' / 'best_model.pt' for k in (1, 2)]
    note = infer.tuning_note(models, [trained['workdir'] / 'runs' / 'run0'])
    assert note['chosen on'] == "the validation files of each fold, scored by that fold's models averaged over 1 run"
    assert note['cuts'].startswith('the average of 2 models (2 folds x 1 run): more models than scored each '
                                   'validation file, so narrower scores')


def test_infer_tune_writes_strict_json_with_a_threshold_below_every_score(trained, tmp_path, capsys):
    workdir = tmp_path / 'work'
    shutil.copytree(trained['workdir'], workdir)
    # one class scored 0.5 on every validation frame: its best F detects every segment, at best_fscore's -inf
    for path in runs.validation_scores_dir(workdir / 'runs' / 'run0', 1).glob('*.tsv'):
        df = pd.read_csv(path, sep='\t')
        df['people talking'] = 0.5
        score_io.write_score_file(path, df[config.HARD_CLASSES].to_numpy())
    audio = audio_folder(trained, tmp_path / 'audio', FILE_IDS[6:7])
    assert infer.main(['--audio', str(audio), '--workdir', str(workdir), '--out', str(tmp_path / 'out'), '--tune']) == 0
    assert "--tune: thresholds and median filters chosen on the validation files of each fold" in capsys.readouterr().out

    def refuse(constant):
        raise ValueError(constant)
    written = {p: json.loads(p.read_text(), parse_constant=refuse) for p in [*workdir.rglob('*.json'),
                                                                            *(tmp_path / 'out').rglob('*.json')]}
    chosen = written[tmp_path / 'out' / 'chosen_on_validation.json']['values']['people talking']
    assert chosen['threshold'] is None and 'every frame' in chosen['why']
    stem = utils.file_stem(FILE_IDS[6])
    events = (tmp_path / 'out' / 'events' / f'{stem}.tsv').read_text().splitlines()
    assert [line.split('\t')[2] for line in events].count('people talking') == 1      # active from start to end


def test_models_are_refused_for_other_model_code_not_for_other_training_code(trained, tmp_path):
    workdir = tmp_path / 'work'
    shutil.copytree(trained['workdir'], workdir)
    settings_path = workdir / 'runs' / 'run0' / 'settings.json'
    settings = json.loads(settings_path.read_text())
    for name, runs_fine in (('task4b.py', True), ('model.py', False)):
        settings['record']['training']['code'][name] = '0' * 12          # trained with other code of that file
        settings['record_id'] = runs.record_id(settings['record'])
        settings_path.write_text(json.dumps(settings))
        if runs_fine:
            assert infer.find_models(workdir)
        else:
            with pytest.raises(DataError, match=r'run0: trained with other code than this checkout holds \(model.py;'):
                infer.find_models(workdir)
