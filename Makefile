# Two commands on a fresh machine: `make demo`, `make test`.
# Everything installs into .venv, with the versions pinned in constraints.txt
# (torch==2.13.0 is a CPU wheel; an unpinned torch would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the stamp names a hash of the install inputs: re-install when their content changes, not their mtime
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)

# The Financial PhraseBank is never committed: use the shared copy beside the clone when there is one
ifneq ($(wildcard ../shared/data/FinancialPhraseBank-v1.0),)
export XDT_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: install data test test-notebooks test-claims test-regression docs docs-check demo bench mutate \
	semantic-mutants sync-check colab wheel-check clean

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,docs,kg]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

data: install
	$(BIN)/xdt data fetch all

# every notebook's cells as tests (small sizes under IN_TEST), then the papermill regression tests.
# Both run two at once, each with half the cores: two runs at torch's default thread count fight over
# the cores and train slower together than one alone (`make bench`, bench_threads.py).
test: data
	$(MAKE) test-notebooks test-claims test-regression

# XDT_THREADS for the code that applies the `threads` setting (xdt, the study notebooks);
# OMP_NUM_THREADS for the notebooks that train without it (03, 05): torch starts with that count
TEST_THREADS ?= $(shell expr $$(nproc) / 2 \| 1)
test-notebooks test-regression: export XDT_THREADS = $(TEST_THREADS)
test-notebooks test-regression: export OMP_NUM_THREADS = $(TEST_THREADS)

# the notebooks run once, as nbdev-test runs them (`nbdev-test` still works by hand); the executed copies,
# with their outputs, are what `make docs` renders (tools/execute_nbs.py)
EXECUTED := _build/executed/.complete
test-notebooks:
	rm -f $(EXECUTED)
	$(BIN)/python tools/execute_nbs.py --n-workers 2
	touch $(EXECUTED)

# copies older than a notebook or the package are run again; after `make test` they are current
$(EXECUTED): $(wildcard nbs/*.ipynb) $(wildcard xdt_nb/*.py)
	$(MAKE) data test-notebooks

# the course site in _site/ (open _site/index.html, from file:// offline): pages from the executed copies
docs: install $(EXECUTED)
	$(BIN)/python tools/build_site.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# every page in headless Chromium (Debian's, installed when missing), then the tests that the check can fail
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
docs-check: docs
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; }
	$(BIN)/python tools/check_site.py
	$(BIN)/pytest -q tests/test_site.py

# claim tests: each fails when the mechanism it guards is switched off (seconds; `make mutate` checks them)
test-claims:
	$(BIN)/pytest -q --durations=5 tests/test_claims.py

# mutmut over train/transfer/evaluate/adversarial against test-claims (~2 h on 2 cores; resumes where it stopped):
# one thread per test process, or torch's threads eat mutmut's CPU-time limit and good mutants read as timeouts
mutate: install
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[mutation]'
	OMP_NUM_THREADS=1 XDT_THREADS=1 XDT_PROGRESS=0 $(BIN)/mutmut run --max-children 2 || true
	$(BIN)/python tests/mutation/report.py --out results/mutation

# one-line breakages of what the course teaches (alpha -> 0, lambda -> 0, ...), each against test-claims: all must fail
semantic-mutants: install
	$(BIN)/python tests/mutation/semantic_mutants.py --out results/mutation

# one test file per worker (the tests of a file share one headless run); the site's tests run in docs-check
test-regression:
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=5 --ignore tests/test_claims.py --ignore tests/test_site.py \
		tests

demo: data
	$(BIN)/xdt run 07_demo
	@cat outputs/07_demo/results.md
	@echo "Report: outputs/07_demo/ (results.md, results.png, metrics.json, confusion matrices, models)"

# `xdt bench`: fit against Trainer and the seed recipe, inference, memory, the matmul peak
# (results/bench/<machine>.json, .md, .png); then the older studies of batching, threads and encoder size
bench: install
	$(BIN)/xdt bench
	$(BIN)/python bench/bench_padding.py
	$(BIN)/python bench/bench_threads.py
	$(BIN)/python bench/bench_encoders.py

# CI: the notebooks are the source; exporting and cleaning them must change nothing
sync-check: install
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	git status --porcelain
	test -z "$$(git status --porcelain)"

# an "Open in Colab" badge and one install cell after every notebook's title, from pyproject's Repository URL;
# run it after adding a notebook or changing the URL (tests/test_packaging.py fails until then)
colab: install
	$(BIN)/python tools/colab_cells.py
	$(BIN)/nbdev-clean

# sdist + wheel (python -m build, twine check), the wheel in a fresh venv, 07_demo run from outside the repo
wheel-check: install
	tools/wheel_check.sh $(BIN)/python

clean:
	rm -rf outputs _docs _proc _build _site _site_check dist build
