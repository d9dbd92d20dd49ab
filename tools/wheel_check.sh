#!/usr/bin/env bash
# The package as a user gets it: build sdist and wheel, check their metadata, install the WHEEL (not the
# checkout) into a fresh venv, and run 07_demo headlessly at small sizes from a folder outside the repository.
# A module, data file or setting that only the checkout has fails here. Usage: tools/wheel_check.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python=${1:-.venv/bin/python}
start=$(date +%s)
rm -rf dist
$python -m build --outdir dist . >/dev/null
$python -m twine check --strict dist/*
# outside the repository: no settings.ini above it, no git checkout around the installed package
# one fixed folder, emptied at the start, not deleted at the end: removing its 1 GB venv took 3-4 minutes here
tmp=${TMPDIR:-/tmp}/xdt-wheel-check
rm -rf "$tmp" && mkdir -p "$tmp"
python3 -m venv "$tmp/venv"
pip_install="$tmp/venv/bin/pip install -q --disable-pip-version-check -c $repo/constraints.txt"
# torch first, pinned to the local CPU wheel, as `make install` does (an unpinned torch pulls a CUDA build)
$pip_install torch==2.13.0
$pip_install "$(ls dist/xdt_nb-*.whl)"
$tmp/venv/bin/python -m ipykernel install --sys-prefix --name xdt-wheel-check >/dev/null
cd "$tmp"
# PYTHONPATH unset: the notebook must import the installed package, never the checkout
env -u PYTHONPATH venv/bin/python -c "import xdt_nb as x; assert '/site-packages/' in x.__file__, x.__file__"
env -u PYTHONPATH XDT_PROGRESS=0 venv/bin/papermill "$repo/nbs/07_demo.ipynb" 07_demo.ipynb \
    -k xdt-wheel-check --cwd "$tmp" --execution-timeout 1800 -p out_dir "$tmp/07_demo" \
    -p n_target_labels 16 -p max_source 48 -p max_test 48 -p max_dev 48 -p epochs 1 -p min_steps 0
test -s 07_demo/results.md
cat 07_demo/results.md
echo "wheel-check: $(( $(date +%s) - start )) s"
