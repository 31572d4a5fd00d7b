# Hand-Written LLM (手撕大模型). `make help` lists the targets.
# The two commands of the README:  `make book` (set up, build the website)  and  `make test` (everything CI runs).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
NOTEBOOKS := chapters exercises solutions
SITE   := _build/html

.DEFAULT_GOAL := help
.PHONY: help setup generate check-generated lint unit notebooks build site smoke test book jupyter bench vendor clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.10+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

setup: $(BIN)/.installed ## create .venv with the pinned requirements and the utils package (editable)

generate: setup ## regenerate exercises/ and solutions/ from chapters/
	$(PY) -m utils.notebook

check-generated: setup ## fail when exercises/ or solutions/ are stale
	$(PY) -m utils.notebook --check

lint: setup ## ruff over utils, tests and the chapter notebooks
	$(BIN)/ruff check utils tests chapters

# Two pytest workers on two cores: one torch thread each, or they fight over the cores.
unit: setup ## pytest tests/: the grader, every exercise and mistake, the generator
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -q -n 2

notebooks: setup ## execute every notebook with nbval (15 s budget each)
	OMP_NUM_THREADS=1 $(PY) -m pytest --nbval-lax -q -n 2 --dist loadfile -p utils.nbtiming $(NOTEBOOKS)

build: setup ## build the website into _build/html (executes every chapter; fails on any error or warning)
	rm -rf _build
	$(BIN)/jupyter-book build . --all -W -n --keep-going

smoke: setup ## open the built site in headless Chromium, offline: math, widget, Colab links, console
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || $(MAKE) --no-print-directory chromium
	$(PY) tests/browser/smoke.py $(SITE)

chromium:
	@echo "installing Debian's chromium for the browser smoke test"
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	 else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi

book: generate build ## set everything up and build the website
	@echo
	@echo "The book is built: open $(SITE)/index.html in a browser."
	@echo "To practise, start Jupyter on the exercise notebooks:  make jupyter"

jupyter: setup ## start Jupyter on exercises/
	$(BIN)/jupyter notebook exercises/

test: ## set everything up and run all that CI runs
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory setup lint unit check-generated notebooks build smoke && \
	echo "make test: all checks passed in $$(( $$(date +%s) - start )) s"

bench: setup ## time each exercise's book solution against its PyTorch built-in (not part of CI)
	$(PY) -m utils.bench

vendor: ## refresh _vendor/ (MathJax, require.js, the widget manager) with npm pack; maintainers only
	rm -rf /tmp/hwllm-vendor && mkdir -p /tmp/hwllm-vendor && cd /tmp/hwllm-vendor && \
	npm pack --silent mathjax@3 requirejs@2 @jupyter-widgets/html-manager@1 >/dev/null && \
	for f in *.tgz; do mkdir -p "$${f%.tgz}" && tar xzf "$$f" -C "$${f%.tgz}"; done
	find _vendor -type f ! -name book-setup.js -delete && mkdir -p _vendor/mathjax/output/chtml/fonts _vendor/requirejs _vendor/html-manager
	cp /tmp/hwllm-vendor/mathjax-*/package/es5/tex-mml-chtml.js /tmp/hwllm-vendor/mathjax-*/package/LICENSE _vendor/mathjax/
	cp -r /tmp/hwllm-vendor/mathjax-*/package/es5/output/chtml/fonts/woff-v2 _vendor/mathjax/output/chtml/fonts/
	cp /tmp/hwllm-vendor/requirejs-*/package/require.js _vendor/requirejs/
	cp /tmp/hwllm-vendor/jupyter-widgets-html-manager-*/package/dist/embed-amd.js \
	   /tmp/hwllm-vendor/jupyter-widgets-html-manager-*/package/dist/*.woff* \
	   /tmp/hwllm-vendor/jupyter-widgets-html-manager-*/package/dist/embed.js.LICENSE.txt _vendor/html-manager/

clean: ## remove the build and the virtual environment
	rm -rf _build $(VENV)
