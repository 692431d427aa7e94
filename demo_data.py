"""Generate the synthetic demo data set: MAESTRO Real's layout and format, learnable classes.

    python demo_data.py                                   # 49 files at scale 0.1 (~20 min, 320 MB, ~5 s) in data/demo
    python demo_data.py --out /tmp/demo --scale 1.0       # real lengths (~200 min, 3.2 GB of WAV, ~1 min)
    python demo_data.py --scale 0.02 --seed 3 --files cafe_restaurant/cafe_restaurant_07

Writes, for the 49 development file ids of the real set (docs/method.md, Data):

    <out>/development_audio/<scene>/<scene>_NN.wav                          44.1 kHz, stereo, 24-bit PCM
    <out>/development_annotation/soft_labels_<scene>/<scene>_NN.txt         onset  offset  label  soft

How a file is made, and why the same seed gives the same bytes: docs/method.md, The demo data set.
"""
import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile
from tqdm import tqdm

import config
import experiment
import utils

SYNTH_FFT = 1024          # samples per synthesis frame (23 ms); 43 Hz bins resolve the lowest mel bands
SYNTH_HOP = SYNTH_FFT // 2  # sine window at 50% overlap: squared windows sum to 1, so noise variance is flat
N_ANNOTATORS = 5          # soft labels are multiples of 1/5
BOUNDARY_JITTER = 0.4     # s, std of each annotator's onset and offset error
FAINT_PROBABILITY = 0.15  # share of events that are faint: quieter, and each annotator hears them with ...
FAINT_DETECTION = 0.5     # ... this probability (a weak event: uniformly lower certainty)
LOUD_DETECTION = 0.95     # probability that an annotator marks a normal event
ABOVE_ONE_PROBABILITY = 0.02  # share of 1.0 rows written as 1.0000000000000002, as in the real files
MIN_GAP = 1.0             # s, shortest gap between two events of a class
RAMP = 0.1                # s, attack and release of an event
OUTPUT_GAIN = 0.025       # mixture level: the loudest scene (city_center) peaks below 0.9 of full scale

# class -> (low Hz, high Hz, texture, rhythm, (shortest, longest) event in s, level in dB above background): each
# class owns a band of the 64 mel bands (50 Hz .. 14 kHz), so a small CRNN can tell them apart. Textures: 'noise',
# ('harmonic', f0) (harmonics of f0 in the band), ('tone', Hz). Rhythms: ('am', Hz, depth) (sinusoidal modulation),
# ('pulses', Hz, decay s) (jittered decaying hits), ('clicks', rate, decay s) (random hits), or EVENT_SHAPES.
CLASS_SOUNDS = {
    'birds_singing': (7000, 8500, ('harmonic', 730), ('pulses', 7.0, 0.05), (1, 6), 27),
    'car': (480, 700, 'noise', 'swell', (3, 10), 15),
    'people talking': (950, 1400, ('harmonic', 120), ('am', 4.0, 0.8), (2, 12), 15),
    'footsteps': (1800, 2300, 'noise', ('pulses', 1.8, 0.1), (2, 8), 24),
    'children voices': (2800, 3500, ('harmonic', 350), ('am', 5.5, 0.7), (2, 8), 17),
    'wind_blowing': (50, 150, 'noise', ('am', 0.3, 0.6), (4, 15), 18),
    'brakes_squeaking': (5200, 6000, ('tone', 5600), ('am', 6.0, 0.3), (1, 3), 20),
    'large_vehicle': (150, 300, ('harmonic', 50), ('am', 8.0, 0.3), (4, 12), 14),
    'cutlery and dishes': (8500, 10500, 'noise', ('clicks', 6.0, 0.025), (1, 5), 24),
    'furniture dragging': (1400, 1800, 'noise', ('am', 15.0, 0.6), (1, 4), 18),
    'coffee machine': (10500, 13500, 'noise', ('am', 2.0, 0.2), (5, 20), 14),
    'metro approaching': (300, 480, 'noise', 'ramp_up', (6, 14), 16),
    'metro leaving': (700, 950, 'noise', 'ramp_down', (6, 14), 16),
    'door opens/closes': (2300, 2800, 'noise', ('pulses', 0.8, 0.2), (1, 2.5), 26),
    'announcement': (3500, 4200, ('harmonic', 200), ('am', 3.0, 0.7), (4, 10), 15),
    'shopping cart': (4200, 5200, 'noise', ('am', 25.0, 0.6), (2, 8), 15),
    'cash register beeping': (6000, 7000, ('tone', 6500), ('pulses', 2.0, 0.12), (1, 3), 26),
}

