"""Precision (config.PRECISION, task4b.py --precision) and the device path: bfloat16 where it is meant to be and
float32 everywhere else, and the CUDA path checked without a GPU (torch.cuda's functions stand in where named)."""
import argparse
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

import config
import data_generator
import experiment
import infer
import runs
import runtime
import task4b
import utils
from helpers import SMALL, copy_workdir, score_files
from model import build_model
from test_training import synthetic_fold

EPOCH = ['--folds', '1', '--epochs', '1', '--device', 'cpu']


# -----------------------------------------------------------------------------
# bfloat16 on the CPU

def test_bfloat16_runs_the_conv_blocks_in_bfloat16_and_keeps_everything_else_float32(tmp_path):
    data = data_generator.fold_tensors(synthetic_fold())
    seen = {}

    def watch(name):
        return lambda module, inputs, output: seen.setdefault(name, set()).add(output.dtype)
    real_build = task4b.build_model

    def build_and_watch(device, precision):
        net = real_build(device, precision)
        for name, module in net.named_modules():
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.Linear)):
                module.register_forward_hook(watch(name))
        net.gru.register_forward_hook(lambda module, inputs, output: seen.setdefault('gru', set()).add(output[0].dtype))
        return net
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(task4b, 'build_model', build_and_watch)
        model, _ = task4b.train_fold(data, tmp_path / 'fold1', 0, 2, 'cpu', 'bce', precision='bfloat16')
    for block in range(3):
        for layer in ('conv', 'bn', 'pool'):
            assert seen[f'conv_blocks.{block}.{layer}'] == {torch.bfloat16}, (block, layer)
    assert seen['gru'] == seen['dense1'] == seen['dense2'] == {torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(b.dtype == torch.float32 for name, b in model.named_buffers() if 'running' in name)
    checkpoint = torch.load(tmp_path / 'fold1' / 'checkpoint.pt', weights_only=True)
    moments = [v for state in checkpoint['optimizer']['state'].values() for k, v in state.items() if k != 'step']
    assert moments and all(m.dtype == torch.float32 for m in moments)       # Adam's state
    stems = task4b.write_test_scores(model, data, tmp_path, 'bce')
    with torch.inference_mode():
        assert model(data['X_test'][0].unsqueeze(0)).dtype == torch.float32
    assert stems and (tmp_path / 'scores' / f'{stems[0]}.tsv').is_file()


@pytest.fixture(scope='module')
def both_precisions(demo_workdir, tmp_path_factory):
    """Fold 1 of the demo data, 2 epochs of the small CRNN, in float32 and in bfloat16, each in its own workdir."""
    workdirs = {}
    for precision in ('float32', 'bfloat16'):
        workdirs[precision] = copy_workdir(demo_workdir, tmp_path_factory.mktemp(precision))
        argv = ['--workdir', str(workdirs[precision]), '--precision', precision, '--folds', '1', '--epochs', '2',
                '--device', 'cpu'] + SMALL
        assert task4b.main(argv) == 0
    return workdirs


@pytest.mark.slow
def test_bfloat16_scores_are_close_to_float32_scores_and_the_precision_is_recorded(both_precisions):
    import score_io
    scores = {p: score_io.read_score_files(w / config.RUNS_DIR / 'run0' / 'scores') for p, w in both_precisions.items()}
    assert scores['float32'].keys() == scores['bfloat16'].keys()
    gaps = [np.abs(scores['float32'][s][config.HARD_CLASSES].to_numpy() - scores['bfloat16'][s][config.HARD_CLASSES]
                   .to_numpy()).max() for s in scores['float32']]
    assert 0 < max(gaps) < 0.05, gaps           # other numbers, close ones (measured after 2 epochs: 0.0007, 0.002
                                                # with config.py's network)
    for precision, workdir in both_precisions.items():
        settings = json.loads((workdir / config.RUNS_DIR / 'run0' / 'settings.json').read_text())
        assert settings['record']['training']['precision'] == precision
        assert f'| This baseline: demo data, loss bce, soft targets, {precision}, 2 epochs' in \
            (workdir / 'results.md').read_text()
        best = torch.load(workdir / config.RUNS_DIR / 'run0' / 'fold1' / 'best_model.pt', weights_only=True)
        assert best['precision'] == precision


@pytest.mark.slow
def test_a_resume_under_the_other_precision_is_refused(both_precisions, tmp_path, capsys):
    workdir = both_precisions['bfloat16']
    capsys.readouterr()
    # the workdir's experiment refuses it first ...
    resume = ['--workdir', str(workdir), '--resume', '--precision', 'float32', '--folds', '1', '--epochs', '2']
    assert task4b.main(resume) == 2
    assert "--precision float32 gives PRECISION = 'float32', the experiment 'bfloat16'" in capsys.readouterr().err
    # ... the run folder (its record says bfloat16) ...
    copy = tmp_path / 'copy'
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns('experiment.json'))
    assert task4b.main([str(copy) if a == str(workdir) else a for a in resume]) == 2
    assert "training.precision: 'bfloat16' there, 'float32' now" in capsys.readouterr().err
    # ... and the checkpoint itself
    settings = runs.training_settings(config.SEED, 1, 'bce', 'float32', 'cpu')
    path = workdir / config.RUNS_DIR / 'run0' / 'fold1' / 'checkpoint.pt'
    with pytest.raises(utils.DataError, match='trained with precision bfloat16, asked now float32'):
        runtime.load_checkpoint(path, {**settings, 'epochs': 2}, torch.Generator())


