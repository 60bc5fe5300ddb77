#!/usr/bin/env bash
# Any folder of audio files (or Debian's asterisk prompts: --corpus asterisk) -> a convolutional log-mel VAE.
#   recipes/folder/run.sh --data-dir DIR --exp-dir DIR [--subdirs none|speaker|label] [--stage N] [--set key=value ...]
#   recipes/folder/run.sh --corpus asterisk --exp-dir DIR        (DATA_DIR defaults to /usr/share/asterisk/sounds)
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
corpus=folder
subdirs=none
extra_usage='  --corpus folder|asterisk   a plain folder (default) or the asterisk-core-sounds-*-g722 voices
  --subdirs none|speaker|label   folder: what the first level of sub-folders names (default none)'
parse_extra() {
  case "$1" in
    --corpus) corpus=${2:?--corpus needs a value}; return 0 ;;
    --subdirs) subdirs=${2:?--subdirs needs a value}; return 0 ;;
  esac
  return 1
}
# pre-scan for --corpus, so that its defaults apply before the common options are checked
for ((i = 1; i < $#; i++)); do [ "${!i}" = --corpus ] && { j=$((i + 1)); corpus=${!j}; }; done
case "$corpus" in
  folder) ;;
  asterisk) default_data_dir=/usr/share/asterisk/sounds; default_mel_config=$recipe_dir/conf/mel_asterisk.yaml ;;
  *) echo "folder/run.sh: --corpus must be folder or asterisk, not '$corpus'" >&2; exit 1 ;;
esac
. "$recipe_dir/../common.sh"
parse_args "$@"
download_settings="$corpus $subdirs"

# 0: nothing to download: check that the folder is there
stage0() {
  [ -d "$data_dir" ] || { echo "no folder $data_dir" >&2; [ "$corpus" = asterisk ] && \
    echo "install asterisk-core-sounds-{es,fr,it,ru}-g722" >&2; return 1; }
  echo "$corpus corpus in $data_dir (nothing to download)"
}
# 1: every audio file -> EXP_DIR/data/manifest.tsv; asterisk: four voices, fixed split by prompt name
stage1() {
  if [ "$corpus" = asterisk ]; then
    av prepare asterisk "$data_dir" -o "$exp_dir/data" ${PREPARE_OPTS:-}
  else
    av prepare folder "$data_dir" --subdirs "$subdirs" -o "$exp_dir/data" ${PREPARE_OPTS:-}
  fi
}
speech_recipe