# a shape over each event, of the position 0 .. 1 through it: 'swell' rises and falls
EVENT_SHAPES = {'swell': lambda p: 0.3 + 0.7 * np.sin(np.pi * p), 'ramp_up': lambda p: 0.15 + 0.85 * p,
                'ramp_down': lambda p: 1.0 - 0.85 * p}

# scene -> {class: share of the time it is active}, others never; all 11 evaluated classes occur, several in a scene
SCENE_ACTIVITY = {
    'cafe_restaurant': {'people talking': 0.6, 'cutlery and dishes': 0.35, 'coffee machine': 0.15,
                        'furniture dragging': 0.1, 'footsteps': 0.2, 'children voices': 0.12,
                        'door opens/closes': 0.08},
    'city_center': {'car': 0.4, 'people talking': 0.35, 'footsteps': 0.3, 'large_vehicle': 0.2,
                    'brakes_squeaking': 0.08, 'birds_singing': 0.1, 'children voices': 0.1,
                    'wind_blowing': 0.12, 'door opens/closes': 0.05},
    'grocery_store': {'people talking': 0.35, 'shopping cart': 0.25, 'cash register beeping': 0.12,
                      'footsteps': 0.25, 'announcement': 0.1, 'children voices': 0.12,
                      'cutlery and dishes': 0.06, 'door opens/closes': 0.05},
    'metro_station': {'metro approaching': 0.18, 'metro leaving': 0.18, 'announcement': 0.15,
                      'people talking': 0.3, 'footsteps': 0.3, 'brakes_squeaking': 0.1,
                      'large_vehicle': 0.06, 'children voices': 0.06, 'door opens/closes': 0.1},
    'residential_area': {'birds_singing': 0.4, 'car': 0.25, 'wind_blowing': 0.25, 'children voices': 0.15,
                         'people talking': 0.2, 'footsteps': 0.15, 'large_vehicle': 0.1,
                         'brakes_squeaking': 0.04, 'door opens/closes': 0.06},
}

# scene -> (background spectral slope in dB per octave, level in dB): the room tone under the events
SCENE_BACKGROUND = {'cafe_restaurant': (-3.0, 0.0), 'city_center': (-4.5, 3.0), 'grocery_store': (-3.0, -2.0),
                    'metro_station': (-5.0, 2.0), 'residential_area': (-4.0, -4.0)}


def file_rng(seed, file_id):
    """The random generator of one file: seeded from (seed, file id), independent of the other files."""
    digest = hashlib.sha256(file_id.encode()).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], 'little')])


def draw_events(rng, label, activity, duration):
    """(onsets, offsets, faint) of one class in one file: alternating event durations and gaps, the mean gap set so
    the class is active `activity` of the time; the first event may have begun before the file starts."""
    shortest, longest = CLASS_SOUNDS[label][4]
    mean_length = (shortest + longest) / 2
    mean_gap = max(mean_length * (1 - activity) / activity - MIN_GAP, 0.1)
    n = int(duration / (mean_length + MIN_GAP + mean_gap) * 2) + 8       # enough to pass the end
    lengths = rng.uniform(shortest, longest, n)
    gaps = MIN_GAP + rng.exponential(mean_gap, n)
    starts = np.cumsum(np.concatenate([[0.0], (lengths + gaps)[:-1]]))
    starts -= rng.uniform(0, mean_length + MIN_GAP + mean_gap)
    faint = rng.random(n) < FAINT_PROBABILITY
    keep = (starts + lengths > 0) & (starts < duration)
    return np.clip(starts[keep], 0, duration), np.clip(starts[keep] + lengths[keep], 0, duration), faint[keep]


