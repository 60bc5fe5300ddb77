#!/usr/bin/env bash
# fashion_mnist: an image VAE on the official files (read as they are). See README.md.
#   recipes/fashion_mnist/run.sh --data-dir DIR --exp-dir DIR [--stage N] [--stop-stage N] [--set key=value ...]
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
stage_names="0 download, 1 locate, 2 (nothing to extract), 3 train, 4 evaluate on test, 5 report"
# with no --data-dir, Debian's dataset-fashion-mnist is used when installed (nothing is downloaded)
[ -d /usr/share/datasets/fashion-mnist ] && default_data_dir=/usr/share/datasets/fashion-mnist
. "$recipe_dir/../common.sh"
parse_args "$@"
image_recipe fashion_mnist
