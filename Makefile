# The quickstart is two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := setup.py $(shell find brigade_crgw twisted -name '*.py' -o -name '*.json' 2>/dev/null)

.PHONY: venv run test test-fast lint bench soak rollout rotation bench-cel plane-up plane-down image helm chart docs clean

venv: $(VENV)/.installed

# A regular (non-editable) install: twistd finds plugins only in
# twisted/plugins directories on sys.path, which an editable install hides.
# Tests, `make run` and the bench still run this working tree, with the
# development tools (devtools/, never installed) beside it: PYTHONPATH.
$(VENV)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '.[test]'
	touch $@

# The gateway on 127.0.0.1:7744 in the foreground, with a demo project;
# starts the local control plane when no cluster is configured.
run: venv
	PYTHONPATH=$(CURDIR) $(BIN)/python scripts/demo.py

# Everything: unit, in-memory HTTP, the real daemon against a real API
# server (the local control plane, built and started when needed), the unit
# under systemd, the image under podman, the chart under helm.  What those
# need is installed or built first (scripts/provision; cached after the
# first time, and the Debian packages need root).
test: venv
	scripts/provision
	$(BIN)/python -m pytest

# The tests that need no API server.
test-fast: venv
	$(BIN)/python -m pytest -m 'not integration'

lint: venv
	$(BIN)/ruff check brigade_crgw devtools tests scripts bench docs
	$(BIN)/ruff format --check brigade_crgw devtools docs
	$(BIN)/mypy brigade_crgw devtools bench

# The gateway beside the API server, under wrk (see docs/performance.rst and docs/benchmark.md);
# make bench BENCH_ARGS="--quick" for one row, --help for the filters.
bench: venv $(VENV)/.bench-installed
	PYTHONPATH=$(CURDIR) $(BIN)/python -m bench.run $(BENCH_ARGS)

# The two CEL libraries for crGatewayFilter, side by side (docs/filters.rst):
# each in its own venv under build/, apart from the gateway's.
bench-cel:
	test -x build/cel-bench/bin/python || $(PYTHON) -m venv build/cel-bench
	build/cel-bench/bin/pip install --quiet cel-python==0.5.0 common-expression-language==0.10.0
	build/cel-bench/bin/python -m bench.cel --worst $(BENCH_ARGS)

# The fleet soak (bench/soak.py): replicas behind the real HAProxy with
# etc/haproxy.cfg while a replica is SIGKILLed, every replica restarted and
# the API server away; the answers by code, lost, duplicated and refused.
# make soak SOAK_ARGS="--minutes 10"; --help for the rest.
soak: venv
	PYTHONPATH=$(CURDIR) $(BIN)/python -m bench.soak $(SOAK_ARGS)

# On the plane's node (scripts/control-plane up --node): single-attempt
# pushes through the chart's Service during a rollout restart and a pod
# deletion (make rollout ROLLOUT_ARGS="--shutdown-delay 0"), and the gateway
# past the expiry of its pod's first projected token (about 12 minutes).
rollout: venv
	PYTHONPATH=$(CURDIR) $(BIN)/python -m bench.rollout $(ROLLOUT_ARGS)

rotation: venv
	PYTHONPATH=$(CURDIR) $(BIN)/python -m bench.rotation $(ROTATION_ARGS)

$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet '.[test,bench]'
	touch $@

# The OCI image, without pulling anything (root; mmdebstrap and buildah).
image: venv
	$(BIN)/python -m devtools.image

# helm, built from its Go module once and cached.
helm: venv
	$(BIN)/python -m devtools.helm

# The Helm chart, linted and packaged into build/ (brigade-crgw-<version>.tgz).
chart: helm
	$$($(BIN)/python -m devtools.helm) lint --strict charts/brigade-crgw
	$$($(BIN)/python -m devtools.helm) package charts/brigade-crgw --destination build

plane-up: venv
	scripts/control-plane up

plane-down:
	scripts/control-plane down

clean:
	-scripts/control-plane down
	rm -rf $(VENV) build *.egg-info

# The documentation site, from docs/ into build/docs (index.html); any
# Sphinx warning fails it.  Sphinx is in the test extra (tests/test_docs.py
# builds the site too).  The architecture diagram is drawn first.
docs: venv docs/architecture.png
	PYTHONPATH=$(CURDIR) $(BIN)/sphinx-build -W --keep-going -n -q -b html docs build/docs

# The architecture diagram, from docs/architecture.dot (graphviz's dot).

docs/architecture.png: docs/architecture.dot
	dot -Tpng -Gdpi=100 $< -o $@
