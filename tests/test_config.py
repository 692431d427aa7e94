"""config.py edits that no script can work with: one line naming the setting and what it must be, exit status 2,
before any work starts, from every script; importing config.py never fails on them."""
import ast
from pathlib import Path

import pytest

import compare
import config
import evaluate
import extract_features
import infer
import model
import plot_results
import task4b
import utils


def script_calls(tmp):
    """Each script's main with arguments that would start real work (on an empty tmp folder)."""
    return {
        'extract_features.py': (extract_features.main, ['--data-root', tmp / 'data', '--workdir', tmp / 'work']),
        'task4b.py': (task4b.main, ['--workdir', tmp / 'work', '--epochs', '1', '--device', 'cpu']),
        'evaluate.py': (evaluate.main, ['--workdir', tmp / 'work']),
        'infer.py': (infer.main, ['--audio', tmp / 'audio', '--workdir', tmp / 'work', '--out', tmp / 'out']),
        'plot_results.py': (plot_results.main, ['--workdir', tmp / 'work']),
        'compare.py': (compare.main, [tmp / 'a', tmp / 'b', '--out', tmp / 'comparison']),
    }


EDITS = [  # (setting, value, the start of the message)
    ('N_MELS', 16, "config.N_MELS = 16: the front end 'mel' gives 16 input bands, and the max-pools over frequency "
                   'of POOL_SIZES = [5, 2, 2] reduce them to 0; expected at least their product, 20'),
    ('POOL_SIZES', [4, 4, 4, 4], "config.POOL_SIZES = [4, 4, 4, 4]: the front end 'mel' gives 64 input bands"),
    ('FRONT_END', 'beets', "config.FRONT_END = 'beets': expected one of 'mel' (front_end.FRONT_ENDS)"),
    ('BATCH_SIZE', 0, 'config.BATCH_SIZE = 0: expected an integer of at least 1'),
    ('HARD_CLASSES', config.HARD_CLASSES + ['dog barking'],
     "config.HARD_CLASSES: 'dog barking' is not in config.CLASSES"),
    ('THRESHOLD', 1.5, 'config.THRESHOLD = 1.5: expected a number in [0, 1]'),
    ('THRESHOLD', '0.5', "config.THRESHOLD = '0.5': expected a number in [0, 1]"),
    ('HARD_LABEL_THRESHOLD', -0.1, 'config.HARD_LABEL_THRESHOLD = -0.1: expected a number in [0, 1]'),
    ('OUTPUT_BIAS_INIT', 'zeros', "config.OUTPUT_BIAS_INIT = 'zeros': expected 'prior' or 'torch'"),
    ('OUTPUT_BIAS_CLIP', 0.5, 'config.OUTPUT_BIAS_CLIP = 0.5: expected a number in (0, 0.5)'),
    ('TIMELINE', 'segment', "config.TIMELINE = 'segment': expected 'fold' or 'file'"),
    ('SEQUENCE_LENGTH', 0, 'config.SEQUENCE_LENGTH = 0: expected an integer of at least 1'),
    ('GRU_UNITS', 0.5, 'config.GRU_UNITS = 0.5: expected an integer of at least 1'),
    ('CONV_KERNEL', 4, 'config.CONV_KERNEL = 4: expected an odd integer of at least 1'),
    ('LEARNING_RATE', 0, 'config.LEARNING_RATE = 0: expected a number > 0'),
    ('ADAM_BETAS', (0.9, 1.0), 'config.ADAM_BETAS = (0.9, 1.0): expected a list of 2 items, each a number in [0, 1)'),
    ('DROPOUT', 1.0, 'config.DROPOUT = 1.0: expected a number in [0, 1)'),
    ('FMAX', 30000.0, 'config.FMAX = 30000.0 with config.FMIN = 50.0: expected FMIN < FMAX <= SAMPLE_RATE / 2'),
    ('N_FOLDS', 1, 'config.N_FOLDS = 1: expected an integer of at least 2'),
    ('MEDIAN_FILTER', 4, 'config.MEDIAN_FILTER = 4: expected an odd integer of at least 1'),
    ('MEDIAN_FILTER_BY_CLASS', {'coffee machine': 5},
     "config.MEDIAN_FILTER_BY_CLASS: 'coffee machine' is not an evaluated class"),
    ('MEDIAN_FILTER_BY_CLASS', {'car': 0}, "config.MEDIAN_FILTER_BY_CLASS = {'car': 0}: expected a dict of values, "
                                           'each an odd integer'),
    ('TUNE_MEDIAN_FILTERS', [1, 2], 'config.TUNE_MEDIAN_FILTERS = [1, 2]: expected a list of items, each an odd integer'),
    ('ENERGY_COUNTRY', 'Finland', "config.ENERGY_COUNTRY = 'Finland': expected a country's 3-letter ISO code"),
]


