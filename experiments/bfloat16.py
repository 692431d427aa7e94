"""Mixed precision: the convolution blocks in bfloat16 (1.5x faster epochs measured on a CPU with native bfloat16,
AVX512-BF16; also native on NVIDIA GPUs from Ampere on), everything else in float32.

    python extract_features.py --data-root data/demo --workdir work/bf16 --config experiments/bfloat16.py
    python task4b.py --workdir work/bf16
    python compare.py work/demo work/bf16

The same as `task4b.py --precision bfloat16`, kept by the workdir. Other numbers than float32's, within the
run-to-run spread on the demo data (docs/experiments.md).
"""
PRECISION = 'bfloat16'
