# Source on the GPU machine, from the repository root (after scripts/gpu_bundle.sh made .gpu_bundle here):
#   source scripts/gpu_site.sh && bash scripts/gpu_check.sh
# Unpacks the bundle into /tmp/gpu_site once and puts it first on PYTHONPATH and PATH for python3.
GPU_SITE=${GPU_SITE:-/tmp/gpu_site}
if [ ! -f "$GPU_SITE/sitecustomize.py" ]; then
  mkdir -p "$GPU_SITE" && tar -xJf .gpu_bundle/site.tar.xz -C "$GPU_SITE"
  # console scripts were written with this machine's interpreter in their first line
  sed -i "1s|^#!.*|#!$(command -v python3)|" "$GPU_SITE"/bin/*
fi
export PYTHONPATH=$GPU_SITE${PYTHONPATH:+:$PYTHONPATH} PATH=$GPU_SITE/bin:$PATH PYTHON=python3