@pytest.mark.slow
def test_infer_builds_the_network_in_the_precision_it_was_trained_in(both_precisions, demo_root, tmp_path):
    import utils as u
    workdir = both_precisions['bfloat16']
    audio = tmp_path / 'audio'
    audio.mkdir()
    stems = [u.file_stem(i) for i in u.read_fold(1)['test'][:2]]
    for file_id in u.read_fold(1)['test'][:2]:
        shutil.copy(u.audio_path(demo_root, file_id), audio)
    assert infer.main(['--audio', str(audio), '--workdir', str(workdir), '--out', str(tmp_path / 'out')]) == 0
    for stem in stems:
        assert (tmp_path / 'out' / 'scores' / f'{stem}.tsv').read_text() == \
            (workdir / config.RUNS_DIR / 'run0' / 'scores' / f'{stem}.tsv').read_text()


def test_tf32_on_the_cpu_is_one_line(demo_workdir, tmp_path, capsys):
    workdir = copy_workdir(demo_workdir, tmp_path)
    assert task4b.main(['--workdir', str(workdir), '--precision', 'tf32'] + EPOCH) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: precision 'tf32' is float32 with the matrix units of NVIDIA GPUs") and \
        err.count('\n') == 1
    assert not (workdir / config.RUNS_DIR).exists()


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, monkeypatch):
    flags = {'avx512f avx512_bf16 avx512vl': True, 'avx2 fma amx_bf16': True, 'fp asimd bf16 sve': True,
             'avx2 avx512f avx512bw': False}
    for line, native in flags.items():
        (tmp_path / 'cpuinfo').write_text(f'processor\t: 0\nflags\t\t: {line}\n')
        assert runtime.native_bfloat16_cpu(tmp_path / 'cpuinfo') is native, line
    assert runtime.native_bfloat16_cpu(tmp_path / 'absent') is None


# -----------------------------------------------------------------------------
# The CUDA path, without a GPU

def test_a_checkpoint_with_the_rng_states_of_two_gpus_resumes_on_one(tmp_path, monkeypatch):
    settings = runs.training_settings(3, 2, 'bce', 'float32', 'cuda')
    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    path = tmp_path / 'checkpoint.pt'
    torch.save({'epoch': 1, 'finished': False, 'model': {}, 'optimizer': {}, 'schedule': {}, 'best_model': {},
                'history': [], 'settings': settings, 'augment': {}, 'rng': {'torch': torch.get_rng_state(),
                                                             'shuffle': torch.Generator().get_state(),
                                                             'cuda': states}}, path)   # as earlier versions wrote it
    restored = []
    monkeypatch.setattr(torch.cuda, 'set_rng_state', lambda state, device='cuda': restored.append((state, device)))
    runtime.load_checkpoint(path, settings, torch.Generator(), 'cuda')
    assert len(restored) == 1 and torch.equal(restored[0][0], states[0]) and restored[0][1] == 'cuda'
    restored.clear()
    runtime.load_checkpoint(path, runs.training_settings(3, 2, 'bce', 'float32', 'cpu') | {'device': 'cuda'},
                            torch.Generator(), 'cpu')
    assert restored == []                              # a CPU process sets no GPU's state


