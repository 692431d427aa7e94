"""Every parameter of the DCASE2023 Task 4B baseline, in one place: the defaults.

A setting is one line, `NAME = default  # what it is`; where its value must be one of a few or within a range, the
line says so as its annotation, `DROPOUT: within(0, 1, open='high') = 0.2` (checks.py). That line is all there is
to a setting: --set NAME=VALUE takes a value of its default's type, a run records it, compare.py names it when two
runs differ in it, and a run recorded before it existed reads as its default.

Try an idea by editing this file, or without: an experiment file assigning some of these names or `--set NAME=VALUE`,
on any script (experiment.py); every run records the values it was trained with, wherever they came from.

The section a setting stands in says what it is to an experiment (utils.SECTIONS reads the titles below): the values
of 'Data set' and 'Features' are recorded with the features (extract_features.py refuses features made with others),
every section not marked '(per command)' defines what a run trains (a run records it, a workdir keeps it), and a
'(per command)' value may change from command to command on one workdir: paths and sources, how a command runs, the
evaluation (evaluate.py re-scores the saved scores with it). docs/method.md describes the method behind each value.
"""
from pathlib import Path

from checks import above, at_least, count, dict_of, list_of, matches, odd, one_of, within

# -----------------------------------------------------------------------------
# Paths and sources (per command)
REPO_ROOT = Path(__file__).resolve().parent
DATA_ROOT = REPO_ROOT / 'data' / 'MAESTRO_Real'      # holds development_audio/ and development_annotation/
WORKDIR = REPO_ROOT                                  # features, metadata/, runs/, results go here
DEMO_DATA_ROOT = REPO_ROOT / 'data' / 'demo'         # where demo_data.py writes by default
DEMO_SCALE: above(0) = 0.1                           # demo file length = scale x (180..301 s drawn from the seed)
DEMO_SEED = 0                                        # same seed, same bytes
DEMO_MARKER = 'DEMO_DATASET.txt'                     # written into a demo data root: extraction records "demo"
DEMO_LENGTH_RANGE = (180.0, 301.0)                   # s, unscaled demo file lengths: the real recordings' range
AUDIO_DIR = 'development_audio'                      # <data-root>/<AUDIO_DIR>/<scene>/<id>.wav
ANNOTATION_DIR = 'development_annotation'            # <data-root>/<ANNOTATION_DIR>/soft_labels_<scene>/<id>.txt
DEVELOPMENT_SPLIT = REPO_ROOT / 'development_split.csv'  # header `filename`, the 49 file ids
FOLDS_DIR = REPO_ROOT / 'development_folds'          # fold{k}_{train,val,test}.csv: the challenge's official folds
# the official folds' file ids hashed (utils.folds_sha256): tells them from other fold files
OFFICIAL_FOLDS_SHA256 = '722f9650b17bc3729603ae2b348d5222021aa4e867503ca8d6915c4b9d5537e0'
FEATURES_DIR = 'features'                            # <workdir>/features/
METADATA_DIR = 'metadata'                            # <workdir>/metadata/gt_dev.csv, development_metadata.csv
GT_FILE = 'gt_dev.csv'                               # hard-label events of the 11 evaluated classes
DURATIONS_FILE = 'development_metadata.csv'          # filename, duration (s)
RUNS_DIR = 'runs'                                    # <workdir>/runs/run{r}/...
EMBEDDINGS_CHECKPOINT = ''                           # the file of config.EMBEDDINGS' weights; its SHA-256 is recorded
                                                     # with the features, not its path: a copy is the same experiment
