# Hand-Written LLM (手撕大模型). `make help` lists the targets.
# The two commands of the README:  `make book` (set up, build the website)  and  `make test` (everything CI runs).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
NOTEBOOKS := chapters exercises solutions zh
CHAPTERS  := chapters zh/chapters
SITE   := _build/html
STAGE  := _build/.staged
CITIME := $(PYTHON) -I utils/citime.py
EXECUTE := $(PY) -I utils/execute.py

.DEFAULT_GOAL := help
.PHONY: help setup generate check-generated lint unit notebooks stage site build smoke test book jupyter bench vendor clean chromium

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.10+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile --no-deps -e .
	@# byte-compile what pip installed (pip does it on one core; this uses them all); like pip, ignore
	@# the odd file that does not compile (test data written for other Python versions)
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
	@touch $@

setup: $(BIN)/.installed ## create .venv with the pinned requirements and the utils package (editable)

generate: setup ## regenerate both languages' chapters/, exercises/, solutions/ (and zh/...) from source/
	$(PY) -m utils.notebook

check-generated: setup ## fail when a generated file is stale, or a translation is missing or older than its English
	$(PY) -m utils.notebook --check

translations: setup ## list each chapter's missing and stale Chinese cells
	$(PY) -m utils.bilingual

lint: setup ## ruff over utils, tests and the chapters' sources
	$(BIN)/ruff check utils tests source

# Two pytest workers on two cores: one torch thread each, or they fight over the cores.
unit: setup ## pytest tests/: the grader, every exercise and mistake, the generator
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -q -n 2 --durations=5

# Each notebook is executed once per run: utils.execute runs every notebook (two kernels at a time,
# 15 s budget each, a raising cell fails) and writes the executed chapters into $(STAGE), a copy of the
# book's source with execution turned off, from which `site` builds the website without executing again.
notebooks: setup ## execute every notebook of both languages once (15 s each); stage the chapters
	$(EXECUTE) $(NOTEBOOKS)

stage: setup ## execute the chapters only (both languages), into the staging copy the websites are built from
	$(EXECUTE) $(CHAPTERS)

# Two books from one stage: English into _build/html, Chinese into _build/html/zh (same page paths).
site: setup ## build _build/html and _build/html/zh from the staged chapters (no execution; fails on any warning)
	$(EXECUTE) --verify
	rm -rf $(SITE) _build/.doctrees _build/jupyter_execute _build/zh
	$(BIN)/jupyter-book build $(STAGE) --path-output . --all -W -n --keep-going
	$(BIN)/jupyter-book build $(STAGE)/zh --path-output _build/zh --all -W -n --keep-going
	mv _build/zh/_build/html $(SITE)/zh

build: setup ## execute the chapters once and build both websites into _build/html
	$(EXECUTE) $(CHAPTERS)
	@$(MAKE) --no-print-directory site

smoke: setup ## open the built site in headless Chromium, offline: math, widgets, links, console, phone width
	@(command -v chromium >/dev/null || command -v chromium-browser >/dev/null) && fc-list :lang=zh | grep -q . \
	  || $(MAKE) --no-print-directory chromium
	$(PY) tests/browser/smoke.py $(SITE)

chromium:
	@echo "installing Debian's chromium and CJK fonts (fonts-noto-cjk: screenshots show Chinese) for the browser test"
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; \
	 else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; fi

book: generate build ## set everything up and build the website
	@echo
	@echo "The book is built: open $(SITE)/index.html in a browser."
	@echo "To practise, start Jupyter on the exercise notebooks:  make jupyter"

# The book's root, so that chapters/, exercises/ and solutions/ are all reachable; --allow-root where make runs
# as root (a container), which Jupyter otherwise refuses.
jupyter: setup ## start JupyterLab at the book's root (exercises/, zh/exercises/, chapters/, ...)
	$(BIN)/jupyter lab --notebook-dir=. $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# CI: set-up, lint, every notebook once; then the unit tests side by side with the generated-notebook
# check and the website build from the executed chapters; then the browser test (the notebooks run alone,
# so that their 15 s budgets are measured on an otherwise idle machine; the browser test no longer runs
# beside the unit tests, whose multi-process checks timed out under that load). Ends with the timing table.
MK := $(MAKE) --no-print-directory
test: ## set everything up, run all that CI runs, print the timing table and the projection
	@$(CITIME) start; rc=0; \
	$(CITIME) run set-up $(MK) setup && \
	$(CITIME) run lint $(MK) lint && \
	$(CITIME) run notebooks $(MK) notebooks || rc=1; \
	if [ $$rc = 0 ]; then \
	  echo "unit tests: running alongside the build, output follows when they end"; \
	  $(CITIME) run unit $(MK) unit > _build/ci/unit.log 2>&1 & unit=$$!; \
	  $(CITIME) run generated-check $(MK) check-generated && \
	  $(CITIME) run build $(MK) site || rc=1; \
	  wait $$unit || rc=1; \
	  echo; echo "---- unit tests (ran alongside) ----"; cat _build/ci/unit.log; \
	  [ $$rc = 0 ] && $(CITIME) run browser $(MK) smoke || rc=1; \
	fi; \
	$(CITIME) report; \
	if [ $$rc = 0 ]; then echo "make test: all checks passed"; else echo "make test: FAILED (see above)"; fi; \
	exit $$rc

bench: setup ## time each exercise's book solution against its PyTorch built-in (not part of CI)
	$(PY) -m utils.bench

vendor: ## refresh _vendor/ (MathJax, require.js, the widget manager) with npm pack; maintainers only
	rm -rf /tmp/hwllm-vendor && mkdir -p /tmp/hwllm-vendor && cd /tmp/hwllm-vendor && \
	npm pack --silent mathjax@3 requirejs@2 @jupyter-widgets/html-manager@1 >/dev/null && \
	for f in *.tgz; do mkdir -p "$${f%.tgz}" && tar xzf "$$f" -C "$${f%.tgz}"; done
	find _vendor -type f ! -name book-setup.js ! -name book.css ! -name favicon.png -delete && mkdir -p _vendor/mathjax/output/chtml/fonts _vendor/requirejs _vendor/html-manager
	cp /tmp/hwllm-vendor/mathjax-*/package/es5/tex-mml-chtml.js /tmp/hwllm-vendor/mathjax-*/package/LICENSE _vendor/mathjax/
	cp -r /tmp/hwllm-vendor/mathjax-*/package/es5/output/chtml/fonts/woff-v2 _vendor/mathjax/output/chtml/fonts/
	cp /tmp/hwllm-vendor/requirejs-*/package/require.js _vendor/requirejs/
	cp /tmp/hwllm-vendor/jupyter-widgets-html-manager-*/package/dist/embed-amd.js \
	   /tmp/hwllm-vendor/jupyter-widgets-html-manager-*/package/dist/*.woff* \
	   /tmp/hwllm-vendor/jupyter-widgets-html-manager-*/package/dist/embed.js.LICENSE.txt _vendor/html-manager/

clean: ## remove the build (with the staged chapters and CI timings) and the virtual environment
	rm -rf _build $(VENV)
