"""Every parameter of the DCASE2023 Task 4B baseline, in one place: the defaults.

An idea is tried without editing this file: an experiment file that assigns some of these names
(`--config experiments/hard_targets.py`) or `--set NAME=VALUE`, on any script (experiment.py); a workdir keeps
the experiment it was made with. The method behind each group of values is described in docs/method.md.
"""
from pathlib import Path

# -----------------------------------------------------------------------------
# Paths
REPO_ROOT = Path(__file__).resolve().parent
DATA_ROOT = REPO_ROOT / 'data' / 'MAESTRO_Real'      # holds development_audio/ and development_annotation/
WORKDIR = REPO_ROOT                                  # features, metadata/, runs/, results go here
DEMO_DATA_ROOT = REPO_ROOT / 'data' / 'demo'         # where demo_data.py writes by default
DEMO_SCALE = 0.1                                     # demo file length = scale x (180..301 s drawn from the seed)
DEMO_SEED = 0                                        # same seed, same bytes
DEMO_MARKER = 'DEMO_DATASET.txt'                     # written into a demo data root: extraction records "demo"
DEMO_LENGTH_RANGE = (180.0, 301.0)                   # s, unscaled demo file lengths: the real recordings' range
AUDIO_DIR = 'development_audio'                      # <data-root>/<AUDIO_DIR>/<scene>/<id>.wav
ANNOTATION_DIR = 'development_annotation'            # <data-root>/<ANNOTATION_DIR>/soft_labels_<scene>/<id>.txt
DEVELOPMENT_SPLIT = REPO_ROOT / 'development_split.csv'  # header `filename`, the 49 file ids
FOLDS_DIR = REPO_ROOT / 'development_folds'          # fold{k}_{train,val,test}.csv: the challenge's official folds
# the official folds' file ids hashed (utils.folds_sha256): tells them from other fold files
OFFICIAL_FOLDS_SHA256 = '722f9650b17bc3729603ae2b348d5222021aa4e867503ca8d6915c4b9d5537e0'
N_FOLDS = 5                                          # cross-validation folds
FEATURES_DIR = 'features'                            # <workdir>/features/
METADATA_DIR = 'metadata'                            # <workdir>/metadata/gt_dev.csv, development_metadata.csv
GT_FILE = 'gt_dev.csv'                               # hard-label events of the 11 evaluated classes
DURATIONS_FILE = 'development_metadata.csv'          # filename, duration (s)
RUNS_DIR = 'runs'                                    # <workdir>/runs/run{r}/...

# -----------------------------------------------------------------------------
# Data set
SCENES = {                                           # scene -> NN of its development files
    'cafe_restaurant': ['00', '04', '06', '07', '08', '10', '11', '12', '13', '14'],
    'city_center': ['02', '04', '05', '06', '07', '09', '10', '11', '12', '14'],
    'grocery_store': ['00', '01', '02', '03', '04', '08', '09', '11', '12'],
    'metro_station': ['00', '01', '02', '04', '05', '07', '10', '11', '12'],
    'residential_area': ['00', '01', '03', '04', '05', '06', '07', '08', '09', '12', '14'],
}
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
AUDIO_SUBTYPE = 'PCM_24'                             # the real recordings are 24-bit PCM WAV (soundfile subtype)
HARD_LABEL_THRESHOLD = 0.5                           # hard label: active where soft > this
ANNOTATION_RESOLUTION = 1.0                          # s, one soft value per second and class
ZENODO_URL = 'https://zenodo.org/records/{record}/files/{name}?download=1'
DEVELOPMENT_ARCHIVES = {                             # name -> (Zenodo record, md5)
    'development_audio.zip': ('7244360', '3de7cb4f92a115a6f5cc077a41ca07b3'),
    'development_annotation.zip': ('7244360', 'e6a3f84f8020725d559b38ccb494ef3d'),
}
EVALUATION_ARCHIVES = {
    'Evaluation_audio.zip': ('7870026', 'f18a036f5d8d3b5d4e810cae75da308e'),
}