SCENES = {                                           # scene -> NN of its development files
    'cafe_restaurant': ['00', '04', '06', '07', '08', '10', '11', '12', '13', '14'],
    'city_center': ['02', '04', '05', '06', '07', '09', '10', '11', '12', '14'],
    'grocery_store': ['00', '01', '02', '03', '04', '08', '09', '11', '12'],
    'metro_station': ['00', '01', '02', '04', '05', '07', '10', '11', '12'],
    'residential_area': ['00', '01', '03', '04', '05', '06', '07', '08', '09', '12', '14'],
}
AUDIO_SUBTYPE = 'PCM_24'                             # the real recordings are 24-bit PCM WAV (soundfile subtype)
ZENODO_URL = 'https://zenodo.org/records/{record}/files/{name}?download=1'
DEVELOPMENT_ARCHIVES = {                             # name -> (Zenodo record, md5)
    'development_audio.zip': ('7244360', '3de7cb4f92a115a6f5cc077a41ca07b3'),
    'development_annotation.zip': ('7244360', 'e6a3f84f8020725d559b38ccb494ef3d'),
}
EVALUATION_ARCHIVES = {
    'Evaluation_audio.zip': ('7870026', 'f18a036f5d8d3b5d4e810cae75da308e'),
}

# -----------------------------------------------------------------------------
# Data set
N_FOLDS: count(2) = 5                                # cross-validation folds
CLASSES = [                                          # model output order: 17 classes
    'birds_singing', 'car', 'people talking', 'footsteps', 'children voices', 'wind_blowing',
    'brakes_squeaking', 'large_vehicle', 'cutlery and dishes', 'furniture dragging',
    'coffee machine', 'metro approaching', 'metro leaving', 'door opens/closes',
    'announcement', 'shopping cart', 'cash register beeping',
]
HARD_CLASSES = [                                     # the 11 classes that are evaluated
    'birds_singing', 'car', 'people talking', 'footsteps', 'children voices', 'wind_blowing',
    'brakes_squeaking', 'large_vehicle', 'cutlery and dishes', 'metro approaching', 'metro leaving',
]
HARD_LABEL_THRESHOLD: within(0, 1) = 0.5             # hard label: active where soft > this
ANNOTATION_RESOLUTION: above(0) = 1.0                # s, one soft value per second and class

# -----------------------------------------------------------------------------
# Features
FRONT_END = 'mel'                                    # audio -> the model's input frames: a name of
                                                     # front_end.FRONT_ENDS ('mel': the mel energies below)
SAMPLE_RATE: count(1) = 44100                        # Hz; other rates are resampled to this
HOP_LENGTH: count(1) = 8820                          # samples: 0.2 s frames
N_FFT: count(1) = 17640                              # samples: 0.4 s window, 50% overlap
WINDOW = 'hann'
CENTER: one_of(False, True) = True                   # centred frames: 1 + N // HOP_LENGTH frames
PAD_MODE: one_of('constant') = 'constant'            # centre padding with zeros (librosa >= 0.10 default of stft)
MEL_POWER: above(0) = 1.0                            # 1 = magnitude, 2 = power
N_MELS: count(1) = 64
FMIN: at_least(0) = 50.0                             # Hz
FMAX: above(0) = 14000.0                             # Hz
LOG_MEL: one_of(False, True) = False                 # the reference feeds linear mel magnitudes
LOG_OFFSET: above(0) = 1e-8                          # log(mel + LOG_OFFSET) when LOG_MEL
SEQUENCE_LENGTH: count(1) = 200                      # frames per training/validation sequence (40 s)
EMBEDDINGS: one_of('none', 'beats', 'cnn14') = 'none'  # frozen pretrained embeddings beside the mel bands, fused before
                                                     # the GRU: 'beats' (BEATs iter3+), 'cnn14' (PANNs), 'none' = off

# -----------------------------------------------------------------------------
# Model
CONV_CHANNELS: count(1) = 128                        # filters of each of the 3 conv blocks
CONV_KERNEL: odd() = 3                               # odd: same padding keeps the frames
POOL_SIZES: list_of(count(1)) = [5, 2, 2]            # max-pool over frequency per conv block
DROPOUT: within(0, 1, open='high') = 0.2
GRU_UNITS: count(1) = 32                             # per direction, bidirectional
DENSE_UNITS: count(1) = 32
CHANNELS_LAST = True                                 # conv activations in (batch, frames, bands, channels) memory order:
                                                     # faster on the CPU, the same function up to rounding (recorded)

