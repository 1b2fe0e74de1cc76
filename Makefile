# Two commands from a fresh clone: `make demo` and `make test`. Both set up what they need
# (virtualenv, the project, WordNet) and are quiet when everything is already in place.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.weakly-installed
WN_STAMP := $(VENV)/.weakly-wordnet

.PHONY: test demo setup wordnet lint clean cli-reference

setup: $(STAMP) $(WN_STAMP)

$(PY):
	@$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@echo "installing weakly and its test dependencies into $(VENV) ..."
	@set -o pipefail; $(PY) -m pip install -q --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || true; }
	@set -o pipefail; $(PY) -m pip install -q -e '.[all,test]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	@touch $@

# WordNet 3.0: found by wordnet_tools (explicit folder, NLTK data, or Debian packages);
# when absent, install Debian's packages if we are root, else say the one command to run.
$(WN_STAMP): $(STAMP)
	@$(PY) -m wordnet_tools locate >/dev/null 2>&1 || $(MAKE) --no-print-directory wordnet-debian
	@$(PY) -m wordnet_tools locate >/dev/null
	@touch $@

wordnet-debian:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing WordNet 3.0 from Debian packages (wordnet-base, wordnet-sense-index) ..."; \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index >/dev/null; \
	else \
		echo "WordNet 3.0 is missing. Run: sudo apt-get install wordnet-base wordnet-sense-index"; \
		echo "(or set WEAKLY_WORDNET=/path/to/wordnet, or python -c \"import nltk; nltk.download('wordnet')\")"; \
		exit 1; \
	fi

lint: setup
	@$(VENV)/bin/ruff check -q weakly weakly_base pipeline train wordnet_tools tests benchmarks
	@$(VENV)/bin/ruff format -q --check weakly weakly_base pipeline train wordnet_tools tests benchmarks
	@$(VENV)/bin/hadolint docker/Dockerfile docker/Dockerfile.cuda

test: setup lint
	@$(VENV)/bin/pytest -q

demo: setup
	@$(VENV)/bin/weakly demo

# docs/CLI.md is generated from the parser; tests/test_docs.py fails when it is stale.
cli-reference: setup
	@$(PY) -m weakly.cli_reference

clean:
	rm -rf $(VENV) .cache demo-out .pytest_cache .ruff_cache
