# Two commands for a newcomer: `make book` and `make test`. Both create .venv and install everything first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
JB     := $(VENV)/bin/jupyter-book
STAMP  := $(VENV)/.installed

# Only the package registries are reachable: keep pip quiet about its own version.
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install book book-student assignments grade test test-lib test-nbval test-build bench clean

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