# -----------------------------------------------------------------------------
# Training
LOSS = 'bce'                                         # a name of model.LOSSES: 'bce' on sigmoid(logits), or 'mse' on raw
                                                     # outputs (reference code)
TARGETS: one_of('soft', 'hard') = 'soft'             # training and validation targets: 'soft', the annotators'
                                                     # certainty (the published protocol), or 'hard', 1.0 where soft >
                                                     # HARD_LABEL_THRESHOLD else 0, the evaluated labels (no extraction)
OUTPUT_BIAS_INIT: one_of('prior', 'torch') = 'prior'  # 'prior' starts the output bias at the log-odds of each class's
                                                     # mean soft target over the fold's training frames (bce); 'torch'
                                                     # keeps torch's, as mse (no prior) always does: the published table
OUTPUT_BIAS_CLIP: within(0, 0.5, open='both') = 1e-4  # prior clipped to [1e-4, 1 - 1e-4] (bias within +/-9.2): a class
                                                     # absent from the training frames gets a finite bias, below that of
                                                     # a class active in a handful of MAESTRO Real's ~31,000 frames
PRECISION: one_of('float32', 'bfloat16', 'tf32') = 'float32'  # 'float32' (the published protocol; on CUDA without
                                                     # TF32), 'bfloat16' (the conv blocks under torch.autocast, the rest
                                                     # float32: 1.5x faster epochs on a CPU with native bfloat16, other
                                                     # numbers) or 'tf32' (CUDA on Ampere and later only: float32 with
                                                     # TF32 matrix products); default of task4b.py --precision
LEARNING_RATE: above(0) = 1e-3
ADAM_BETAS: list_of(within(0, 1, open='high'), length=2) = (0.9, 0.999)
ADAM_EPS: at_least(0) = 1e-8
BATCH_SIZE: count(1) = 32
MAX_EPOCHS: count(1) = 150
LR_DECAY_PATIENCE: at_least(0) = 0.3                 # x max epochs without a new best -> lr / LR_DECAY_FACTOR
LR_DECAY_FACTOR: above(0) = 10.0
EARLY_STOP_PATIENCE: at_least(0) = 0.6               # x max epochs since the best epoch -> stop
SEED: count(0) = 42                                  # run k uses SEED + k

# -----------------------------------------------------------------------------
# Augmentation of training batches (augment.py), each off by default: the published protocol has none
FRAME_SHIFT: count(0) = 0                            # frames: features and targets rolled together by up to +/- this
FILTER_AUGMENT_BANDS: count(0) = 0                   # FilterAugment: the most bands the mel bins are cut into; 0 = off
FILTER_AUGMENT_MIN_BANDS: count(1) = 1               # the fewest: each batch's band count is drawn from [this, BANDS]
FILTER_AUGMENT_MIN_WIDTH: count(1) = 4               # mel bins, the narrowest band (the authors: 4 step, 6 linear)
FILTER_AUGMENT_FORM: one_of('step', 'linear') = 'step'   # 'step': one gain a band; 'linear': gains at band edges,
                                                     # joined by straight lines
FILTER_AUGMENT_DB: at_least(0) = 6.0                 # dB: FilterAugment's gains drawn from +/- this
MIXSTYLE: within(0, 1) = 0.0                         # probability per batch of frequency MixStyle
MIXSTYLE_ALPHA: above(0) = 0.3                       # its mixing weight ~ Beta(alpha, alpha)
MIXUP: within(0, 1) = 0.0                            # probability per batch of mixup (features and targets)
MIXUP_ALPHA: above(0) = 0.2                          # its lambda ~ Beta(alpha, alpha)
TIME_MASKS: count(0) = 0                             # SpecAugment: time masks per sequence
TIME_MASK_WIDTH: count(0) = 20                       # frames, the widest time mask
FREQ_MASKS: count(0) = 0                             # SpecAugment: frequency masks per sequence
FREQ_MASK_WIDTH: count(0) = 8                        # mel bands, the widest frequency mask

