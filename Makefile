# Two commands do everything on a fresh machine (see README.md):
#   make reproduce   set up, build the embedded dataset, run every notebook (profile cpu)
#   make test        set up, run pytest + nbval regression on the smoke profile
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
FASHION_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: reproduce test env fashion browser data references clean-cache

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test,crf,lab]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (scribbleseg)" >/dev/null
	touch $@

fashion:
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ] || [ -n "$$SCRIBBLESEG_FASHION_DIR" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu) or set SCRIBBLESEG_FASHION_DIR"; exit 1; fi

# tests/test_browser.py drives Debian's chromium (no browser download); without it that test is skipped.
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium missing: tests/test_browser.py will be skipped (run 'sudo apt-get install chromium' for it)"; fi

data: env fashion
	$(PY) -m scribbleseg.data --profile $(PROFILE)

reproduce: env fashion
	$(PY) -m scribbleseg.lab.run --profile $(PROFILE)

# nbval re-executes the smoke notebooks with a fresh results cache and dataset, so that a changed
# loss, metric or generator shows up (the cache key does not hash the code).
test: env fashion browser
	rm -rf build/test
	SCRIBBLESEG_BATCH=1 SCRIBBLESEG_CACHE=$(CURDIR)/build/test/cache SCRIBBLESEG_DATA=$(CURDIR)/build/test/data \
	  $(PY) -m pytest tests --nbval --nbval-current-env -q

references: env fashion
	rm -rf build/test
	SCRIBBLESEG_BATCH=1 SCRIBBLESEG_CACHE=$(CURDIR)/build/test/cache SCRIBBLESEG_DATA=$(CURDIR)/build/test/data \
	  $(PY) -m scribbleseg.lab.run --profile smoke --refresh-references --force

clean-cache:
	rm -rf results/cache build