def band_profile(label, freqs):
    """(bins,) magnitude shape of a class over the FFT bins, with mean power 1 over its band."""
    low, high, texture = CLASS_SOUNDS[label][:3]
    if texture == 'noise':
        # flat band with soft edges (a tenth of its width), so it is no brick wall in the mel bands either side
        profile = np.clip(np.minimum(freqs - low, high - freqs) / (0.1 * (high - low)) + 0.5, 0, 1)
    else:
        kind, f = texture
        lines = np.arange(np.ceil(low / f), np.floor(high / f) + 1) * f if kind == 'harmonic' else np.array([f])
        profile = np.exp(-0.5 * ((freqs[:, None] - lines[None, :]) / (freqs[1] - freqs[0])) ** 2).max(axis=1)
    in_band = (freqs >= low) & (freqs <= high)
    return (profile / np.sqrt(np.mean(profile[in_band] ** 2))).astype(np.float32)


def event_gate(times, onsets, offsets, gains, spec):
    """(frames,) amplitude of one class: each event's gain inside it, short ramps, EVENT_SHAPES[spec], 0 outside."""
    if len(onsets) == 0:
        return np.zeros_like(times)
    index = np.searchsorted(onsets, times, side='right') - 1          # the event that began last
    valid = index >= 0
    index = np.maximum(index, 0)
    on, off = onsets[index], offsets[index]
    inside = valid & (times < off) & (off > on)
    position = np.clip((times - on) / np.maximum(off - on, 1e-9), 0, 1)  # 0 .. 1 through the event
    ramp = np.clip(np.minimum(times - on, off - times) / RAMP, 0, 1)
    if spec in EVENT_SHAPES:
        ramp = ramp * EVENT_SHAPES[spec](position)
    return np.where(inside, gains[index] * ramp, 0.0)


def rhythm(rng, times, spec):
    """(frames,) modulation of a class over the whole file: its rhythm while it is active."""
    frame_rate = config.SAMPLE_RATE / SYNTH_HOP
    if not isinstance(spec, tuple):                    # shaped over each event by event_gate instead
        return np.ones_like(times)
    kind, rate, value = spec
    if kind == 'am':
        phase = rng.uniform(0, 2 * np.pi)
        return 1 - value * 0.5 * (1 + np.sin(2 * np.pi * rate * times + phase))
    if kind == 'pulses':                               # jittered regular hits
        n = int(times[-1] * rate) + 2
        hits = np.cumsum(rng.uniform(0.8, 1.2, n) / rate) - rng.uniform(0, 1 / rate)
        impulses = np.bincount(np.clip((hits * frame_rate).astype(int), 0, len(times) - 1),
                               minlength=len(times)).astype(float)
    else:                                              # 'clicks': random hits of random strength
        impulses = (rng.random(len(times)) < rate / frame_rate) * rng.uniform(0.4, 1.0, len(times))
    # each hit decays exponentially: a one-pole filter over the impulse train
    decay = np.exp(-1 / (value * frame_rate))
    return np.minimum(scipy.signal.lfilter([1.0], [1.0, -decay], impulses), 1.5)


def soft_labels(rng, onsets, offsets, faint, n_seconds, duration):
    """(n_seconds,) soft label of one class: the share of annotators who marked at least half of a second."""
    if len(onsets) == 0:
        return np.zeros(n_seconds)
    shape = (len(onsets), N_ANNOTATORS)
    heard = rng.random(shape) < np.where(faint, FAINT_DETECTION, LOUD_DETECTION)[:, None]   # (events, annotators)
    starts = np.clip(onsets[:, None] + rng.normal(0, BOUNDARY_JITTER, shape), 0, duration)
    ends = np.clip(offsets[:, None] + rng.normal(0, BOUNDARY_JITTER, shape), 0, duration)
    seconds = np.arange(n_seconds)[None, None, :]
    overlap = np.minimum(ends[..., None], seconds + 1) - np.maximum(starts[..., None], seconds)
    marked = (overlap >= 0.5) & heard[..., None]                       # (events, annotators, seconds)
    return marked.any(axis=0).sum(axis=0) / N_ANNOTATORS              # an annotator votes once per second


