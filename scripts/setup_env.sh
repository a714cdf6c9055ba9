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
T0=$(date +%s)
PYTHON=${PYTHON:-python3}
TORCH_PIN=${TORCH_PIN:-2.13.0}
EXTRAS=${EXTRAS:-test,triton,plot,tb}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

# step LABEL COMMAND...: say what runs, a line every 20 s while it does (pip is quiet), and how long it took
step() {
    local label=$1 start
    shift
    start=$(date +%s)
    echo "[setup] $label"
    (while sleep 20; do echo "[setup]   ... still at it ($(($(date +%s) - start))s)"; done) &
    local ticker=$! rc=0
    "$@" || rc=$?
    kill "$ticker" 2>/dev/null || true
    wait "$ticker" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        echo "[setup] FAILED after $(($(date +%s) - start))s: $label" >&2
        exit "$rc"
    fi
    echo "[setup]   done in $(($(date +%s) - start))s"
}

if "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] using the installed torch $("$PY" -c 'import torch; print(torch.__version__, "cuda" if torch.version.cuda else "cpu")')"
else
    if [ -z "${TORCH_INDEX_URL:-}" ] && [ "$(uname -s)" = Linux ]; then
        # PyPI's Linux wheel of torch is the CUDA build (about 4.6 GB with its CUDA libraries); the CPU
        # build (about 200 MB) lives on PyTorch's own index. README.md, "Install", has both ways.
        echo "[setup] note: on Linux, torch from PyPI is the CUDA build (~4.6 GB to download). For the CPU build"
        echo "[setup]       (~200 MB), stop and run: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu make demo"
    fi
    step "installing torch==$TORCH_PIN${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL} (1-3 min)" \
        "${PIP[@]}" install "torch==$TORCH_PIN" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi

CONSTRAINTS="$VENV/fastdiff-constraints.txt"
"$PY" -c "import torch; print('torch==' + torch.__version__)" > "$CONSTRAINTS"
# An installed triton (shipped with CUDA torch) is kept as well.
"$PY" -c "import triton; print('triton==' + triton.__version__)" >> "$CONSTRAINTS" 2>/dev/null || true

step "installing fastdiff[$EXTRAS] (editable) and building its C++ extension (1-3 min)" \
    "${PIP[@]}" install -c "$CONSTRAINTS" -e ".[$EXTRAS]"
if [[ ",$EXTRAS," == *",test,"* ]]; then
    # the k-style samplers' peer; --no-deps: its package pulls torchvision, wandb and more, which its
    # sampling module (all the tests import) does not need
    step "installing k-diffusion==0.1.1 (no dependencies)" \
        "${PIP[@]}" install -c "$CONSTRAINTS" --no-deps "k-diffusion==0.1.1"
fi
"$PY" -c "import fastdiff; print('[setup] fastdiff', fastdiff.__version__, 'backends:', fastdiff.available_backends())"
echo "[setup] ready in $(($(date +%s) - T0))s. The command line is $VENV/bin/fastdiff (try: $VENV/bin/fastdiff --help),"
echo "[setup] or run 'source $VENV/bin/activate' once and then plain 'fastdiff ...'."
