#!/usr/bin/env bash
# LJSpeech-1.1 (one speaker, 22050 Hz) -> a convolutional log-mel VAE. See README.md.
#   recipes/ljspeech/run.sh --data-dir DIR --exp-dir DIR [--stage N] [--stop-stage N] [key=value ...]
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$recipe_dir/../common.sh"
parse_args "$@"

stage0() { av download ljspeech "$data_dir" >/dev/null; }   # DATA_DIR/LJSpeech-1.1 (or DATA_DIR is a copy)
stage1() { av prepare ljspeech "$(av download --locate ljspeech "$data_dir")" -o "$exp_dir/data"; }
stage2() { stage_extract; }
stage3() { train_on "$exp_dir/feats"; }
stage4() { stage_evaluate_features; }
stage5() { stage_generate_speech; }

run_stage 0 download stage0 "$data_dir"
run_stage 1 prepare stage1 "$data_dir"
run_stage 2 extract stage2 "$(cat "$recipe_dir/conf/mel.yaml")"
run_stage 3 train stage3 "$(train_settings)"
run_stage 4 evaluate stage4 "${EVAL_OPTS:-}"
run_stage 5 generate stage5 "${N_RECONSTRUCT:-2} ${N_SAMPLES:-4} ${SAMPLE_SECONDS:-2}"
echo "done: $exp_dir"
