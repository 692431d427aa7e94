"""Model files are safe to share: best_model.pt and checkpoint.pt load with torch's safe loader, and a file that
would run code when unpickled is refused before any of it runs."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import config
import infer
import score_io
import task4b
from helpers import copy_workdir, write_run


class TouchOnLoad:
    """Unpickling this calls Path.touch(marker): what a hostile model file could do instead."""

    def __init__(self, marker):
        self.marker = Path(marker)

    def __reduce__(self):
        return Path.touch, (self.marker,)


def hostile_file(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'model': TouchOnLoad(marker), 'epoch': 1}, path)
    return path


def run_with_model(workdir):
    """runs/run0 as task4b.py leaves it, with a score file; its fold1/best_model.pt is for the test to write."""
    run_dir = write_run(workdir / config.RUNS_DIR / 'run0', ['a'])
    score_io.write_score_file(run_dir / 'scores' / 'a.tsv', np.zeros((5, len(config.HARD_CLASSES))))
    return run_dir / 'fold1' / 'best_model.pt'


def test_the_hostile_file_would_run_code_if_loaded_unsafely(tmp_path):
    marker = tmp_path / 'marker'
    torch.load(hostile_file(tmp_path / 'x.pt', marker), weights_only=False)
    assert marker.exists()                         # so the tests below would see it, were it ever loaded unsafely


@pytest.fixture
def audio_dir(tmp_path):
    (tmp_path / 'audio').mkdir()
    sf.write(tmp_path / 'audio' / 'a.wav', np.zeros(config.SAMPLE_RATE, np.float32), config.SAMPLE_RATE)
    return tmp_path / 'audio'


def test_infer_refuses_a_best_model_that_would_run_code(tmp_path, audio_dir, capsys):
    marker = tmp_path / 'marker'
    path = hostile_file(run_with_model(tmp_path / 'work'), marker)
    assert infer.main(['--audio', str(audio_dir), '--workdir', str(tmp_path / 'work'), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {path}: not a best_model.pt of task4b.py that loads safely') and err.count('\n') == 1
    assert not marker.exists()


def test_task4b_resume_refuses_a_checkpoint_that_would_run_code(demo_workdir, tmp_path, capsys):
    workdir = copy_workdir(demo_workdir, tmp_path / 'work')
    marker = tmp_path / 'marker'
    path = hostile_file(workdir / config.RUNS_DIR / 'run0' / 'fold1' / 'checkpoint.pt', marker)
    assert task4b.main(['--workdir', str(workdir), '--folds', '1', '--epochs', '1', '--device', 'cpu', '--resume']) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {path}: not a checkpoint of task4b.py that loads safely') and 'Traceback' not in err
    assert not marker.exists()


def test_a_truncated_best_model_is_refused_in_one_line(tmp_path, audio_dir, capsys):
    path = run_with_model(tmp_path / 'work')
    torch.save({'model': {'w': torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    assert infer.main(['--audio', str(audio_dir), '--workdir', str(tmp_path / 'work'), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {path}: not a best_model.pt of task4b.py that loads safely') and err.count('\n') == 1
