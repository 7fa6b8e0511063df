# The two set-up commands of the README: `make server` (the main job) and `make test`.
PYTHON ?= python3

.PHONY: setup server test bench

setup:
	@command -v redis-server >/dev/null 2>&1 || { apt-get update && apt-get install -y redis-server; }
	$(PYTHON) -m pip install -q -e '.[test]'

server: setup
	aiw server --host 127.0.0.1 --port 8080

test: setup
	$(PYTHON) -m pytest -q tests

bench: setup
	$(PYTHON) -m bench
