#!/usr/bin/env bash
# Set up everything jupyter_byok needs on a fresh Debian machine, idempotently:
#   - Debian packages: Chromium (browser tests), build tools for llama-cpp-python;
#   - a virtual environment in .venv with the package (editable) and all extras,
#     which builds the TypeScript front end and installs the embedded local model.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
# PostgreSQL's server binaries (initdb, pg_ctl) for tests/pg's throwaway clusters
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt_install "${missing[@]}"
fi

# BYOK_LLAMA_GPU=cuda|metal|vulkan builds llama-cpp-python with that GPU backend, so that
# n_gpu_layers "auto" puts every layer on the GPU (docs/local-models.md). It needs the
# toolkit: CUDA (nvcc), Xcode's Metal (macOS), or the Vulkan SDK. Unset: CPU only.
gpu=${BYOK_LLAMA_GPU:-}
case "$gpu" in
  "") gpu_args="" ;;
  cuda) gpu_args="-DGGML_CUDA=on" ;;
  metal) gpu_args="-DGGML_METAL=on" ;;
  vulkan) gpu_args="-DGGML_VULKAN=on" ;;
  *)
    echo "setup: BYOK_LLAMA_GPU must be cuda, metal or vulkan (or unset), not '$gpu'" >&2
    exit 2
    ;;
esac
# LLAVA (image support) is not used: skipping it shortens the llama.cpp build.
llama_cmake="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}${gpu_args:+ $gpu_args}"

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi

# Reinstall only when the project's dependency files changed since the last setup.
stamp=.venv/.byok-setup-stamp
want=$( (cat pyproject.toml labextension/package.json; echo "gpu=$gpu") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -d jupyter_byok/labextension ]; then
  echo "setup: installing Python packages (llama-cpp-python compiles on first install: ~5-7 min)"
  .venv/bin/python -m pip install -q --upgrade pip
  CMAKE_ARGS="$llama_cmake" .venv/bin/python -m pip install -q -e ".[local,test]"
  # pip keeps an installed llama-cpp-python: a changed GPU choice rebuilds it.
  llama_stamp=.venv/.byok-llama-gpu
  if [ "$(cat "$llama_stamp" 2>/dev/null || true)" != "$gpu" ]; then
    if [ -f "$llama_stamp" ] || [ -n "$gpu" ]; then
      echo "setup: building llama-cpp-python for ${gpu:-CPU only} ($llama_cmake)"
      version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
      CMAKE_ARGS="$llama_cmake" .venv/bin/python -m pip install -q --force-reinstall --no-deps \
        --no-cache-dir "llama-cpp-python==$version"
    fi
    echo "$gpu" > "$llama_stamp"
  fi
  echo "$want" > "$stamp"
fi
echo "setup: done ($(.venv/bin/python -c 'import jupyter_byok; print("jupyter_byok", jupyter_byok.__version__)'))"
# Editable installs copy the built front end once; link it instead so that a rebuild
# (scripts/test.sh runs one) is what JupyterLab serves.
target="$(.venv/bin/python -c 'import sys; print(sys.prefix)')/share/jupyter/labextensions/jupyter_byok"
if [ -d jupyter_byok/labextension ] && [ ! -L "$target" ]; then
  cp labextension/install.json jupyter_byok/labextension/install.json
  rm -rf "$target" && ln -s "$PWD/jupyter_byok/labextension" "$target"
fi
