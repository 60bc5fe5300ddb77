# Shared shell code of the recipes (sourced by recipes/<corpus>/run.sh; not run on its own).
#
#   run.sh --data-dir DIR --exp-dir DIR [--stage N] [--stop-stage N] [--train-config FILE] [--set key=value ...]
#
# Options also take the ESPnet/icefall spelling with underscores (--stop_stage 3, --data_dir DIR).
#
# Stages (ESPnet style): 0 download, 1 prepare, 2 extract + statistics, 3 train, 4 evaluate,
# 5 generate + report. Every stage is a call of `audiovae` commands; the library does the work.
#
# - A finished stage leaves a stamp, EXP_DIR/stamps/stage<N>, holding the settings it ran with.
#   Running it again with the same settings does nothing; with other settings it stops and
#   says what to remove (results are never silently mixed).
# - Each stage's output is also written to EXP_DIR/logs/stage<N>.log. A failing stage stops
#   the recipe with its own message and a non-zero exit status.
# - --set key=value (or a bare key=value) goes to `audiovae train --set` (e.g. --set max_steps=500 beta=0.5).
# - AUDIOVAE chooses the command (default `audiovae`; e.g. AUDIOVAE="python -m audiovae").
#   NPROC=N trains with torchrun on N processes (TORCHRUN overrides the launcher).

set -euo pipefail

AUDIOVAE=${AUDIOVAE:-audiovae}
read -r -a AV <<<"$AUDIOVAE"
NPROC=${NPROC:-1}

stage=0
stop_stage=100
data_dir=""
exp_dir=""
train_config=""
mel_config=""
train_args=()

die() {
  echo "$(basename "$recipe_dir")/run.sh: $*" >&2
  exit 1
}