class Touched(AssertionError):
    pass


@pytest.fixture
def gpu_host(monkeypatch):
    """torch says a GPU is there; every torch.cuda call that would use it raises Touched."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)

    def touched(*args, **kwargs):
        raise Touched('torch.cuda was used')
    for name in ('_lazy_init', 'init', 'get_rng_state', 'get_rng_state_all', 'set_rng_state', 'set_rng_state_all',
                 'synchronize', 'max_memory_allocated', 'reset_peak_memory_stats', 'get_device_name',
                 'get_device_capability', 'is_bf16_supported', 'current_device', 'set_device'):
        monkeypatch.setattr(torch.cuda, name, touched)


@pytest.mark.slow
def test_a_cpu_training_on_a_gpu_host_never_touches_cuda(gpu_host, demo_workdir, tmp_path, monkeypatch):
    workdir = copy_workdir(demo_workdir, tmp_path)
    argv = ['--workdir', str(workdir), '--folds', '1', '--epochs', '2', '--device', 'cpu'] + SMALL
    with monkeypatch.context() as patch:        # killed after epoch 1's checkpoint, then resumed
        real = runtime.save_checkpoint

        def save_then_die(*args):
            real(*args)
            raise KeyboardInterrupt
        patch.setattr(runtime, 'save_checkpoint', save_then_die)
        with pytest.raises(KeyboardInterrupt):
            task4b.main(argv)
    assert task4b.main(argv + ['--resume']) == 0
    assert score_files(workdir)


def test_model_files_and_checkpoints_written_on_cuda_0_load_on_the_cpu(tmp_path, monkeypatch):
    from torch import serialization
    # tag every storage saved here as cuda:0, as a GPU training writes them
    serialization.register_package(-100, lambda storage: 'cuda:0', lambda obj, location: None)
    try:
        for name in ('best_model.pt', 'checkpoint.pt'):
            torch.save({'model': build_model('cpu').state_dict(), 'epoch': 1}, tmp_path / name)
    finally:
        serialization._package_registry[:] = [p for p in serialization._package_registry if p[0] != -100]
    with pytest.raises(RuntimeError):                  # as it is, on this CPU, the file wants a GPU
        torch.load(tmp_path / 'best_model.pt', weights_only=True)
    for name in ('best_model.pt', 'checkpoint.pt'):
        loaded = runtime.load_torch_file(tmp_path / name, 'file')
        assert all(t.device.type == 'cpu' for t in loaded['model'].values())


def jobs_args(workdir, device):
    return argparse.Namespace(workdir=workdir, epochs=1, loss='bce', precision='float32', seed=42, restart=False,
                              device=device, resume=False, jobs=4)


@pytest.mark.parametrize('device, visible, expected', [
    ('cpu', None, ['', '', '', '']),
    ('cuda', None, ['0', '1', '0', '1']),
    ('cuda', 'GPU-a1,GPU-b2', ['GPU-a1', 'GPU-b2', 'GPU-a1', 'GPU-b2']),
])
def test_jobs_give_each_child_the_threads_and_the_gpu_of_its_device(gpu_host, demo_workdir, tmp_path, monkeypatch,
                                                                    device, visible, expected):
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'Mock GPU')
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: (8, 0))
    monkeypatch.setattr(runtime.os, 'cpu_count', lambda: 8)
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    if visible is None:
        monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    else:
        monkeypatch.setenv('CUDA_VISIBLE_DEVICES', visible)
    children, real_run = [], subprocess.run

    def run(command, **kwargs):                 # the children recorded, not started; git answers as usual
        if command[0] == 'git':
            return real_run(command, **kwargs)
        children.append((command, kwargs['env']))
        return subprocess.CompletedProcess(command, 0)
    monkeypatch.setattr(subprocess, 'run', run)
    workdir = copy_workdir(demo_workdir, tmp_path)
    with experiment.for_command([]):
        runtime.run_jobs(task4b.__file__, jobs_args(workdir, device), [0, 1], [1, 2])
    assert sorted(env['CUDA_VISIBLE_DEVICES'] for _, env in children) == sorted(expected)
    assert {env['OMP_NUM_THREADS'] for _, env in children} == {'2'}            # 8 cores, 4 jobs
    assert all(command[command.index('--device') + 1] == device for command, _ in children)


def test_tf32_is_refused_on_a_gpu_without_tf32_and_taken_on_one_with_it(gpu_host, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'Tesla V100')
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: (7, 0))       # Volta: no TF32
    with pytest.raises(utils.DataError, match="on Tesla V100 give 'float32' or 'bfloat16'"):
        runtime.check_precision('tf32', 'cuda')
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: (8, 0))       # Ampere
    runtime.check_precision('tf32', 'cuda')


def test_seed_everything_sets_the_determinism_and_tf32_state_of_each_device():
    try:
        runtime.seed_everything(0, 'cuda', 'float32')
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
                torch.backends.cudnn.rnn.fp32_precision) == ('ieee', 'ieee', 'ieee')
        runtime.seed_everything(0, 'cuda', 'tf32')
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
                torch.backends.cudnn.rnn.fp32_precision) == ('tf32', 'tf32', 'tf32')
        runtime.seed_everything(0, 'cuda', 'bfloat16')
        assert torch.backends.cudnn.conv.fp32_precision == 'ieee'        # the float32 parts stay float32
    finally:
        runtime.seed_everything(0, 'cpu')
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory is False


# -----------------------------------------------------------------------------
# On a GPU (skipped without one; .ci/gpu runs them where one is lent)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device visible to torch')
TOLERANCE = {'float32': 1e-4, 'tf32': 1e-2, 'bfloat16': 5e-2}   # of the outputs' largest magnitude


def skip_without_bfloat16(precision):
    if precision == 'bfloat16' and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip(f'{torch.cuda.get_device_name()} has no bfloat16')


@cuda
@pytest.mark.parametrize('precision', ['float32', 'tf32', 'bfloat16'])
def test_the_gpu_computes_the_cpu_network_in_each_precision(precision):
    skip_without_bfloat16(precision)
    runtime.seed_everything(0, 'cuda', precision)
    gpu = build_model('cuda', precision).eval()
    cpu = build_model('cpu', 'float32').eval()
    cpu.load_state_dict({k: v.cpu() for k, v in gpu.state_dict().items()})
    x = torch.randn(4, 300, config.N_MELS)
    with torch.inference_mode():
        expected, got = cpu(x), gpu(x.cuda()).cpu()
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() <= TOLERANCE[precision] * expected.abs().max(), precision
    runtime.seed_everything(0, 'cpu')


@cuda
@pytest.mark.parametrize('precision', ['float32', 'bfloat16'])
def test_a_fold_trains_resumes_and_scores_on_the_gpu(precision, tmp_path):
    skip_without_bfloat16(precision)
    data = data_generator.fold_tensors(synthetic_fold(), device='cuda')
    model, schedule = task4b.train_fold(data, tmp_path / 'fold1', 0, 2, 'cuda', 'bce', precision=precision)
    assert next(model.parameters()).is_cuda and all(p.dtype == torch.float32 for p in model.parameters())
    checkpoint = torch.load(tmp_path / 'fold1' / 'checkpoint.pt', weights_only=True)
    assert checkpoint['rng']['cuda'].dtype == torch.uint8                  # the training GPU's state, one
    assert runtime.load_checkpoint(tmp_path / 'fold1' / 'checkpoint.pt', checkpoint['settings'], torch.Generator(),
                                   'cuda')['epoch'] == 2
    stems = task4b.write_test_scores(model, data, tmp_path, 'bce')
    import score_io
    scores = score_io.read_score_files(tmp_path / 'scores')[stems[0]][config.HARD_CLASSES].to_numpy()
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    runtime.seed_everything(0, 'cpu')