# -----------------------------------------------------------------------------
# Features
SAMPLE_RATE = 44100                                  # Hz; other rates are resampled to this
HOP_LENGTH = 8820                                    # samples: 0.2 s frames
N_FFT = 17640                                        # samples: 0.4 s window, 50% overlap
WINDOW = 'hann'
CENTER = True                                        # centred frames: 1 + N // HOP_LENGTH frames
PAD_MODE = 'constant'                                # centre padding with zeros (librosa >= 0.10 default of stft)
MEL_POWER = 1.0                                      # 1 = magnitude, 2 = power
N_MELS = 64
FMIN = 50.0                                          # Hz
FMAX = 14000.0                                       # Hz
LOG_MEL = False                                      # the reference feeds linear mel magnitudes
LOG_OFFSET = 1e-8                                    # log(mel + LOG_OFFSET) when LOG_MEL
SEQUENCE_LENGTH = 200                                # frames per training/validation sequence (40 s)
FEATURE_JOBS = 2                                     # processes for extraction (math libraries capped at 1 thread each)

# -----------------------------------------------------------------------------
# Model
CONV_CHANNELS = 128                                  # filters of each of the 3 conv blocks
CONV_KERNEL = 3
POOL_SIZES = [5, 2, 2]                               # max-pool over frequency per conv block
DROPOUT = 0.2
GRU_UNITS = 32                                       # per direction, bidirectional
DENSE_UNITS = 32
CHANNELS_LAST = True                                 # conv activations in (batch, frames, bands, channels) memory order:
                                                     # faster on the CPU, the same function up to rounding (recorded)

# -----------------------------------------------------------------------------
# Training
KEEP_FREED_MEMORY = True                             # glibc keeps freed memory for reuse: epochs about 1.5x faster on the
                                                     # CPU, about 1 GiB more peak memory (False: glibc's defaults)
LOSS = 'bce'                                         # 'bce' on sigmoid(logits), or 'mse' on raw outputs (reference code)
TARGETS = 'soft'                                     # training and validation targets: 'soft', the annotators'
                                                     # certainty (the published protocol), or 'hard', 1.0 where soft >
                                                     # HARD_LABEL_THRESHOLD else 0.0: the labels the evaluation scores
                                                     # against. Set where a fold's targets become tensors (no new
                                                     # extraction)
OUTPUT_BIAS_INIT = 'prior'                           # 'bce' only: 'prior' starts the output layer's bias at the log-odds
                                                     # of each class's mean soft target over the fold's training frames
                                                     # (with bce, this baseline's choice); 'torch' keeps torch's
                                                     # initialisation. 'mse' always keeps torch's: it reproduces the
                                                     # published table
OUTPUT_BIAS_CLIP = 1e-4                              # prior clipped to [1e-4, 1 - 1e-4] (bias within +/-9.2): a class absent
                                                     # from the training frames gets a finite bias, still below the mean of
                                                     # a class active in a handful of MAESTRO Real's ~31,000 training frames
PRECISION = 'float32'                                # 'float32' (the published protocol; on CUDA without TF32),
                                                     # 'bfloat16' (the conv blocks under torch.autocast: their outputs in bfloat16;
                                                     # weights, optimiser, BatchNorm statistics, GRU, dense layers, loss
                                                     # and scores in float32; 1.5x faster epochs on a CPU with
                                                     # native bfloat16, other numbers), or 'tf32' (CUDA on Ampere and
                                                     # later only: float32 with TF32 matrix products); default of
                                                     # task4b.py --precision
LEARNING_RATE = 1e-3
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
BATCH_SIZE = 32
MAX_EPOCHS = 150
LR_DECAY_PATIENCE = 0.3                              # x max epochs without a new best -> lr / LR_DECAY_FACTOR
LR_DECAY_FACTOR = 10.0
EARLY_STOP_PATIENCE = 0.6                            # x max epochs since the best epoch -> stop
SEED = 42                                            # run k uses SEED + k
RUNS = 1                                             # independent runs of the 5 folds; the published table is 10

