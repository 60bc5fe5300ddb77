#!/usr/bin/env bash
# LJSpeech-1.1 (one speaker, 22050 Hz) -> a convolutional log-mel VAE. See README.md.
#   recipes/ljspeech/run.sh --data-dir DIR --exp-dir DIR [--stage N] [--stop-stage N] [--set key=value ...]
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$recipe_dir/../common.sh"
parse_args "$@"

# 0: LJSpeech-1.1.tar.bz2 -> DATA_DIR/LJSpeech-1.1 (nothing when DATA_DIR holds, or is, a copy)
stage0() { av download ljspeech "$data_dir" >/dev/null; }
# 1: metadata.csv + wavs/ -> EXP_DIR/data/manifest.tsv, split by file (5 % val, 5 % test)
stage1() { av prepare ljspeech "$(av download --locate ljspeech "$data_dir")" -o "$exp_dir/data" ${PREPARE_OPTS:-}; }
speech_recipe
