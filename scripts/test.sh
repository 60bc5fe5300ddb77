#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
#   - Debian packages: espeak-ng (speech for the tests), pocketsphinx-testdata (real read
#     speech at 16 kHz), dataset-fashion-mnist (images in IDX format), chromium (the report's
#     browser test opens the page headless)
#   - a virtual environment .venv with audiovae and its dev extra (pytest, torchaudio, pystoi...)
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k vocoder`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
[ -d /usr/share/pocketsphinx/test/data ] || need+=(pocketsphinx-testdata)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[dev]'
exec .venv/bin/python -m pytest -q "$@"
