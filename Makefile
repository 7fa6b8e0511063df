# The two set-up commands of the README: `make demo` (the main job: the whole AIW-I loop)
# and `make test`. Each installs what it needs on a fresh Debian machine (apt-get as root).
PYTHON ?= python3
APT_DEMO = redis-server dicom3tools
APT_TEST = $(APT_DEMO) orthanc orthanc-dicomweb chromium

.PHONY: setup setup-test demo server test bench

# apt-get only when a package is missing, so a set-up machine re-runs in seconds
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
endef

setup:
	$(call apt_install,$(APT_DEMO))
	$(PYTHON) -m pip install -q -e '.[test]'

setup-test:
	$(call apt_install,$(APT_TEST))
	$(PYTHON) -m pip install -q -e '.[test]'

demo: setup
	aiw demo

server: setup
	aiw server --host 127.0.0.1 --port 8080

test: setup-test
	$(PYTHON) -m pytest -q tests

bench: setup-test
	$(PYTHON) -m bench
