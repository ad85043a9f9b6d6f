#!/usr/bin/env bash
# Builds what test/cuda/device_check.sh runs on a GPU machine that cannot build
# Strata itself (no yaml-cpp, SentencePiece or OpenBLAS there, nothing to
# install) and puts it in .gpu_bundle/ (git-ignored through .git/info/exclude):
#   payload.tar.xz  (device_check.sh unpacks it; xz because OpenBLAS alone is
#                   35 MiB and each program carries its kernels, ~140 MiB in all)
#     strata-cuda-tests, gpu_train, gpu_attention, strata-train
#                  stripped, built CUDA=1 MPI=0 NATIVE=0, sm_90 SASS + compute_90 PTX
#     lib/         the non-CUDA shared libraries they need (ldd), found first there
#     lib-system/  libstdc++ / libgcc_s, used there only if the machine's own are too old
#   configs/     jobs/configs/*.yaml (the smoke run and the benchmark read them)
#   data/        the fixture corpus (test/fixtures/lohelp) as a 1k SentencePiece model + binarised text
#   MANIFEST     commit, a hash of the sources, local changes, build flags, the
#                newest GLIBC/GLIBCXX symbol versions the programs need
# CUDA's own libraries (cudart, cuBLAS/cuBLASLt, cuDNN, NCCL, the driver) are
# NOT bundled: device_check.sh takes them from the GPU machine (PyTorch's
# nvidia-* packages, /usr/local/cuda, /usr/local/nvidia).
# Fails if the bundle exceeds 60 MiB (the device machine takes 64 MiB of
# working tree in all).
#   bash test/cuda/make_bundle.sh            # then: device_check.sh there, with .gpu_bundle carried
# Environment: JOBS (make -j, default 2), CUDA_ARCHS (default 90: the H100/H200).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BUILD=build-gpu
OUT=.gpu_bundle
STAGE=$BUILD/bundle-stage  # the payload before packing
LIMIT_MIB=60
ARCHS=${CUDA_ARCHS:-90}
PROGRAMS=(strata-cuda-tests bench/gpu_train bench/gpu_attention strata-train)

# Keep the build and the bundle out of git (and out of what travels to the
# device machine unless named in its carry list).
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
touch "$exclude"
for pat in /.gpu_bundle/ /build-gpu/; do
  grep -qxF "$pat" "$exclude" || echo "$pat" >> "$exclude"
done

echo "== building into $BUILD/ (CUDA=1 MPI=0 NATIVE=0 CUDA_ARCHS=$ARCHS)"
make --no-print-directory -j"${JOBS:-2}" CUDA=1 MPI=0 NATIVE=0 BUILD=$BUILD CUDA_ARCHS="$ARCHS" \
  "${PROGRAMS[@]/#/$BUILD/}" $BUILD/train-spm $BUILD/strata-preprocess

rm -rf "$OUT" "$STAGE"
mkdir -p "$STAGE/lib" "$STAGE/lib-system" "$OUT/configs" "$OUT/data"
for p in "${PROGRAMS[@]}"; do
  cp "$BUILD/$p" "$STAGE/$(basename "$p")"
  strip "$STAGE/$(basename "$p")"
done

# Shared libraries: everything ldd resolves except glibc's own and CUDA's.
is_glibc() { [[ $1 =~ ^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libutil\.so|libresolv\.so|libmvec\.so) ]]; }
is_cuda() { [[ $1 =~ ^lib(cuda|cudart|cublas|cublasLt|cudnn|nccl|nvrtc|nvJitLink|nvidia-) ]]; }
declare -A seen=()
for p in "${PROGRAMS[@]}"; do
  while read -r name arrow path _; do
    [[ $arrow == "=>" ]] || continue
    [[ -n ${seen[$name]:-} ]] && continue
    seen[$name]=1
    if is_glibc "$name" || is_cuda "$name"; then continue; fi
    if [[ $path == "not" ]]; then
      echo "make_bundle: $BUILD/$p needs $name, which ldd cannot find here" >&2
      exit 1
    fi
    dest=$STAGE/lib
    [[ $name =~ ^lib(stdc\+\+|gcc_s)\.so ]] && dest=$STAGE/lib-system
    cp -L "$path" "$dest/$name"
  done < <(ldd "$BUILD/$p")
done
chmod u+w "$STAGE"/lib/* "$STAGE"/lib-system/*

cp jobs/configs/*.yaml "$OUT/configs/"

echo "== fixture corpus (1k SentencePiece model, binarised)"
"$BUILD/train-spm" --tsv-dir test/fixtures/lohelp --model-prefix "$OUT/data/spm" --vocab-size 1000 \
  --soft-vocab-limit > "$BUILD/bundle-spm.log" 2>&1 || { cat "$BUILD/bundle-spm.log"; exit 1; }
"$BUILD/strata-preprocess" --spm "$OUT/data/spm.model" --out "$OUT/data" --tsv-dir test/fixtures/lohelp \
  > "$BUILD/bundle-preprocess.log" 2>&1 || { cat "$BUILD/bundle-preprocess.log"; exit 1; }

# The newest symbol versions the bundle asks of the machine's glibc / libstdc++.
newest() {  # prefix (GLIBC_ or GLIBCXX_)
  for f in "$STAGE"/strata-cuda-tests "$STAGE"/gpu_train "$STAGE"/gpu_attention "$STAGE"/strata-train "$STAGE"/lib/*; do
    objdump -T "$f" 2>/dev/null | grep -o "($1[0-9.]*)" || true
  done | tr -d '()' | sort -uV | tail -1
}
{
  echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -n)"
  echo "commit: $(git rev-parse HEAD)"
  # what the programs were built from, committed or not (ties results to code)
  echo "source hash: $(git ls-files -z --cached --others --exclude-standard -- Makefile src include test/cuda \
    test/bench data_tools | sort -z | xargs -0 sha256sum 2>/dev/null | sha256sum | cut -c1-16)"
  echo "local changes (git status --short):"
  git status --short | sed 's/^/  /'
  echo "make: CUDA=1 MPI=0 NATIVE=0 BUILD=$BUILD CUDA_ARCHS=$ARCHS"
  echo "nvcc: $(/usr/local/cuda/bin/nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo '?')"
  echo "needs: $(newest GLIBC_), $(newest GLIBCXX_)"
  echo "bundled libraries: $(cd "$STAGE/lib" && ls | tr '\n' ' ')"
  echo "payload (unpacked): $(du -sh "$STAGE" | cut -f1)"
} > "$OUT/MANIFEST"

echo "== packing $OUT/payload.tar.xz"
XZ_OPT=-9 tar -C "$STAGE" -cJf "$OUT/payload.tar.xz" .

bytes=$(du -sb "$OUT" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "== $OUT/: $mib MiB (limit $LIMIT_MIB MiB); with the working tree that travels: $(awk -v b="$((bytes + tree_bytes))" 'BEGIN { printf "%.1f", b / 1048576 }') MiB (limit 64)"
du -sh "$OUT"/* | sed 's/^/   /'
if (( bytes > LIMIT_MIB * 1048576 )); then
  echo "make_bundle: the bundle is $mib MiB, over the $LIMIT_MIB MiB limit" >&2
  exit 1
fi
if (( bytes + tree_bytes > 64 * 1048576 )); then
  echo "make_bundle: bundle + working tree exceed the 64 MiB the device machine takes" >&2
  exit 1
fi
echo "make_bundle: ok. On the GPU machine (carry .gpu_bundle): bash test/cuda/device_check.sh"
