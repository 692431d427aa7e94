"""Shared fixtures: the demo data set at the default scale and its extracted features, made once per session."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the flat scripts of the repository

import config  # noqa: E402


@pytest.fixture(autouse=True, scope='session')   # session: also around the shared fixtures below
def one_math_thread():
    """One torch thread for the whole suite: it runs beside other processes on 2 cores, where two OpenMP threads
    per process wait on each other and slow training down many times (measured: 0.15 s -> 13 s a step); and
    the thread count changes the last bits of results that tests compare across runs."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """The 49 demo files at config.DEMO_SCALE (about 20 min of audio), in the MAESTRO Real layout."""
    import demo_data
    root = tmp_path_factory.mktemp('demo')
    demo_data.generate_demo_dataset(root, scale=config.DEMO_SCALE, seed=config.DEMO_SEED, progress=False)
    return root


@pytest.fixture(scope='session')
def demo_workdir(demo_root, tmp_path_factory):
    """A workdir holding the features, fold arrays and metadata of demo_root (the repository's fold lists)."""
    import extract_features
    workdir = tmp_path_factory.mktemp('workdir')
    extract_features.extract(demo_root, workdir)
    return workdir
