#!/usr/bin/env bash
# LibriSpeech (16 kHz read speech) -> a convolutional log-mel VAE. See README.md.
#   recipes/librispeech/run.sh --data-dir DIR --exp-dir DIR [--subsets "train-clean-100 dev-clean test-clean"]
#                              [--stage N] [--stop-stage N] [--set key=value ...]
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
subsets="train-clean-100 dev-clean test-clean"
extra_usage='  --subsets "A B ..."   LibriSpeech subsets to download (default: train-clean-100 dev-clean test-clean)'
parse_extra() { case "$1" in --subsets) subsets=${2:?--subsets needs a value}; return 0 ;; esac; return 1; }
. "$recipe_dir/../common.sh"
parse_args "$@"
subset_opts=()
for s in $subsets; do subset_opts+=(--subset "$s"); done
download_settings="$subsets"

# 0: one archive per subset -> DATA_DIR/LibriSpeech/<subset> (+ SPEAKERS.TXT, CHAPTERS.TXT...)
stage0() { av download librispeech "$data_dir" "${subset_opts[@]}" >/dev/null; }
# 1: official splits: train-* -> train, dev-* -> val, test-* -> test (every subset present in the folder)
stage1() {
  av prepare librispeech "$(av download --locate librispeech "$data_dir" "${subset_opts[@]}")" -o "$exp_dir/data" \
    ${PREPARE_OPTS:-}
}
speech_recipe
