"""The front end: audio -> the frames the model reads, one function chosen by config.FRONT_END.

    features = front_end.compute(audio)       # mono float32 at config.SAMPLE_RATE -> (frames, input_width())
    width = front_end.input_width()           # values per frame: the model's input width (64 mel bands)

FRONT_ENDS holds one entry per front end: its function and its width. 'mel', the default and the published one, is
the mel-band energies of docs/method.md (Features); a new front end is one entry here (docs/extending.md). Its
frames are 0.2 s (config.HOP_LENGTH at config.SAMPLE_RATE), as the targets and the evaluation count them.
extract_features.py and infer.py call compute(); the features' fingerprint covers this file.
"""
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import scipy.fft
from threadpoolctl import threadpool_limits

import config

FRAMES_PER_CHUNK = 128         # STFT frames transformed at once: (128, N_FFT) float32 buffers stay in cache


def librosa():
    import librosa as module     # here: 1 s of import for scripts that never build a filterbank (task4b.py, model.py)
    return module


@lru_cache(maxsize=4)
def _mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax):
    """librosa's mel filterbank (Slaney scale, area norm), transposed and cut after its last non-zero FFT bin.

    -> (n_bins, n_mels) float32, n_bins <= n_fft // 2 + 1 (5600 of 8821 for 14 kHz): the bins above fmax
    only ever multiply zeros, so their magnitudes are never computed.
    """
    mel = librosa().filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64)
    n_bins = int(np.nonzero(mel.any(axis=0))[0].max()) + 1
    return np.ascontiguousarray(mel[:, :n_bins].T, dtype=np.float32)


@lru_cache(maxsize=4)
def _window(name, n_fft):
    return librosa().filters.get_window(name, n_fft, fftbins=True).astype(np.float32)  # (n_fft,)


def compute_mel_features(audio):
    """Mono audio at config.SAMPLE_RATE -> mel-band magnitudes (frames, N_MELS) float32, frames = 1 + N // hop.

    A float32 real FFT over framed audio, chunk by chunk, instead of librosa's float64 melspectrogram: equal
    within 1e-5 of the largest magnitude (tested), at a fraction of the time and memory.
    """
    audio = np.asarray(audio, dtype=np.float32)
    n_fft = config.N_FFT
    if config.CENTER:  # centred frames: n_fft // 2 zeros each side (librosa's 'constant' pad mode, the one
        # PAD_MODE allows)
        audio = np.pad(audio, n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::config.HOP_LENGTH]  # (frames, n_fft), a view
    window = _window(config.WINDOW, n_fft)
    mel_t = _mel_filterbank(config.SAMPLE_RATE, n_fft, config.N_MELS, config.FMIN, config.FMAX)  # (bins, mels)
    out = np.empty((len(frames), config.N_MELS), dtype=np.float32)  # (frames, 64)
    buffer = np.empty((min(FRAMES_PER_CHUNK, len(frames)), n_fft), dtype=np.float32)
    # one math thread for whoever calls (extraction workers, infer.py): BLAS splits the mel product differently
    # with more threads, which changes the last bits of the features and then the scores
    with threadpool_limits(limits=1):
        for start in range(0, len(frames), FRAMES_PER_CHUNK):
            stop = min(start + FRAMES_PER_CHUNK, len(frames))
            chunk = buffer[:stop - start]
            np.multiply(frames[start:stop], window, out=chunk)
            spectrum = scipy.fft.rfft(chunk, axis=1, workers=1, overwrite_x=True)  # (chunk, n_fft/2+1) complex64
            magnitude = np.abs(spectrum[:, :len(mel_t)])                          # (chunk, bins) float32
            if config.MEL_POWER != 1:
                magnitude **= np.float32(config.MEL_POWER)
            np.matmul(magnitude, mel_t, out=out[start:stop])
    if config.LOG_MEL:
        out = np.log(out + config.LOG_OFFSET)
    return out.astype(np.float32, copy=False)


def prepare_mel():
    """The filterbank and window built once (before extraction forks its workers: each would build them again)."""
    _window(config.WINDOW, config.N_FFT)
    _mel_filterbank(config.SAMPLE_RATE, config.N_FFT, config.N_MELS, config.FMIN, config.FMAX)


@dataclass(frozen=True)
class FrontEnd:
    compute: Callable        # mono audio at config.SAMPLE_RATE -> (frames, width) float32
    width: Callable          # () -> values per frame, from config
    prepare: Callable = lambda: None   # () -> None: what compute caches, built once before workers start


FRONT_ENDS = {
    'mel': FrontEnd(compute_mel_features, lambda: config.N_MELS, prepare_mel),
}


def chosen():
    """config.FRONT_END's entry (every script refuses another name before it starts: utils.network_problem)."""
    return FRONT_ENDS[config.FRONT_END]


def compute(audio):
    return chosen().compute(audio)


def input_width():
    return chosen().width()
