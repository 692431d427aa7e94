"""Pretrained embeddings at the baseline's 0.2 s frames (config.EMBEDDINGS, off by default), from the networks of
pretrained.py: what extract_features.py stores beside the mel bands and infer.py computes for new audio
(docs/method.md, Pretrained embeddings).

    net, sha256 = embeddings.load_embedder()                   # config.EMBEDDINGS from config.EMBEDDINGS_CHECKPOINT
    emb = embeddings.at_frames(net, 'beats', audio, n_frames)  # mono audio at SAMPLE_RATE -> (n_frames, 768)
"""
import functools
import hashlib
import math
import shlex
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import librosa
import numpy as np
import torch

import config
import utils
from pretrained import (BEATS_DEFAULTS, BEATS_FRAME_LENGTH, BEATS_FRAME_SHIFT, BEATS_SAMPLE_RATE, BEATS_WHAT, BEATs,
                        CNN14, CNN14_CHANNELS, CNN14_HOP, CNN14_SAMPLE_RATE, CNN14_TIME_POOLS, beats_embeddings,
                        cnn14_embeddings, load_beats, load_cnn14)
from utils import DataError

DIR = 'embeddings'                            # <workdir>/features/embeddings/<stem>.npz
CODE = ('pretrained.py', 'embeddings.py')     # recorded with the embeddings only: without them no number depends on it

WINDOW_SECONDS = 10.0        # the clips both networks were trained on (AudioSet)
# a whole number of steps of both networks (50 x 0.16 s, 25 x 0.32 s): the steps of every window on one grid, at
# least 1 s of context either side; every 4.8 s took 35 min instead of 21 for BEATs on MAESTRO Real (docs/speed.md)
WINDOW_HOP_SECONDS = 8.0
WINDOWS_PER_BATCH = 8        # 10-s windows through the network at once


@dataclass(frozen=True)
class Embedder:
    load: Callable           # (path, device) -> the network in eval mode (DataError for a file it cannot use)
    embed: Callable          # (net, (batch, samples) at sample_rate) -> ((batch, steps, width) numpy, step in s)
    sample_rate: int
    width: int               # values per step: the width the model's fusion is built for
    centre: float            # s, the centre of step 0 (of the frames it pools)


EMBEDDERS = {
    # step s pools filterbank frames 16 s .. 16 s + 15, each 25 ms long from 10 ms x its index: centre 0.0875 s
    'beats': Embedder(load_beats, beats_embeddings, BEATS_SAMPLE_RATE, BEATS_DEFAULTS['encoder_embed_dim'],
                      (7.5 * BEATS_FRAME_SHIFT + BEATS_FRAME_LENGTH / 2) / BEATS_SAMPLE_RATE),
    # step s pools the centred frames 32 s .. 32 s + 31, frame j centred at 10 ms x j: centre 0.155 s
    'cnn14': Embedder(load_cnn14, cnn14_embeddings, CNN14_SAMPLE_RATE, CNN14_CHANNELS[-1],
                      (math.prod(CNN14_TIME_POOLS) - 1) / 2 * CNN14_HOP / CNN14_SAMPLE_RATE),
}


# BEATs iter3 and iter3+ (the published checkpoints' 'cfg') where they differ from the defaults
BEATS_PUBLISHED = {'deep_norm': True, 'relative_position_embedding': True, 'max_distance': 800, 'gru_rel_pos': True}


def published_network(kind):
    """A network of `kind` in the size of the published checkpoints, random weights (for counting its cost)."""
    return BEATs(BEATS_PUBLISHED) if kind == 'beats' else CNN14()


def embedding_width():
    """Values per frame that config.EMBEDDINGS adds to the mel bands: 768 (BEATs), 2048 (CNN14), 0 (none)."""
    return EMBEDDERS[config.EMBEDDINGS].width if config.EMBEDDINGS in EMBEDDERS else 0


_SHA256 = {}