usage() {
  cat <<EOF
Usage: recipes/$(basename "$recipe_dir")/run.sh --data-dir DIR --exp-dir DIR [options] [--set key=value ...]

  --data-dir DIR        where the corpus is, or is downloaded to (an existing copy is used as it is)
  --exp-dir DIR         where manifests, features, the model, evaluations and samples go
  --stage N             first stage to run (default 0)
  --stop-stage N        last stage to run (default: all)
  --train-config FILE   TrainConfig YAML (default: conf/train.yaml)
  --mel-config FILE     MelConfig YAML for feature extraction (default: conf/mel.yaml; speech recipes)
${extra_usage:-}
  --set key=value       a TrainConfig setting for \`audiovae train --set\` (model_config.KEY=VALUE for the model;
                        a bare key=value means the same)

Options also take the ESPnet/icefall spelling: --stop_stage, --data_dir, --exp_dir, --train_config ...

Stages: ${stage_names:-0 download, 1 prepare, 2 extract, 3 train, 4 evaluate, 5 generate + report}
Environment: AUDIOVAE (the command, default audiovae), NPROC (torchrun processes for training),
  PREPARE_OPTS / EXTRACT_OPTS / EVAL_OPTS (extra options of audiovae prepare / extract / evaluate),
  N_RECONSTRUCT (held-out utterances to reconstruct, 2), N_SAMPLES (prior samples, 4), SAMPLE_SECONDS (2)
EOF
}

# parse_args "$@": the common options; a recipe handles its own first via parse_extra (returns 0 = consumed 2 args)
parse_args() {
  while [ $# -gt 0 ]; do
    # the ESPnet/icefall spelling (--stop_stage) is the same option as --stop-stage
    case "$1" in --*_*) set -- "--$(printf '%s' "${1#--}" | tr _ -)" "${@:2}" ;; esac
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --data-dir) data_dir=${2:?--data-dir needs a value}; shift 2 ;;
      --exp-dir) exp_dir=${2:?--exp-dir needs a value}; shift 2 ;;
      --stage) stage=${2:?--stage needs a value}; shift 2 ;;
      --stop-stage) stop_stage=${2:?--stop-stage needs a value}; shift 2 ;;
      --train-config) train_config=${2:?--train-config needs a value}; shift 2 ;;
      --mel-config) mel_config=${2:?--mel-config needs a value}; shift 2 ;;
      --set) [[ "${2:-}" == *=* ]] || die "--set needs key=value"; train_args+=("$2"); shift 2 ;;
      --*)
        if declare -F parse_extra >/dev/null && parse_extra "$@"; then shift 2; else
          usage >&2; die "unknown option $1"; fi ;;
      *=*) train_args+=("$1"); shift ;;
      *) usage >&2; die "unexpected argument '$1' (options are --name value; training overrides key=value)" ;;
    esac
  done
  [[ "$stage" =~ ^[0-9]+$ && "$stop_stage" =~ ^[0-9]+$ ]] || die "--stage and --stop-stage take numbers"
  [ -n "$exp_dir" ] || { usage >&2; die "--exp-dir is required"; }
  [ -n "$data_dir" ] || data_dir=${default_data_dir:-}
  [ -n "$data_dir" ] || { usage >&2; die "--data-dir is required"; }
  train_config=${train_config:-$recipe_dir/conf/train.yaml}
  [ -f "$train_config" ] || die "no train config $train_config"
  mel_config=${mel_config:-${default_mel_config:-$recipe_dir/conf/mel.yaml}}
  mkdir -p "$exp_dir/stamps" "$exp_dir/logs"
  exp_dir=$(cd "$exp_dir" && pwd)
  case "$data_dir" in /*) ;; *) data_dir=$(pwd)/$data_dir ;; esac
}

av() { "${AV[@]}" "$@"; }

# run_stage N NAME FUNCTION SETTINGS: run FUNCTION as stage N unless it is outside --stage..--stop-stage
# or already done with the same SETTINGS (a string: whatever the stage's result depends on).
run_stage() {
  local n=$1 name=$2 fn=$3 settings=$4
  [ "$n" -ge "$stage" ] && [ "$n" -le "$stop_stage" ] || return 0
  local stamp="$exp_dir/stamps/stage$n" log="$exp_dir/logs/stage$n.log"
  if [ -f "$stamp" ]; then
    if [ "$(cat "$stamp")" = "$settings" ]; then
      echo "=== stage $n ($name): done already ($stamp); skipping"
      return 0
    fi
    die "stage $n ($name) was run with other settings than now:
--- then
$(cat "$stamp")
--- now
$settings
Use another --exp-dir, or remove $stamp and the stage's outputs to redo it."
  fi
  echo "=== stage $n ($name): $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  local rc=0
  set +e
  (set -euo pipefail; "$fn") 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    # the stage's own message on stderr too: its `error:` lines, else the end of its output
    { grep -E '^error:' "$log" || tail -n 5 "$log"; } | tail -n 5 >&2
    echo "$(basename "$recipe_dir")/run.sh: stage $n ($name) failed (exit status $rc); its output is in $log" >&2
    exit "$rc"
  fi
  printf '%s' "$settings" >"$stamp.tmp" && mv "$stamp.tmp" "$stamp"
}

# ---- stages shared by the recipes -------------------------------------------------------------

# stage 2: manifest -> feature cache (log-mel frames, per-bin statistics of the train split)
stage_extract() {
  av extract "$exp_dir/data/manifest.tsv" -o "$exp_dir/feats" --config "$mel_config" ${EXTRACT_OPTS:-}
}

# stage 3: train on DATA (a feature cache or an image folder); resumes an interrupted run
train_on() {
  local data=$1 out="$exp_dir/train"
  local args=("$data" -o "$out" --config "$train_config")
  local kv
  for kv in "${train_args[@]}"; do args+=(--set "$kv"); done
  [ -f "$out/train.yaml" ] && { echo "resuming the run in $out"; args+=(--resume); }
  if [ "$NPROC" -gt 1 ]; then
    local tr
    if [ -n "${TORCHRUN:-}" ]; then read -r -a tr <<<"$TORCHRUN"
    elif [[ "$AUDIOVAE" == *" -m audiovae" ]]; then read -r -a tr <<<"${AUDIOVAE% -m audiovae} -m torch.distributed.run"
    else tr=(torchrun); fi
    "${tr[@]}" --standalone --nproc_per_node="$NPROC" -m audiovae train "${args[@]}"
  else
    av train "${args[@]}"
  fi
}

train_settings() {
  printf 'config %s:\n%s\noverrides: %s\nNPROC=%s\n' "$train_config" "$(cat "$train_config")" "${train_args[*]:-}" "$NPROC"
}

# the splits the manifest has, among val and test (the library reads the manifest: `audiovae manifest`)
manifest_splits() {
  local all s
  all=$(av manifest "$exp_dir/data/manifest.tsv" --splits) || return 1
  for s in $all; do
    case "$s" in val | test) echo "$s" ;; esac
  done
}

# stage 4: evaluate the best checkpoint on each held-out split -> EXP_DIR/eval/<split>.json
stage_evaluate_features() {
  local split found=0
  mkdir -p "$exp_dir/eval"
  for split in $(manifest_splits); do
    found=1
    av evaluate "$exp_dir/train" "$exp_dir/feats" --split "$split" --json "$exp_dir/eval/$split.json" ${EVAL_OPTS:-}
  done
  [ "$found" -eq 1 ] || { echo "the manifest has no val or test utterances to evaluate on" >&2; return 1; }
}

# stage 5: reconstruct a few held-out utterances, sample from the prior, then the report if the toolkit has it
stage_generate_speech() {
  local splits s split="" n=${N_RECONSTRUCT:-2} out="$exp_dir/generate"
  splits=$(manifest_splits) || return 1
  for s in $splits; do  # test when there is one, else the first held-out split
    [ -n "$split" ] || split=$s
    [ "$s" != test ] || split=test
  done
  mkdir -p "$out/reconstruct"
  # --overwrite: a rerun of this stage replaces what the last one generated here (the recipe's own folder)
  if [ -n "$split" ] && [ "$n" -gt 0 ]; then
    av manifest "$exp_dir/data/manifest.tsv" --split "$split" --limit "$n" | while IFS=$'\t' read -r id path; do
        av reconstruct "$exp_dir/train" "$path" -o "$out/reconstruct/$id.wav" --overwrite </dev/null
      done
  fi
  av sample "$exp_dir/train" -o "$out/samples" -n "${N_SAMPLES:-4}" --seconds "${SAMPLE_SECONDS:-2}" --overwrite
  stage_report "$exp_dir/feats"
}

stage_report() {
  local data=$1
  if av report --help >/dev/null 2>&1; then
    av report "$exp_dir/train" --data "$data" -o "$exp_dir/report"
  else
    echo "this audiovae has no 'report' command yet; skipping the report"
  fi
}

# ---- speech recipes: run.sh defines stage0 (download) and stage1 (prepare); the rest is shared ----
speech_recipe() {
  stage2() { stage_extract; }
  stage3() { train_on "$exp_dir/feats"; }
  stage4() { stage_evaluate_features; }
  stage5() { stage_generate_speech; }
  run_stage 0 download stage0 "$data_dir ${download_settings:-}"
  run_stage 1 prepare stage1 "$data_dir ${download_settings:-} ${PREPARE_OPTS:-}"
  run_stage 2 extract stage2 "$(cat "$mel_config") ${EXTRACT_OPTS:-}"
  run_stage 3 train stage3 "$(train_settings)"
  run_stage 4 evaluate stage4 "${EVAL_OPTS:-}"
  run_stage 5 generate stage5 "${N_RECONSTRUCT:-2} ${N_SAMPLES:-4} ${SAMPLE_SECONDS:-2}"
  echo "done: $exp_dir"
}

# ---- image recipes (mnist, fashion_mnist, cifar10): the IDX files / python batches are read as they are ----
image_recipe() {
  local corpus=$1
  images() { av download --locate "$corpus" "$data_dir"; }
  stage0() { av download "$corpus" "$data_dir" >/dev/null; }
  stage1() { echo "images in $(images)"; }
  stage2() { echo "nothing to extract: $corpus is read as it is (the training split's statistics are the data's own)"; }
  stage3() { train_on "$(images)"; }
  stage4() {
    mkdir -p "$exp_dir/eval"
    av evaluate "$exp_dir/train" "$(images)" --split test --json "$exp_dir/eval/test.json" ${EVAL_OPTS:-}
  }
  stage5() { stage_report "$(images)"; }
  run_stage 0 download stage0 "$data_dir"
  run_stage 1 prepare stage1 "$data_dir"
  run_stage 2 extract stage2 ""
  run_stage 3 train stage3 "$(train_settings)"
  run_stage 4 evaluate stage4 "${EVAL_OPTS:-}"
  run_stage 5 report stage5 ""
  echo "done: $exp_dir"
}