@pytest.mark.parametrize('script', list(script_calls(Path('.'))))
@pytest.mark.parametrize('name, value, message', EDITS, ids=[f'{n}={v!r}' for n, v, _ in EDITS])
def test_an_impossible_config_value_is_one_line_naming_the_setting(script, name, value, message, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.setattr(config, name, value)
    main, argv = script_calls(tmp_path)[script]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {message}') and err.endswith('; set in config.py\n'), err
    assert err.count('\n') == 1 and 'Traceback' not in err
    assert not any(tmp_path.iterdir())                                     # refused before any work


@pytest.mark.parametrize('given, source', [(['--set', 'POOL_SIZES=[4,4,4,4]'], '--set POOL_SIZES=[4,4,4,4]'),
                                           (['--config', 'EXPERIMENT'], '--config EXPERIMENT')])
def test_a_refused_value_names_the_setting_and_where_it_came_from(given, source, tmp_path, capsys):
    experiment_file = tmp_path / 'pools.py'
    experiment_file.write_text('POOL_SIZES = [4, 4, 4, 4]\n')
    given = [str(experiment_file) if a == 'EXPERIMENT' else a for a in given]
    assert extract_features.main(['--data-root', tmp_path / 'data', '--workdir', tmp_path / 'work', *given]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: config.POOL_SIZES = [4, 4, 4, 4]: '), err
    assert err.endswith(f"; set by {source.replace('EXPERIMENT', str(experiment_file))}\n") and 'config.py' not in err


def test_an_unknown_loss_is_refused_by_training_naming_the_losses_there_are(tmp_path, capsys):
    assert task4b.main(['--workdir', tmp_path / 'work', '--set', 'LOSS=hinge']) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config.LOSS = 'hinge': expected one of ") and err.count('\n') == 1
    assert all(repr(name) in err for name in model.LOSSES) and err.endswith('; set by --set LOSS=hinge\n')
    assert not (tmp_path / 'work').exists()


def test_the_default_config_passes_the_check():
    assert utils.config_problem() is None


def test_config_with_a_hard_class_missing_from_classes_still_imports():
    source = Path(config.__file__).read_text()
    edited = source.replace("'metro leaving',\n]", "'metro leaving', 'dog barking',\n]", 1)
    assert edited != source
    namespace = {'__file__': config.__file__}
    exec(compile(edited, 'config.py', 'exec'), namespace)                 # importing must not fail
    assert namespace['HARD_CLASSES'][-1] == 'dog barking' and len(namespace['HARD_INDEX']) == 11


def test_the_scripts_import_one_another_one_way():
    """No import circle among the scripts, at the top of a file or inside a function."""
    repo = Path(config.__file__).parent
    scripts = {p.stem: p for p in repo.glob('*.py')}
    imports = {}
    for name, path in scripts.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
        imports[name] = (found & set(scripts)) - {name}       # `import experiment` under __main__: itself

    def circle(name, path):
        for other in imports[name]:
            if other in path:
                return path[path.index(other):] + [other]
            found = circle(other, path + [other])
            if found:
                return found
        return None
    assert all(circle(name, [name]) is None for name in scripts), [circle(n, [n]) for n in scripts]
