"""The committed split and the official 5-fold files; make_folds.py for other data sets."""
import pytest

import config
import make_folds
import utils

PARTS = ('train', 'val', 'test')
N_FILES = len(utils.development_file_ids())

OFFICIAL = {  # the challenge's fold lists, in their order (training files are concatenated in it)
    'fold1_train': '''
        grocery_store_01 cafe_restaurant_10 city_center_07 grocery_store_11 grocery_store_03
        metro_station_11 cafe_restaurant_13 city_center_06 grocery_store_08 cafe_restaurant_00
        residential_area_01 metro_station_04 residential_area_00 grocery_store_12 metro_station_05
        residential_area_06 residential_area_03 grocery_store_00 residential_area_04 grocery_store_02
        cafe_restaurant_06 residential_area_05 city_center_10 metro_station_01 city_center_12
        residential_area_12''',
    'fold1_val': '''
        cafe_restaurant_11 metro_station_12 cafe_restaurant_08 cafe_restaurant_14 residential_area_14
        city_center_02 city_center_05 city_center_09 cafe_restaurant_12 metro_station_10 metro_station_02
        city_center_14''',
    'fold1_test': '''
        residential_area_07 residential_area_08 residential_area_09 city_center_04 city_center_11
        cafe_restaurant_07 cafe_restaurant_04 metro_station_07 metro_station_00 grocery_store_09
        grocery_store_04''',
    'fold2_train': '''
        city_center_10 grocery_store_09 metro_station_00 grocery_store_11 grocery_store_00 metro_station_02
        residential_area_06 residential_area_00 residential_area_14 metro_station_12 cafe_restaurant_00
        city_center_07 residential_area_08 cafe_restaurant_07 residential_area_07 cafe_restaurant_08
        grocery_store_12 residential_area_04 city_center_09 metro_station_01 metro_station_04
        residential_area_09 grocery_store_04 city_center_14 residential_area_01 grocery_store_03
        cafe_restaurant_10''',
    'fold2_val': '''
        grocery_store_02 city_center_06 residential_area_03 cafe_restaurant_04 city_center_11
        metro_station_07 cafe_restaurant_12 cafe_restaurant_13 cafe_restaurant_06 city_center_05
        metro_station_11 city_center_04''',
    'fold2_test': '''
        residential_area_05 residential_area_12 city_center_12 city_center_02 cafe_restaurant_11
        cafe_restaurant_14 metro_station_10 metro_station_05 grocery_store_08 grocery_store_01''',
    'fold3_train': '''
        grocery_store_02 residential_area_04 metro_station_00 grocery_store_08 metro_station_12
        cafe_restaurant_06 residential_area_00 grocery_store_09 metro_station_10 residential_area_05
        city_center_12 cafe_restaurant_13 residential_area_07 residential_area_03 city_center_10
        residential_area_09 cafe_restaurant_04 grocery_store_04 metro_station_02 cafe_restaurant_10
        residential_area_08 residential_area_01 city_center_06 cafe_restaurant_11 cafe_restaurant_14
        city_center_14 city_center_07''',
    'fold3_val': '''
        metro_station_05 grocery_store_12 metro_station_04 city_center_11 cafe_restaurant_12
        grocery_store_01 grocery_store_00 city_center_04 residential_area_12 cafe_restaurant_07
        metro_station_07 city_center_02''',
    'fold3_test': '''
        residential_area_06 residential_area_14 city_center_05 city_center_09 cafe_restaurant_08
        cafe_restaurant_00 metro_station_11 metro_station_01 grocery_store_03 grocery_store_11''',
    'fold4_train': '''
        residential_area_14 cafe_restaurant_12 metro_station_05 metro_station_01 city_center_12
        cafe_restaurant_13 cafe_restaurant_11 grocery_store_04 cafe_restaurant_07 metro_station_10
        grocery_store_01 metro_station_07 residential_area_09 residential_area_06 city_center_09
        metro_station_12 city_center_02 cafe_restaurant_14 city_center_05 residential_area_00
        cafe_restaurant_08 residential_area_08 grocery_store_02 city_center_11 grocery_store_03
        grocery_store_08 grocery_store_09''',
    'fold4_val': '''
        residential_area_01 cafe_restaurant_00 city_center_10 residential_area_05 metro_station_11
        grocery_store_11 cafe_restaurant_04 city_center_04 city_center_14 residential_area_12
        metro_station_00 residential_area_07''',
    'fold4_test': '''
        residential_area_03 residential_area_04 city_center_07 city_center_06 cafe_restaurant_06
        cafe_restaurant_10 metro_station_04 metro_station_02 grocery_store_00 grocery_store_12''',
    'fold5_train': '''
        residential_area_05 city_center_09 metro_station_07 metro_station_10 grocery_store_08
        grocery_store_11 metro_station_00 city_center_12 metro_station_05 residential_area_08
        grocery_store_09 cafe_restaurant_07 residential_area_14 city_center_02 grocery_store_12
        city_center_11 residential_area_07 cafe_restaurant_00 cafe_restaurant_11 residential_area_09
        metro_station_01 city_center_07 cafe_restaurant_06 grocery_store_03 cafe_restaurant_04
        cafe_restaurant_14 grocery_store_01 residential_area_06''',
    'fold5_val': '''
        grocery_store_04 cafe_restaurant_08 residential_area_12 city_center_05 city_center_04
        residential_area_04 cafe_restaurant_10 grocery_store_00 city_center_06 metro_station_04
        metro_station_11 residential_area_03 metro_station_02''',
    'fold5_test': '''
        residential_area_00 residential_area_01 city_center_14 city_center_10 cafe_restaurant_12
        cafe_restaurant_13 metro_station_12 grocery_store_02''',
}


def file_id(stem):
    return f"{stem.rsplit('_', 1)[0]}/{stem}"


@pytest.fixture(scope='module')
def folds():
    """The committed fold files, as the other scripts read them."""
    return {k: utils.read_fold(k) for k in range(1, config.N_FOLDS + 1)}


def test_split_file_lists_the_49_development_ids():
    assert sorted(utils.read_file_list(config.DEVELOPMENT_SPLIT)) == sorted(utils.development_file_ids())
    assert N_FILES == 49


def test_fold_files_are_the_official_lists_in_their_order(folds):
    for name, stems in OFFICIAL.items():
        fold, part = int(name[4]), name.split('_')[1]
        assert folds[fold][part] == [file_id(s) for s in stems.split()], name


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