def checkpoint_sha256(path):
    """SHA-256 of a checkpoint file, hashed once per (file, size, modification time) in a process."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        with open(path, 'rb') as f:
            _SHA256[key] = hashlib.file_digest(f, 'sha256').hexdigest()
    return _SHA256[key]


def load_embedder(kind=None, path=None, device=None):
    """config.EMBEDDINGS' network from config.EMBEDDINGS_CHECKPOINT (or `kind`, `path`) on `device` (default: the
    GPU when there is one) -> (net, the file's SHA-256). One line naming the file for a checkpoint it cannot use."""
    kind, path = kind or config.EMBEDDINGS, str(path or config.EMBEDDINGS_CHECKPOINT)
    embedder = EMBEDDERS[kind]
    if not path:
        raise DataError(f"config.EMBEDDINGS = {kind!r} and no checkpoint: give its file, --set "
                        f"EMBEDDINGS_CHECKPOINT=PATH (where to get it: docs/method.md, Pretrained embeddings)")
    net = embedder.load(path, device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    width = net.cfg['encoder_embed_dim'] if kind == 'beats' else embedder.width
    if width != embedder.width:
        raise DataError(f"{path}: a BEATs of {width}-value embeddings; expected {BEATS_WHAT} of "
                        f"{embedder.width} (the published checkpoints' width, which the model's fusion is built for)")
    return net, checkpoint_sha256(path)


@functools.lru_cache(maxsize=1)
def configured_embedder(kind, path, device):
    """load_embedder's network, loaded once per process for config.EMBEDDINGS' values (infer.py, file by file)."""
    return load_embedder(kind, path, device)[0]


def embedding_steps(net, kind, audio):
    """audio (samples,) at the network's sample rate -> (steps (n, width) float32, the step in s): 10-s windows
    every 8 s, the last zero-padded to 10 s, WINDOWS_PER_BATCH at a time; each step from the window in which its
    centre is farthest from the window's edges (the earlier window on a tie)."""
    embedder = EMBEDDERS[kind]
    window = round(WINDOW_SECONDS * embedder.sample_rate)
    hop = round(WINDOW_HOP_SECONDS * embedder.sample_rate)
    n_windows = 1 + max(0, math.ceil((len(audio) - window) / hop))
    padded = np.zeros((n_windows - 1) * hop + window, dtype=np.float32)
    padded[:len(audio)] = audio
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)[::hop]             # (n_windows, window)
    batches = [embedder.embed(net, windows[k:k + WINDOWS_PER_BATCH].copy())
               for k in range(0, n_windows, WINDOWS_PER_BATCH)]
    emb, step = np.concatenate([e for e, _ in batches]), batches[0][1]      # (windows, steps per window, width)
    per_hop, per_window = round(WINDOW_HOP_SECONDS / step), emb.shape[1]
    centres = embedder.centre + step * np.arange(per_window)        # (steps per window,) s within a window
    margin = np.minimum(centres, WINDOW_SECONDS - centres)           # its context on the shorter side
    steps = np.empty(((n_windows - 1) * per_hop + per_window, emb.shape[2]), dtype=np.float32)
    best = np.full(len(steps), -np.inf)
    for k in range(n_windows):
        index = k * per_hop + np.arange(per_window)
        better = margin > best[index]
        steps[index[better]], best[index[better]] = emb[k, better], margin[better]
    return steps, step


def frames_from_steps(steps, step, centre, n_frames):
    """Steps (n, width), step s centred at centre + s x step seconds -> (n_frames, width) float32 at the baseline's
    frames (frame i centred at i x HOP_LENGTH samples, or half a window later without CENTER), interpolated linearly
    between the steps around each frame's centre, the first or last step beyond them."""
    times = (np.arange(n_frames) * config.HOP_LENGTH + (0 if config.CENTER else config.N_FFT / 2)) / config.SAMPLE_RATE
    position = np.clip((times - centre) / step, 0, len(steps) - 1)  # (frames,) in steps
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, len(steps) - 1)
    weight = (position - low)[:, None].astype(np.float32)
    return ((1 - weight) * steps[low] + weight * steps[high]).astype(np.float32)  # (frames, width)


def at_frames(net, kind, audio, n_frames):
    """Mono audio at config.SAMPLE_RATE (audio_io.read_audio) -> the network's embeddings at the n_frames frames of
    its mel features, (n_frames, width) float32."""
    embedder = EMBEDDERS[kind]
    audio = librosa.resample(np.asarray(audio, dtype=np.float32), orig_sr=config.SAMPLE_RATE,
                             target_sr=embedder.sample_rate).astype(np.float32)
    steps, step = embedding_steps(net, kind, audio)
    return frames_from_steps(steps, step, embedder.centre, n_frames)


def record(sha256):
    """What stored embeddings depend on beside the audio (the checkpoint by its SHA-256, not its path)."""
    return {'model': config.EMBEDDINGS, 'sha256': sha256, 'width': embedding_width(), 'code': utils.code_record(CODE)}


def path(workdir, file_id):
    """`<workdir>/features/embeddings/<stem>.npz`: one file's embeddings at its frames, and what they came from."""
    return Path(workdir) / config.FEATURES_DIR / DIR / f'{utils.file_stem(file_id)}.npz'


def stored(path, source):
    """The embeddings saved at `path` if they were computed from `source` (a JSON text), else None."""
    try:
        with np.load(path) as data:
            return data['embeddings'] if str(data['source']) == source else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def check(manifest_path, recorded, run):
    """Refuse features whose embeddings pretrained.py's code of today would not compute, or that another checkpoint
    than config.EMBEDDINGS_CHECKPOINT computed (when a command gives one; training needs none)."""
    checkpoint = config.EMBEDDINGS_CHECKPOINT
    run += f' --set EMBEDDINGS_CHECKPOINT={shlex.quote(checkpoint or "PATH")}'
    for name, _, _ in utils.differences(recorded.get('code', {}), utils.code_record(CODE))[:1]:
        raise DataError(f'{manifest_path}: the code of {name} changed since the embeddings were computed (comments '
                        f'and docstrings aside); run: {run}')
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise DataError(f'{checkpoint}: no such file; expected the checkpoint of config.EMBEDDINGS = '
                            f'{config.EMBEDDINGS!r} (SHA-256 {recorded.get("sha256")}, its features)')
        sha256 = checkpoint_sha256(checkpoint)
        if sha256 != recorded.get('sha256'):
            raise DataError(f'{manifest_path}: features made with the checkpoint of SHA-256 {recorded.get("sha256")}; '
                            f'{checkpoint} is another file (SHA-256 {sha256}); run: {run}')
