#!/usr/bin/env bash
# cifar10: an image VAE on the official files (read as they are). See README.md.
#   recipes/cifar10/run.sh --data-dir DIR --exp-dir DIR [--stage N] [--stop-stage N] [--set key=value ...]
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
stage_names="0 download, 1 locate, 2 (nothing to extract), 3 train, 4 evaluate on test, 5 report"
. "$recipe_dir/../common.sh"
parse_args "$@"
image_recipe cifar10
