# SplitLab: `make run` starts the dashboard, `make test` runs every test. Both install what is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501
# pytest-xdist workers, whole files to each; torch gets one thread per worker (two workers of two
# threads on two cores run slower than one).
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: install run test test-fast bench worker clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

install: $(STAMP)

# `python app.py` starts the worker with the server (not at the first page visit), then serves app.py with Streamlit
run: install
	$(PY) app.py --server.port $(PORT) --server.headless true

test: install
	$(PYTEST)

# the inner loop: leaves out the browser, load, networked, worker-process and learning tests (tests/conftest.py)
test-fast: install
	$(PYTEST) -m "not slow"

bench: install
	$(PY) -m engine bench

clean:
	rm -rf $(VENV) .pytest_cache
