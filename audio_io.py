"""Recordings as the features read them (docs/method.md, Features): a WAV of any PCM width and channel count -> mono
float32 at config.SAMPLE_RATE, refused in one line naming the file when truncated, empty or shorter than a frame.

    audio = audio_io.read_audio('data/demo/development_audio/cafe_restaurant/cafe_restaurant_00.wav')   # (samples,)
"""
import os
import struct
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

import config
from utils import DataError

READ_BLOCK = 1 << 18           # audio frames read at once (keeps peak memory at ~2x the mono signal)

def check_wav_complete(path):
    """DataError when a RIFF WAV holds fewer audio bytes than its header declares (libsndfile reads it without
    complaint, returning fewer frames)."""
    with open(path, 'rb') as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE':
            return  # not plain RIFF WAV (RF64, W64, FLAC...): leave it to libsndfile
        size, pos = os.fstat(f.fileno()).st_size, 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = struct.unpack('<4sI', f.read(8))
            if chunk == b'data':
                if length not in (0, 0xFFFFFFFF) and pos + 8 + length > size:
                    raise DataError(f'{path}: truncated WAV: the header declares {length} bytes of audio, '
                                    f'the file holds {size - pos - 8} (re-download or re-generate it)')
                return
            pos += 8 + length + (length & 1)


def read_audio(path):
    """WAV (16/24/32-bit PCM, any channel count) -> (samples,) mono float32 in [-1, 1) at config.SAMPLE_RATE."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f'{path}: audio file not found')
    check_wav_complete(path)
    try:
        with sf.SoundFile(str(path)) as f:
            n, channels, sample_rate = f.frames, f.channels, f.samplerate
            # libsndfile reads an empty WAV without complaint: its 0 s would be refused after training
            if n == 0:
                raise DataError(f'{path}: no audio samples (an empty WAV); '
                                f're-download or re-generate it, or leave it out')
            if n / sample_rate < config.FRAME_SECONDS:
                raise DataError(f'{path}: {n} samples ({n / sample_rate:.3f} s), shorter than one frame '
                                f'({config.FRAME_SECONDS} s); re-download or re-generate it, or leave it out')
            mono = np.empty(n, dtype=np.float32)
            block = np.empty((min(READ_BLOCK, n), channels), dtype=np.float32)
            pos = 0
            while pos < n:  # read in blocks: the whole stereo file at once would double peak memory
                got = f.read(out=block[:min(READ_BLOCK, n - pos)])
                if len(got) == 0:
                    raise DataError(f'{path}: truncated audio: read {pos} of {n} frames')
                np.copyto(mono[pos:pos + len(got)], got[:, 0])
                for c in range(1, channels):
                    mono[pos:pos + len(got)] += got[:, c]
                pos += len(got)
    except sf.SoundFileError as error:
        raise DataError(f'{path}: cannot read audio ({error})') from None
    mono *= np.float32(1.0 / channels)        # the channels' mean (exactly the samples for one channel)
    if sample_rate != config.SAMPLE_RATE:
        mono = librosa.resample(mono, orig_sr=sample_rate, target_sr=config.SAMPLE_RATE).astype(np.float32)
    return mono
