"""The committed split and the official 5-fold files; make_folds.py for other data sets."""
import pytest

import config
import make_folds
import utils

PARTS = ('train', 'val', 'test')
N_FILES = len(utils.development_file_ids())


@pytest.fixture(scope='module')
def folds():
    """The committed fold files, as the other scripts read them."""
    return {k: utils.read_fold(k) for k in range(1, config.N_FOLDS + 1)}


def test_split_file_lists_the_49_development_ids():
    assert sorted(utils.read_file_list(config.DEVELOPMENT_SPLIT)) == sorted(utils.development_file_ids())
    assert N_FILES == 49


def test_every_file_is_in_exactly_one_test_fold(folds):
    tested = [i for parts in folds.values() for i in parts['test']]
    assert sorted(tested) == sorted(utils.development_file_ids())


def test_parts_of_a_fold_are_disjoint_and_cover_all_files(folds):
    for k, parts in folds.items():
        ids = [i for part in PARTS for i in parts[part]]
        assert len(ids) == len(set(ids)), f'fold {k}: a file is in two parts'
        assert sorted(ids) == sorted(utils.development_file_ids()), f'fold {k}'


def test_the_official_folds_are_recognised_by_their_hash(tmp_path):
    assert utils.folds_sha256() == config.OFFICIAL_FOLDS_SHA256
    make_folds.main(['--split', str(tmp_path / 'split.csv'), '--folds-dir', str(tmp_path / 'folds')])
    assert utils.folds_sha256(tmp_path / 'folds') != config.OFFICIAL_FOLDS_SHA256


# -----------------------------------------------------------------------------
# make_folds.py: a scene-stratified split for other data sets

@pytest.fixture(scope='module')
def own_folds():
    return make_folds.make_folds(utils.development_file_ids())


def test_make_folds_tests_every_file_once_and_keeps_the_parts_disjoint(own_folds):
    tested = [i for parts in own_folds.values() for i in parts['test']]
    assert sorted(tested) == sorted(utils.development_file_ids())
    for k, parts in own_folds.items():
        ids = [i for part in PARTS for i in parts[part]]
        assert sorted(ids) == sorted(utils.development_file_ids()), k


def test_make_folds_parts_are_about_55_25_20_percent_and_span_the_scenes(own_folds):
    for k, parts in own_folds.items():
        share = {part: len(parts[part]) / N_FILES for part in PARTS}
        assert abs(share['train'] - 0.55) <= 0.04, (k, share)
        assert abs(share['val'] - 0.25) <= 0.04, (k, share)
        assert abs(share['test'] - 0.20) <= 0.02, (k, share)
        assert {utils.scene_of(i) for i in parts['train']} == set(config.SCENES), k


def test_make_folds_does_not_depend_on_the_order_of_the_ids():
    ids = utils.development_file_ids()
    assert make_folds.make_folds(ids[::-1]) == make_folds.make_folds(ids)


def test_make_folds_writes_where_it_is_told_and_never_over_the_official_files(tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in config.FOLDS_DIR.glob('*.csv')}
    assert make_folds.main(['--folds-dir', str(config.FOLDS_DIR), '--split', str(tmp_path / 's.csv')]) == 2
    assert make_folds.main(['--folds-dir', str(tmp_path / 'f'), '--split', str(config.DEVELOPMENT_SPLIT)]) == 2
    assert 'official' in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in config.FOLDS_DIR.glob('*.csv')} == before
    assert make_folds.main(['--folds-dir', str(tmp_path / 'f'), '--split', str(tmp_path / 's.csv')]) == 0
    assert len(list((tmp_path / 'f').glob('fold*_*.csv'))) == 3 * config.N_FOLDS
