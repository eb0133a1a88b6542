# Two commands for a newcomer: `make book` and `make test`. Both create .venv and install everything first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
JB     := $(VENV)/bin/jupyter-book
STAMP  := $(VENV)/.installed
# Wheels of ntkcore's published dependencies (and ipykernel), pinned by requirements.txt: the test that runs a
# downloaded chapter notebook in a fresh environment installs from here, offline (tests/built_book/test_notebooks.py).
WHEELHOUSE := $(VENV)/wheelhouse

# Only the package registries are reachable: keep pip quiet about its own version.
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install book book-student assignments grade test test-lib test-nbval test-build test-built bench clean

# Chromium, for the browser test of the built book (tests/built_book/): Debian's package, installed as root where
# missing; elsewhere install Chromium yourself and run `make test CHROMIUM=/path/to/chromium`.
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM

install: $(STAMP)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "no $(CHROMIUM) and no apt-get: install Chromium, then make test CHROMIUM=/path/to/chromium"; exit 2; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip download --quiet --no-build-isolation -c requirements.txt -d $(WHEELHOUSE) ".[graphs]" ipykernel
	touch $(STAMP)

## The whole book, every chapter executed, into _build/html (open _build/html/index.html).
book: install
	$(JB) build .

## The student edition of the book (solutions left out) into _build/student/_build/html.
book-student: install
	$(PY) -m assignments.student_book

## Every chapter's student notebook, instructor notebook and autograder into _build/assignments/
## (HIDDEN=dir adds private hidden tests, dir/<exercise-label>.py; see the appendix "Guide for instructors").
assignments: install
	$(PY) -m assignments.build $(if $(HIDDEN),--hidden $(HIDDEN))

## Grade a folder of submitted notebooks: make grade SUBMISSIONS=dir [TIMEOUT=300] [JOBS=2] (writes dir-grades/).
grade: install
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=folder-of-notebooks [TIMEOUT=seconds] [JOBS=n]"; exit 2; }
	test -d _build/assignments || $(MAKE) assignments
	$(PY) -m assignments.grade $(SUBMISSIONS) --timeout $(or $(TIMEOUT),300) --jobs $(or $(JOBS),2)

## Every check: library tests, nbval over every chapter in _toc.yml, strict book build, tests of the built book.
## Each chapter executes once: the strict build renders the executions that nbval has just made.
test: install
	$(MAKE) test-lib
	$(MAKE) test-nbval NBVAL_EXECUTIONS=$(NBVAL_DIR)
	$(MAKE) test-build NBVAL_EXECUTIONS=$(NBVAL_DIR)
	$(MAKE) test-built

test-lib: install
	$(PY) -m pytest tests --ignore=tests/built_book

# Where `make test` passes nbval's executions to the strict build: written fresh by test-nbval (the folder emptied
# first), read and removed by test-build (bookext/cached_build.py), so never left for a later build.
NBVAL_DIR := _build/nbval_executions

# With NBVAL_EXECUTIONS=dir, each chapter whose cells all pass is also saved there as nbval executed it.
test-nbval: install
	$(PY) tests/nbval_chapters.py $(if $(NBVAL_EXECUTIONS),--save-executions $(NBVAL_EXECUTIONS))

# Alone, execute_notebooks is "force" in _config.yml: every chapter runs fresh, never from a cache. With
# NBVAL_EXECUTIONS=dir (make test): the same strict build, execute_notebooks "cache" from nbval's executions in
# dir; it fails, naming the chapter, if it executed one.
test-build: install
	$(if $(NBVAL_EXECUTIONS),$(PY) -m bookext.cached_build $(NBVAL_EXECUTIONS),$(JB) build . -W -n --keep-going)

# On the strict build's output, _build/html: pages, notebooks, and every page in headless chromium at desktop and
# phone sizes (screenshots in _build/screenshots/).
test-built: install $(CHROMIUM)
	$(PY) -m pytest tests/built_book

bench: install
	$(PY) benchmarks/kernels.py

clean:
	rm -rf _build