def synthesize(rng, powers, n_samples):
    """Audio (n_samples, 2) of power spectra [left, right] (frames, bins): random spectra, inverse FFT, overlap-add."""
    n_frames, n_bins = powers[0].shape
    noise = rng.standard_normal((n_frames, n_bins), dtype=np.float32) \
        + 1j * rng.standard_normal((n_frames, n_bins), dtype=np.float32)
    window = np.sin(np.pi * (np.arange(SYNTH_FFT) + 0.5) / SYNTH_FFT).astype(np.float32)
    channels = []
    for power in powers:
        # both channels share the random spectra (a coherent stereo image); the class pans differ
        frames = np.fft.irfft(noise * np.sqrt(power), n=SYNTH_FFT, axis=1) * window   # (frames, fft)
        audio = np.zeros((n_frames + 1) * SYNTH_HOP, dtype=np.float32)
        audio[:n_frames * SYNTH_HOP] += frames[:, :SYNTH_HOP].ravel()
        audio[SYNTH_HOP:] += frames[:, SYNTH_HOP:].ravel()
        channels.append(audio[:n_samples])
        del frames
    audio = np.stack(channels, axis=1) * np.float32(OUTPUT_GAIN * np.sqrt(SYNTH_FFT))
    return np.clip(audio, -1.0, 1.0 - 2.0 ** -23)


def generate_file(file_id, scale, seed):
    """One demo file: (audio (samples, 2) float32, annotation rows [(onset, offset, label, soft)])."""
    rng = file_rng(seed, file_id)
    scene = utils.scene_of(file_id)
    n_samples = max(1, int(round(scale * rng.uniform(*config.DEMO_LENGTH_RANGE) * config.SAMPLE_RATE)))
    duration = n_samples / config.SAMPLE_RATE
    n_frames = n_samples // SYNTH_HOP + 1
    times = (np.arange(n_frames) + 1.0) * SYNTH_HOP / config.SAMPLE_RATE   # centre of each synthesis frame
    freqs = np.fft.rfftfreq(SYNTH_FFT, 1 / config.SAMPLE_RATE)
    # the scene's background noise: a spectral slope from 100 Hz up, band-limited
    slope, background_db = SCENE_BACKGROUND[scene]
    background = 10 ** ((background_db + slope * np.log2(np.maximum(freqs, 100.0) / 1000.0)) / 20) * (freqs >= 20)
    background = background.astype(np.float32)
    n_seconds = int(np.ceil(duration))

    # amplitude envelopes (frames, classes + 1) and spectral shapes (classes + 1, bins); the last is the background
    envelopes = np.zeros((n_frames, len(config.CLASSES) + 1), dtype=np.float32)
    shapes = np.zeros((len(config.CLASSES) + 1, len(freqs)), dtype=np.float32)
    pans = np.zeros(len(config.CLASSES) + 1)
    rows = []
    for c, label in enumerate(config.CLASSES):
        if not (activity := SCENE_ACTIVITY[scene].get(label)):
            continue
        low, high, _, rhythm_spec, _, level = CLASS_SOUNDS[label]
        onsets, offsets, faint = draw_events(rng, label, activity, duration)
        # faint events are 8 dB quieter: still audible, but fewer annotators mark them
        gains = 10 ** ((np.where(faint, -8.0, 0.0) + rng.uniform(-3, 3, len(onsets))) / 20)
        envelopes[:, c] = event_gate(times, onsets, offsets, gains, rhythm_spec) * rhythm(rng, times, rhythm_spec)
        # the class is `level` dB above the background at the centre of its own band
        shapes[c] = band_profile(label, freqs) * np.interp(np.sqrt(low * high), freqs, background) * 10 ** (level / 20)
        pans[c] = rng.uniform(-0.5, 0.5)
        soft = soft_labels(rng, onsets, offsets, faint, n_seconds, duration)
        rows += [(float(s), float(s + 1), label, soft[s]) for s in np.flatnonzero(soft)]
    # the background drifts slowly by a few dB (people come and go)
    drift = np.interp(times, np.arange(0, duration + 10, 5.0), rng.normal(0, 2.0, int(duration / 5) + 3))
    envelopes[:, -1] = 10 ** (drift / 20)
    shapes[-1] = background

    # power spectra (frames, bins) of the sum of independent sources, left and right (equal-power pan, 1 at the
    # centre); einsum, not @: BLAS sums in an order that depends on its thread count, which would change the bytes
    powers = [np.einsum('fk,kb->fb', (envelopes * np.sqrt(1 + side * pans)).astype(np.float32) ** 2, shapes ** 2)
              for side in (-1, 1)]
    audio = synthesize(rng, powers, n_samples)
    rows = mark_above_one(rng, sorted(rows, key=lambda row: (row[0], config.CLASSES.index(row[2]))))
    return audio, rows


