# Two commands for a newcomer: `make book` and `make test`. Both create .venv and install everything first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
JB     := $(VENV)/bin/jupyter-book
STAMP  := $(VENV)/.installed

# Only the package registries are reachable: keep pip quiet about its own version.
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install book test test-lib test-nbval test-build bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## The whole book, every chapter executed, into _build/html (open _build/html/index.html).
book: install
	$(JB) build .

## Every check: library tests, nbval over every chapter in _toc.yml, strict book build.
test: install
	$(MAKE) test-lib
	$(MAKE) test-nbval
	$(MAKE) test-build

test-lib: install
	$(PY) -m pytest tests

test-nbval: install
	$(PY) tests/nbval_chapters.py

# execute_notebooks is "force" in _config.yml: every chapter runs fresh, never from a cache.
test-build: install
	$(JB) build . -W -n --keep-going

bench: install
	$(PY) benchmarks/kernels.py

clean:
	rm -rf _build
