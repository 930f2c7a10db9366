# Release artefacts: the two images, the generated install manifests, and the checks on them.
# The version is pyproject.toml's; the chart's appVersion and spec.ray.image's default tag match it.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?= ghcr.io/red-dev
DOCKER ?= docker
# The helm that tests/cluster/ctl builds, else the one on PATH.
HELM ?= $(firstword $(wildcard tests/cluster/.bin/helm) helm)

.PHONY: images operator-image runtime-image render lint

images: operator-image runtime-image

operator-image:
	$(DOCKER) build -f images/operator.Dockerfile -t $(REGISTRY)/red-operator:$(VERSION) .

runtime-image:
	$(DOCKER) build -f images/runtime.Dockerfile -t $(REGISTRY)/red-runtime:$(VERSION) .

# The chart's copy of the CRD and manifests/install.yaml, regenerated from crds/ and the chart.
render:
	HELM=$(HELM) scripts/render-install

lint:
	$(HELM) lint --strict helm/red-operator
	ruff check .
	ruff format --check .
	HELM=$(HELM) scripts/render-install --check
