#!/usr/bin/env bash
# Set up .venv for fastdiff on a fresh machine: called by `make test` / `make demo`.
#
# - The venv sees the system's site-packages, so a CUDA build of torch that is already installed
#   (on a GPU box) is used as it is and never replaced.
# - Without any torch, the CPU build is pinned (TORCH_PIN) so pip never pulls a multi-GB CUDA wheel.
# - The installed torch is then frozen with a constraints file, so installing the extras cannot
#   upgrade it.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_PIN=${TORCH_PIN:-2.13.0}
EXTRAS=${EXTRAS:-test,triton,plot,tb}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

if "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] using the installed torch $("$PY" -c 'import torch; print(torch.__version__, "cuda" if torch.version.cuda else "cpu")')"
else
    echo "[setup] installing torch==$TORCH_PIN (CPU build)"
    # TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu gives the CPU build on machines whose
    # default index would serve the CUDA one.
    "${PIP[@]}" install "torch==$TORCH_PIN" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi

CONSTRAINTS="$VENV/fastdiff-constraints.txt"
"$PY" -c "import torch; print('torch==' + torch.__version__)" > "$CONSTRAINTS"
# An installed triton (shipped with CUDA torch) is kept as well.
"$PY" -c "import triton; print('triton==' + triton.__version__)" >> "$CONSTRAINTS" 2>/dev/null || true

echo "[setup] installing fastdiff[$EXTRAS] (editable; builds the C++ extension)"
"${PIP[@]}" install -c "$CONSTRAINTS" -e ".[$EXTRAS]"
"$PY" -c "import fastdiff; print('[setup] fastdiff', fastdiff.__version__, 'backends:', fastdiff.available_backends())"
