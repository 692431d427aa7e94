"""The front end: audio -> the frames the model reads, one function chosen by config.FRONT_END.

    features = front_end.compute(audio)       # mono float32 at config.SAMPLE_RATE -> (frames, input_width())
    width = front_end.input_width()           # values per frame: the model's input width (64 mel bands)

FRONT_ENDS holds one entry per front end (docs/extending.md); 'mel', the default, is the mel energies of docs/method.md.
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
def _mel_tables(window, sample_rate, n_fft, n_mels, fmin, fmax):
    """The window (n_fft,) float32 and librosa's mel filterbank (Slaney scale, area norm), (n_bins, n_mels) float32
    cut after its last non-zero FFT bin (5600 of 8821 for 14 kHz): the bins above fmax are never computed."""
    mel = librosa().filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64)
    n_bins = int(np.nonzero(mel.any(axis=0))[0].max()) + 1
    return (librosa().filters.get_window(window, n_fft, fftbins=True).astype(np.float32),
            np.ascontiguousarray(mel[:, :n_bins].T, dtype=np.float32))


def prepare_mel():
    """The window and filterbank, built once (before extraction forks its workers: each would build them again)."""
    return _mel_tables(config.WINDOW, config.SAMPLE_RATE, config.N_FFT, config.N_MELS, config.FMIN, config.FMAX)


def compute_mel_features(audio):
    """Mono audio at config.SAMPLE_RATE -> mel-band magnitudes (frames, N_MELS) float32, frames = 1 + N // hop: a
    float32 FFT, chunk by chunk, within 1e-5 of librosa's float64 melspectrogram at a fraction of the time."""
    audio = np.asarray(audio, dtype=np.float32)
    n_fft = config.N_FFT
    if config.CENTER:  # centred frames: n_fft // 2 zeros each side (librosa's 'constant', the PAD_MODE allowed)
        audio = np.pad(audio, n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::config.HOP_LENGTH]  # (frames, n_fft), a view
    window, mel_t = prepare_mel()                                    # (n_fft,), (bins, mels)
    out = np.empty((len(frames), config.N_MELS), dtype=np.float32)  # (frames, 64)
    buffer = np.empty((min(FRAMES_PER_CHUNK, len(frames)), n_fft), dtype=np.float32)
    # one math thread for whoever calls (extraction workers, infer.py): BLAS splits the mel product differently
    # with more threads, which changes the last bits of the features and then the scores
    with threadpool_limits(limits=1):
        for start in range(0, len(frames), FRAMES_PER_CHUNK):
            stop = min(start + FRAMES_PER_CHUNK, len(frames))
            chunk = np.multiply(frames[start:stop], window, out=buffer[:stop - start])
            spectrum = scipy.fft.rfft(chunk, axis=1, workers=1, overwrite_x=True)  # (chunk, n_fft/2+1) complex64
            magnitude = np.abs(spectrum[:, :len(mel_t)])                          # (chunk, bins) float32
            if config.MEL_POWER != 1:
                magnitude **= np.float32(config.MEL_POWER)
            np.matmul(magnitude, mel_t, out=out[start:stop])
    if config.LOG_MEL:
        out = np.log(out + config.LOG_OFFSET)
    return out.astype(np.float32, copy=False)


@dataclass(frozen=True)
class FrontEnd:
    compute: Callable        # mono audio at config.SAMPLE_RATE -> (frames, width) float32
    width: Callable          # () -> values per frame, from config
    prepare: Callable = lambda: None   # (): builds what compute caches, once before workers start


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