# -----------------------------------------------------------------------------
# Augmentation of training batches (augment.py), each off by default: the published protocol has none
FRAME_SHIFT = 0                                      # frames: features and targets rolled together by up to +/- this
FILTER_AUGMENT_BANDS = 0                             # FilterAugment: the most bands the mel bins are cut into; 0 = off
FILTER_AUGMENT_MIN_BANDS = 1                         # the fewest: each batch's band count is drawn from [this, BANDS]
FILTER_AUGMENT_MIN_WIDTH = 4                         # mel bins, the narrowest band (the authors: 4 step, 6 linear)
FILTER_AUGMENT_FORM = 'step'                         # 'step': one gain a band; 'linear': gains at band edges, joined
FILTER_AUGMENT_DB = 6.0                              # dB: FilterAugment's gains drawn from +/- this
MIXSTYLE = 0.0                                       # probability per batch of frequency MixStyle
MIXSTYLE_ALPHA = 0.3                                 # its mixing weight ~ Beta(alpha, alpha)
MIXUP = 0.0                                          # probability per batch of mixup (features and targets)
MIXUP_ALPHA = 0.2                                    # its lambda ~ Beta(alpha, alpha)
TIME_MASKS = 0                                       # SpecAugment: time masks per sequence
TIME_MASK_WIDTH = 20                                 # frames, the widest time mask
FREQ_MASKS = 0                                       # SpecAugment: frequency masks per sequence
FREQ_MASK_WIDTH = 8                                  # mel bands, the widest frequency mask

# -----------------------------------------------------------------------------
# What a result costs (cost.py): CodeCarbon's offline tracker around each fold's training and test, and infer.py
TRACK_ENERGY = True                                  # False: no tracker, no emissions.csv (times kept; same scores)
ENERGY_COUNTRY = 'FIN'                               # grid of CodeCarbon's CO2 figure (ISO 3166 alpha-3); never the kWh

# -----------------------------------------------------------------------------
# Evaluation
THRESHOLD = 0.5                                      # frame score -> active
SEGMENT_LENGTH = 1.0                                 # s, sed_eval / sed_scores_eval segments
MERGE_GAP = 0.1                                      # s, events of a class closer than this are merged
MIN_EVENT_LENGTH = 0.1                               # s, shorter events are dropped
TIMELINE = 'fold'                                    # 'fold': a fold's test files concatenated into one timeline, as the
                                                     # challenge computed ER_m, F1_m, F1_M; 'file': each file on its own
F1_THOP_TIME_DECIMALS = 30                           # best_fscore(time_decimals=...): 30 as the challenge called it, 6 the library default
PAUC_MAX_FPR = 0.1                                   # segment-based partial AUROC up to this false-positive rate (DCASE 2024 MAESTRO metric)
MEDIAN_FILTER = 1                                    # frames (odd): each evaluated class's frame scores median-filtered
                                                     # before the threshold; 1 = no filter, as the original
MEDIAN_FILTER_BY_CLASS = {}                          # {class: frames}: some classes' own filters, over MEDIAN_FILTER
TUNE_MEDIAN_FILTERS = [1, 3, 5, 9, 15]               # frames: the filters --tune chooses each class's among
PUBLISHED = {                                        # mean, std over 10 runs on MAESTRO Real
    'ER_m': (0.487, 0.009), 'F1_m': (70.34, 0.766), 'F1_M': (35.83, 0.660), 'F1_thop': (42.87, 0.840),
}
# How the published numbers were computed: the value of every setting that can change them (--epochs, --loss, the
# training and feature values of a run's record, the evaluation's). The table says "same protocol" only when each
# of them matches; the number of runs is shown beside it, not compared. pAUC is not in the published table, so
# PAUC_MAX_FPR is not compared; speed-only settings (CHANNELS_LAST, KEEP_FREED_MEMORY, FEATURE_JOBS) change no number.
PUBLISHED_PROTOCOL = {
    'data set': 'MAESTRO Real', 'folds': 'official', 'epochs': 150, 'loss': 'mse', 'precision': 'float32',
    'timeline': 'fold',
    'F1_thop time_decimals': 30,
    'THRESHOLD': 0.5, 'SEGMENT_LENGTH': 1.0, 'MERGE_GAP': 0.1, 'MIN_EVENT_LENGTH': 0.1,
    'MEDIAN_FILTER': 1, 'MEDIAN_FILTER_BY_CLASS': {},
    'N_FOLDS': 5, 'HARD_LABEL_THRESHOLD': 0.5, 'ANNOTATION_RESOLUTION': 1.0,
    'CLASSES': ['birds_singing', 'car', 'people talking', 'footsteps', 'children voices', 'wind_blowing',
                'brakes_squeaking', 'large_vehicle', 'cutlery and dishes', 'furniture dragging', 'coffee machine',
                'metro approaching', 'metro leaving', 'door opens/closes', 'announcement', 'shopping cart',
                'cash register beeping'],
    'HARD_CLASSES': ['birds_singing', 'car', 'people talking', 'footsteps', 'children voices', 'wind_blowing',
                     'brakes_squeaking', 'large_vehicle', 'cutlery and dishes', 'metro approaching', 'metro leaving'],
    'SAMPLE_RATE': 44100, 'HOP_LENGTH': 8820, 'N_FFT': 17640, 'WINDOW': 'hann', 'CENTER': True, 'PAD_MODE': 'constant',
    'MEL_POWER': 1.0, 'N_MELS': 64, 'FMIN': 50.0, 'FMAX': 14000.0, 'LOG_MEL': False, 'LOG_OFFSET': 1e-8,
    'SEQUENCE_LENGTH': 200,
    'CONV_CHANNELS': 128, 'CONV_KERNEL': 3, 'POOL_SIZES': [5, 2, 2], 'DROPOUT': 0.2, 'GRU_UNITS': 32, 'DENSE_UNITS': 32,
    'TARGETS': 'soft', 'OUTPUT_BIAS_INIT': 'torch', 'LEARNING_RATE': 1e-3, 'ADAM_BETAS': [0.9, 0.999], 'ADAM_EPS': 1e-8,
    'BATCH_SIZE': 32,
    'LR_DECAY_PATIENCE': 0.3, 'LR_DECAY_FACTOR': 10.0, 'EARLY_STOP_PATIENCE': 0.6,
    'FRAME_SHIFT': 0, 'FILTER_AUGMENT_BANDS': 0, 'FILTER_AUGMENT_MIN_BANDS': 1, 'FILTER_AUGMENT_MIN_WIDTH': 4,
    'FILTER_AUGMENT_FORM': 'step', 'FILTER_AUGMENT_DB': 6.0, 'MIXSTYLE': 0.0, 'MIXSTYLE_ALPHA': 0.3,
    'MIXUP': 0.0, 'MIXUP_ALPHA': 0.2, 'TIME_MASKS': 0, 'TIME_MASK_WIDTH': 20, 'FREQ_MASKS': 0, 'FREQ_MASK_WIDTH': 8,
}


