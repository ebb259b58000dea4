#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh needs on a lent GPU machine, which has Python 3.12 and PyTorch but no
# package index: nnU-Net, the dependencies that machine lacks (versions as in this checkout's .venv) and
# this package, installed into one folder and compressed with xz (SimpleITK's wheel alone is 53 MB zipped,
# about 29 MB this way), so everything travels inside the 64 MiB a device call may carry.
#   make install && bash scripts/gpu_bundle.sh        -> .gpu_bundle/site.tar.xz (44.5 MB here; git-ignored)
# On the GPU machine, from the repository root:
#   source scripts/gpu_site.sh && bash scripts/gpu_check.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV_PY=${VENV_PY:-$ROOT/.venv/bin/python}
OUT=$ROOT/.gpu_bundle
PY_VERSION=${GPU_BUNDLE_PYTHON:-3.12}
# not on the GPU machine's image (see .library/device/KINDS.md); everything else there is used as it is
PACKAGES=(nnunetv2 batchgenerators batchgeneratorsv2 acvl_utils dynamic_network_architectures blosc2 ndindex numexpr
          pydantic pydantic_core annotated-types typing-inspection simpleitk connected-components-3d nibabel yacs graphviz)
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/wheels" "$WORK/site" "$OUT"
FREEZE=$("$VENV_PY" -m pip freeze)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for name in "${PACKAGES[@]}"; do
  pin=$(grep -i -E "^${name//[-_]/[-_]}==" <<<"$FREEZE" | head -n 1) || { echo "$name: not in $VENV_PY's environment" >&2; exit 2; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
      "${PLATFORMS[@]}" -d "$WORK/wheels" "$pin" 2>/dev/null \
    || python3 -m pip wheel -q --no-deps --no-binary=:all: -w "$WORK/wheels" "$pin"  # pure-Python source only
done
python3 -m pip wheel -q --no-deps -w "$WORK/wheels" "$ROOT"  # this package
python3 -m pip install -q --no-deps --no-index --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    "${PLATFORMS[@]}" --target "$WORK/site" "$WORK"/wheels/*.whl
# PYTHONPATH folders get no .pth processing; this makes the folder a site directory, so our
# nnunet_mt_trainers.pth (trainer discovery, normalization registration) runs in every process
cat > "$WORK/site/sitecustomize.py" <<'PY'
import os
import site

site.addsitedir(os.path.dirname(os.path.abspath(__file__)))
PY
tar -cJf "$OUT/site.tar.xz.tmp" -C "$WORK/site" .
mv "$OUT/site.tar.xz.tmp" "$OUT/site.tar.xz"
ls -l "$OUT/site.tar.xz"
