#!/usr/bin/env bash
# Speech Commands v0.02 (one-second keywords, 16 kHz) -> a convolutional log-mel VAE. See README.md.
#   recipes/speechcommands/run.sh --data-dir DIR --exp-dir DIR [--stage N] [--stop-stage N] [--set key=value ...]
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$recipe_dir/../common.sh"
parse_args "$@"

# 0: speech_commands_v0.02.tar.gz -> DATA_DIR/speech_commands_v0.02
stage0() { av download speechcommands "$data_dir" >/dev/null; }
# 1: label = keyword, speaker = the hash before _nohash_; official validation_list.txt / testing_list.txt
stage1() {
  av prepare speechcommands "$(av download --locate speechcommands "$data_dir")" -o "$exp_dir/data" ${PREPARE_OPTS:-}
}
speech_recipe
