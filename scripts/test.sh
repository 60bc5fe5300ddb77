#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
#   - Debian packages: espeak-ng (speech for the tests), pocketsphinx-testdata (real read
#     speech at 16 kHz), dataset-fashion-mnist (images in IDX format), asterisk-core-sounds-es-g722
#     (real recorded speech in G.722) and ffmpeg (decodes it), chromium (opens the HTML report),
#     python3-venv (a fresh Debian python3 has no ensurepip)
#   - a virtual environment .venv with audiovae and its dev extra (pytest, torchaudio, pystoi, the [eval] scores...)
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k vocoder`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
[ -d /usr/share/pocketsphinx/test/data ] || need+=(pocketsphinx-testdata)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
[ -d /usr/share/asterisk/sounds/es_MX_f_Allison ] || need+=(asterisk-core-sounds-es-g722)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x .venv/bin/python ] || python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[dev]'
# resemblyzer's webrtcvad imports pkg_resources, gone in setuptools 81 (the [eval] extra pins it; a venv made by a
# newer python may carry a newer one from before)
.venv/bin/python -c 'import pkg_resources' >/dev/null 2>&1 || .venv/bin/python -m pip install -q 'setuptools<81'
exec .venv/bin/python -m pytest -q "$@"