def mark_above_one(rng, rows):
    """Write a few 1.0 values as 1.0000000000000002, as the real files have them (readers must clip); the first 1.0
    row of a file always, so that every demo subset exercises the clipping."""
    above_one = np.nextafter(1.0, 2.0)
    ones = [i for i, row in enumerate(rows) if row[3] == 1.0]
    chosen = set(ones[:1]) | {i for i in ones if rng.random() < ABOVE_ONE_PROBABILITY}
    return [(on, off, label, above_one if i in chosen else soft) for i, (on, off, label, soft) in enumerate(rows)]


def generate_demo_dataset(out_dir, scale=None, seed=None, file_ids=None, progress=True):
    """Write the demo data set (MAESTRO Real's layout) under `out_dir` (scale, seed: default config's); returns the
    file ids written."""
    scale, seed = config.DEMO_SCALE if scale is None else scale, config.DEMO_SEED if seed is None else seed
    file_ids = list(file_ids) if file_ids is not None else utils.development_file_ids()
    for file_id in file_ids:                # the layout depends on the scene
        scene = utils.scene_of(file_id)
        if scene not in config.SCENES or not utils.file_stem(file_id).startswith(scene + '_'):
            raise utils.DataError(f'{file_id}: not a file id `<scene>/<scene>_NN` of the scenes '
                                  f'{", ".join(config.SCENES)}')
    if not scale > 0:
        raise utils.DataError(f'--scale {scale}: the scale of the file lengths must be positive (e.g. 0.1, or 1.0 '
                              f'for the real lengths)')
    marker = f'Synthetic demo data set written by demo_data.py (scale {scale}, seed {seed}); not MAESTRO Real.\n'
    utils.write_text_atomic(Path(out_dir) / config.DEMO_MARKER, marker)
    for file_id in tqdm(file_ids, desc='demo files', unit='file', disable=not progress):
        audio, rows = generate_file(file_id, scale, seed)      # one file at a time: memory stays flat
        utils.atomic_write(utils.audio_path(out_dir, file_id), lambda tmp: soundfile.write(
            tmp, audio, config.SAMPLE_RATE, subtype=config.AUDIO_SUBTYPE, format='WAV'))
        # onset<TAB>offset<TAB>label<TAB>soft per row, soft written exactly (repr), as the real files
        utils.write_text_atomic(utils.annotation_path(out_dir, file_id), ''.join(
            f'{on:.1f}\t{off:.1f}\t{label}\t{float(soft)!r}\n' for on, off, label, soft in rows))
        del audio
    return file_ids


@experiment.command
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__.split('\n', 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', type=Path, default=config.DEMO_DATA_ROOT,
                        help=f'data root to write (default {config.DEMO_DATA_ROOT}); use it as --data-root later')
    parser.add_argument('--scale', type=float, default=config.DEMO_SCALE,
                        help=f'file length = scale x 180..301 s (default {config.DEMO_SCALE}; 1.0 = real lengths)')
    parser.add_argument('--seed', type=int, default=config.DEMO_SEED,
                        help=f'random seed; the same seed gives the same bytes (default {config.DEMO_SEED})')
    parser.add_argument('--files', nargs='+', metavar='ID', default=None,
                        help='only these file ids, e.g. cafe_restaurant/cafe_restaurant_07 (default: all 49)')
    args = experiment.parse_args(parser, argv)
    start = time.time()
    file_ids = generate_demo_dataset(args.out, args.scale, args.seed, args.files)
    print(f'wrote {len(file_ids)} files to {args.out} in {time.time() - start:.1f} s (use: --data-root {args.out})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
