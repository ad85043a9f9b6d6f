#!/usr/bin/env bash
# Installs the Debian packages Strata builds and runs with. Idempotent: packages
# already present are skipped, so running it before every build costs a second.
#
#   build-essential    g++ / make
#   libeigen3-dev      Eigen: CPU element-wise math
#   libopenblas-dev    OpenBLAS: CPU GEMM (measured faster than Eigen's own GEMM, docs/performance.md)
#   libomp-dev         OpenMP runtime headers (g++ uses libgomp; kept for clang builds)
#   libyaml-cpp-dev    yaml-cpp: configuration files
#   catch2             Catch2 (v2, single header): unit tests
#   libsentencepiece-dev, sentencepiece   SentencePiece: subword models
#   libopenmpi-dev, openmpi-bin           OpenMPI: multi-process training (mpirun)
#   nlohmann-json3-dev nlohmann-json: safetensors headers, metrics.jsonl
#   libcli11-dev       CLI11: command-line parsing
#   python3-torch python3-numpy  (tests only) independent PyTorch reference of the model
#   python3-yaml       (tests only) the reference reads config.yaml
#   python3-matplotlib data_tools/plot_routing: routing plots (installed with --test)
set -euo pipefail

PACKAGES=(
  build-essential pkg-config
  libeigen3-dev libopenblas-dev
  libyaml-cpp-dev catch2
  libsentencepiece-dev sentencepiece
  libopenmpi-dev openmpi-bin
  nlohmann-json3-dev libcli11-dev
)
if [[ "${1:-}" == "--test" ]]; then
  PACKAGES+=(python3-torch python3-numpy python3-yaml python3-matplotlib)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "install_deps: not root and no sudo; install these Debian packages: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq || ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/strata_install_deps.log 2>&1; then
  echo "install_deps: apt-get could not install: ${missing[*]} (log: /tmp/strata_install_deps.log)" >&2
  tail -5 /tmp/strata_install_deps.log >&2 || true
  exit 1
fi
still=()
for p in "${missing[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || still+=("$p")
done
if [[ ${#still[@]} -ne 0 ]]; then
  echo "install_deps: still missing after apt-get: ${still[*]}" >&2
  exit 1
fi
echo "install_deps: done"
