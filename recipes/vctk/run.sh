#!/usr/bin/env bash
# VCTK 0.92 (110 speakers, 48 kHz FLAC, mic1) -> a convolutional log-mel VAE at 22050 Hz. See README.md.
#   recipes/vctk/run.sh --data-dir DIR --exp-dir DIR [--stage N] [--stop-stage N] [--set key=value ...]
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$recipe_dir/../common.sh"
parse_args "$@"
# VCTK has no official split: hold out whole speakers, so val/test measure unseen voices
PREPARE_OPTS=${PREPARE_OPTS:---split-by speaker}

# 0: VCTK-Corpus-0.92.zip -> DATA_DIR/VCTK-Corpus-0.92
stage0() { av download vctk "$data_dir" >/dev/null; }
# 1: wav48_silence_trimmed/pXXX/*_mic1.flac + txt/ + speaker-info.txt -> EXP_DIR/data/manifest.tsv
stage1() { av prepare vctk "$(av download --locate vctk "$data_dir")" -o "$exp_dir/data" ${PREPARE_OPTS}; }
speech_recipe
