# digits: `make run` trains and pushes a model, `make test` runs every test. Both set up first:
# a Python 3.10 virtual environment in .venv with the exact versions of requirements.lock; `make test`
# also sets up .venv-tools, the k8s validators (requirements-tools.lock), kept apart from TFX's pins.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TOOLS_VENV  ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
# Extra options, e.g. `make run ARGS="--epochs 1 --train-examples 5000"`, `make serve ARGS="--rest_api_port=9001"`
# or `make test PYTEST_ARGS="-k idx"`.
ARGS        ?=
PYTEST_ARGS ?=
# The browser the page's tests (tests/web) drive: Debian's chromium, installed by `make test` when missing.
CHROMIUM ?= $(or $(DIGITS_CHROMIUM),/usr/bin/chromium)
export DIGITS_CHROMIUM := $(CHROMIUM)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 1

.PHONY: help setup run serve demo test k8s-validate kfp schedule schedule-local bench bench-serving lock clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv with Python 3.10 and install the locked dependencies

# $(call locked_venv,DIR,LOCK): DIR as a Python 3.10 venv (re-created when missing or another Python)
# holding exactly the versions of LOCK.
define locked_venv
	@if [ ! -x "$(1)/bin/python" ] || ! "$(1)/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then \
	  python310=$$(scripts/find-python310) || exit 1; \
	  echo "Creating $(1) with $$python310"; rm -rf "$(1)"; "$$python310" -m venv "$(1)"; \
	fi
	$(1)/bin/python -m pip install --quiet --disable-pip-version-check -r $(2)
endef

$(STAMP): requirements.lock setup.py
	$(call locked_venv,$(VENV),requirements.lock)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The validators of k8s/ (checkov, kubernetes-validate, yamllint, hadolint) in a venv of their own.
$(TOOLS_STAMP): requirements-tools.lock
	$(call locked_venv,$(TOOLS_VENV),requirements-tools.lock)
	@touch $(TOOLS_STAMP)

run: $(STAMP)  ## run the pipeline on the embedded defaults and push the model to artifacts/serving
	$(VENV)/bin/digits run $(ARGS)

serve: $(STAMP)  ## serve what `make run` pushed: TF Serving's gRPC on :8500, REST on :8501 (flags: ARGS="--port=9000")
	$(VENV)/bin/digits serve $(ARGS)

demo: $(STAMP)  ## the model server on what `make run` pushed and the draw-a-digit page on :8080; Ctrl-C stops both
	$(VENV)/bin/digits demo $(ARGS)

# $(call apt_install,PACKAGE,WHAT IT IS FOR,TARGET): a shell command that installs a Debian package with
# apt-get when running as root (refreshing the package lists if the first try fails), else says how.
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing $(1) ($(2)) with apt-get"; \
	  { apt-get install -y -qq $(1) >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $(1) >/dev/null; }; } \
	    || { echo "could not install $(1) with apt-get: install it and run make $(3) again" >&2; exit 1; }; \
	else \
	  echo "make $(3) needs $(1) ($(2)): run 'sudo apt-get install -y $(1)' (Debian/Ubuntu)" >&2; exit 1; \
	fi

# Playwright's own browser download needs the internet; the tests use the distribution's chromium instead.
$(CHROMIUM):
	@$(call apt_install,chromium,the browser of tests/web; DIGITS_CHROMIUM=/path/to/chromium uses another,test)
	@test -x "$(CHROMIUM)" || { echo "chromium was installed but $(CHROMIUM) is missing: set DIGITS_CHROMIUM" >&2; exit 1; }

test: $(STAMP) $(TOOLS_STAMP) $(CHROMIUM)  ## run the whole test suite (tests/web drives chromium, installed when missing)
	DIGITS_TOOLS_BIN=$(abspath $(TOOLS_VENV)/bin) $(PY) -m pytest tests $(PYTEST_ARGS)

k8s-validate: $(STAMP) $(TOOLS_STAMP)  ## check k8s/ and the KFP spec (tests/k8s): kustomize builds, kubernetes-validate, checkov, yamllint, hadolint
	DIGITS_TOOLS_BIN=$(abspath $(TOOLS_VENV)/bin) $(PY) -m pytest tests/k8s $(PYTEST_ARGS)

kfp: $(STAMP)  ## compile the Kubeflow Pipelines v2 job spec into build/kfp (config flags in ARGS)
	$(VENV)/bin/digits kfp --output-dir build/kfp $(ARGS)

schedule: $(STAMP)  ## create the recurring KFP run from build/kfp (config flags in ARGS)
	$(VENV)/bin/digits schedule $(ARGS)

schedule-local: $(STAMP)  ## scheduled runs on this machine: digits run at --schedule (03:00 UTC) and/or --run-on-open-span; Ctrl-C stops
	$(VENV)/bin/digits schedule --local $(ARGS)

bench: $(STAMP)  ## the pipeline benchmark on all 70,000 images: seed script vs pipeline, 3 seeds, CNN vs MLP, Tuner (ARGS=--help)
	$(PY) bench/pipeline_bench.py $(ARGS)

bench-serving: $(STAMP)  ## the serving benchmark: REST and gRPC load vs in-process calls and a naive FastAPI server
	@command -v wrk >/dev/null || $(call apt_install,wrk,the HTTP load generator,bench-serving)
	@command -v h2load >/dev/null || $(call apt_install,nghttp2-client,h2load: the gRPC load generator,bench-serving)
	$(PY) bench/serving_bench.py $(ARGS)

lock:  ## re-resolve requirements.in and requirements-tools.in into their .lock files (needs uv: pip install uv)
	uv pip compile requirements.in --python-version 3.10 --python-platform x86_64-manylinux_2_28 \
	  --no-header --annotation-style line -o requirements.lock
	uv pip compile requirements-tools.in --python-version 3.10 --python-platform x86_64-manylinux_2_28 \
	  --no-header --annotation-style line -o requirements-tools.lock

clean:  ## remove the pipeline's outputs; keeps .venv and the served models (artifacts/serving)
	rm -rf artifacts/pipeline artifacts/bench build tests/artifacts
	@if [ -d artifacts/serving ]; then echo "kept artifacts/serving (the served models): delete it by hand if you mean to"; fi