# -----------------------------------------------------------------------------
# What each value above is to an experiment (experiment.py, runs.py). Every one not named here defines what a run
# trains: a run records it, and a workdir keeps it in its experiment. These may change from command to command on
# one workdir: the names of files and folders (and every path), the sources of data, speed alone (no number
# changes), how a run's energy is tracked, and the evaluation (evaluate.py re-scores the saved scores with them;
# each metrics file records them).
PER_COMMAND = {
    'AUDIO_DIR', 'ANNOTATION_DIR', 'FEATURES_DIR', 'METADATA_DIR', 'GT_FILE', 'DURATIONS_FILE', 'RUNS_DIR',
    'DEMO_MARKER', 'SCENES',
    'DEMO_SCALE', 'DEMO_SEED', 'DEMO_LENGTH_RANGE', 'AUDIO_SUBTYPE', 'ZENODO_URL', 'DEVELOPMENT_ARCHIVES',
    'EVALUATION_ARCHIVES', 'OFFICIAL_FOLDS_SHA256', 'RUNS',
    'FEATURE_JOBS', 'KEEP_FREED_MEMORY', 'TRACK_ENERGY', 'ENERGY_COUNTRY',
    'THRESHOLD', 'SEGMENT_LENGTH', 'MERGE_GAP', 'MIN_EVENT_LENGTH', 'TIMELINE', 'F1_THOP_TIME_DECIMALS',
    'PAUC_MAX_FPR', 'MEDIAN_FILTER', 'MEDIAN_FILTER_BY_CLASS', 'TUNE_MEDIAN_FILTERS', 'PUBLISHED',
    'PUBLISHED_PROTOCOL',
}
RUN_FLAGS = {'SEED', 'MAX_EPOCHS', 'LOSS', 'PRECISION'}   # a run records them by name (seed, epochs, loss, precision)
DERIVED = ('HARD_INDEX', 'FRAME_SECONDS')                  # from the values above, by derive()


# -----------------------------------------------------------------------------
# Derived from the values above; derived again when an experiment overrides them (experiment.py)

def derive():
    global HARD_INDEX, FRAME_SECONDS
    # model outputs -> the 11 evaluated (every script refuses a class missing from CLASSES: utils.config_problem)
    HARD_INDEX = [CLASSES.index(c) for c in HARD_CLASSES if c in CLASSES]
    FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE if SAMPLE_RATE else 0.0   # 0.2 s per frame (0 Hz: utils.config_problem)


derive()