# -----------------------------------------------------------------------------
# How a command runs (per command): speed, parallelism and what is tracked; no number of a run changes
RUNS: count(1) = 1                                   # independent runs of the 5 folds; the published table is 10
FEATURE_JOBS: count(1) = 2                           # processes for extraction (math libraries capped at 1 thread each)
KEEP_FREED_MEMORY = True                             # glibc keeps freed memory for reuse: epochs about 1.5x faster on the
                                                     # CPU, about 1 GiB more peak memory (False: glibc's defaults)
TRACK_ENERGY: one_of(False, True) = True             # CodeCarbon's offline tracker around each fold's training and
                                                     # test and infer.py (cost.py); False: none, times kept, same scores
ENERGY_COUNTRY: matches(lambda v: isinstance(v, str) and len(v) == 3 and v.isascii() and v.isalpha() and v.isupper(),
                        "a country's 3-letter ISO code in capitals, e.g. 'FIN'") = 'FIN'   # grid of CodeCarbon's CO2
                                                     # figure (ISO 3166 alpha-3); never the kWh

# -----------------------------------------------------------------------------
# Evaluation (per command: evaluate.py re-scores the saved scores with these; each metrics file records them)
THRESHOLD: within(0, 1) = 0.5                        # frame score -> active
SEGMENT_LENGTH: above(0) = 1.0                       # s, sed_eval / sed_scores_eval segments
MERGE_GAP: at_least(0) = 0.1                         # s, events of a class closer than this are merged
MIN_EVENT_LENGTH: at_least(0) = 0.1                  # s, shorter events are dropped
TIMELINE: one_of('fold', 'file') = 'fold'            # 'fold': a fold's test files concatenated into one timeline, as the
                                                     # challenge computed ER_m, F1_m, F1_M; 'file': each file on its own
F1_THOP_TIME_DECIMALS: count(0) = 30                 # best_fscore(time_decimals=...): 30 as the challenge called it, 6
                                                     # the library default
PAUC_MAX_FPR: within(0, 1, open='low') = 0.1         # segment-based partial AUROC up to this false-positive rate (DCASE
                                                     # 2024 MAESTRO metric)
MEDIAN_FILTER: odd() = 1                             # frames: each evaluated class's frame scores median-filtered before
                                                     # the threshold; 1 = no filter, as the original
MEDIAN_FILTER_BY_CLASS: dict_of(odd()) = {}          # {class: frames}: some classes' own filters, over MEDIAN_FILTER
TUNE_MEDIAN_FILTERS: list_of(odd()) = [1, 3, 5, 9, 15]   # frames: the filters --tune chooses each class's among
PUBLISHED = {                                        # mean, std over 10 runs on MAESTRO Real
    'ER_m': (0.487, 0.009), 'F1_m': (70.34, 0.766), 'F1_M': (35.83, 0.660), 'F1_thop': (42.87, 0.840),
}
# How the published numbers were computed, where it differs from the defaults above (every other setting of a run's
# record and of its scoring is at its default there). The table says "same protocol" only when each matches; the
# number of runs is shown beside it, not compared, nor is PAUC_MAX_FPR (pAUC is not in the published table).
PUBLISHED_PROTOCOL = {
    'data set': 'MAESTRO Real', 'folds': 'official', 'MAX_EPOCHS': 150, 'LOSS': 'mse', 'OUTPUT_BIAS_INIT': 'torch',
}


# -----------------------------------------------------------------------------
# Derived from the values above; derived again when an experiment overrides them (experiment.py)
DERIVED = ('HARD_INDEX', 'FRAME_SECONDS')


def derive():
    global HARD_INDEX, FRAME_SECONDS
    # model outputs -> the 11 evaluated (every script refuses a class missing from CLASSES: utils.config_problem)
    HARD_INDEX = [CLASSES.index(c) for c in HARD_CLASSES if c in CLASSES]
    FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE if SAMPLE_RATE else 0.0   # 0.2 s per frame (0 Hz: utils.config_problem)


derive()
