# kubevirt-reboot-webhook — developer entry points. `make help` lists them.

BIN        := kubevirt-reboot-webhook
CARGO      ?= cargo
CERTS_DIR  ?= certs
LISTEN     ?= 127.0.0.1:8443
METRICS    ?= 127.0.0.1:8080
# The release of Cargo.toml; the image's tag, the chart's appVersion and the
# manifests' image tag (tests/chart.rs keeps the three equal).
VERSION    := $(shell awk -F'"' '/^version = / { print $$2; exit }' Cargo.toml)
IMAGE      ?= kubevirt-reboot-webhook:$(VERSION)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RELEASE_BIN := $(TARGET_DIR)/release/kubevirt-reboot-webhook
BINARY     ?= $(RELEASE_BIN)
IMAGE_ARCHIVE ?= $(TARGET_DIR)/image/kubevirt-reboot-webhook-$(VERSION).oci.tar
NAMESPACE  ?= kubevirt-reboot-webhook
KUBECTL    ?= kubectl
K8S_VERSION ?=
GO         ?= go
# Helm for the chart tests and make e2e, built from e2e/helm (its go.mod pins
# the release) into a cache outside git, one directory per version. As Helm's
# own release build does, .Capabilities.KubeVersion of `helm template` is the
# Kubernetes minor of the client-go it is built with.
gomod_version = $(shell awk '$$1=="$(1)"{print $$2} $$1=="require" && $$2=="$(1)"{print $$3}' e2e/helm/go.mod)
HELM_VERSION := $(call gomod_version,helm.sh/helm/v3)
HELM_K8S_MINOR := $(word 2,$(subst ., ,$(call gomod_version,k8s.io/client-go)))
HELM_CACHE   ?= $(or $(KRW_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kubevirt-reboot-webhook)/helm-$(HELM_VERSION)
HELM_BIN     := $(HELM_CACHE)/helm
SOAK_SECONDS ?= 600

.PHONY: help run test lint fixtures chart-files certs build release image image-archive-path image-ref manifests deploy undeploy bench bench-scale bench-fleet soak fuzz e2e e2e-build clean helm

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(CERTS_DIR)/tls.crt:
	$(CARGO) run --quiet -- certs --out $(CERTS_DIR)

certs: ## Make a development CA and serving certificate in certs/ (kept if present)
	@$(MAKE) --no-print-directory $(CERTS_DIR)/tls.crt

run: $(CERTS_DIR)/tls.crt ## Serve on 127.0.0.1:8443 with the gate on and examples/ as VM source
	$(CARGO) run --quiet -- serve \
	  --listen $(LISTEN) --metrics-listen $(METRICS) \
	  --tls-cert $(CERTS_DIR)/tls.crt --tls-key $(CERTS_DIR)/tls.key \
	  --feature-gates RecreateVMIOnReboot --objects examples

# Tests that need kubectl, Helm or promtool skip (outside CI) when it is
# missing; each skip adds "TEST<tab>WHY" to $KRW_TEST_SKIPS (tests/support/
# tools.rs), and the last line of make test says what was skipped and why.
test: ## Run every test (unit, integration, manifests, chart, alerts, the bench crate's payloads); ends naming what was skipped
	@if command -v $(GO) >/dev/null 2>&1; then $(MAKE) --no-print-directory -s helm >/dev/null; \
	  else echo "note: no Go, so no Helm: the chart tests skip (and fail with CI=true)" >&2; fi
	@skips=$$(mktemp) && trap 'rm -f "$$skips"' EXIT && \
	echo "$(CARGO) test --locked --workspace" && \
	{ KRW_TEST_SKIPS="$$skips" $(CARGO) test --locked --workspace; status=$$?; } ; \
	if [ -s "$$skips" ]; then \
	  sort -u "$$skips" | awk -F'\t' '{ t[$$2] = t[$$2] " " $$1 } END { for (w in t) print "skipped, " w ":" t[w] }'; \
	  echo "make test: $$(cut -f1 "$$skips" | sort -u | wc -l) tests skipped their checks (in whole or part): $$(cut -f2 "$$skips" | sed 's/ (.*//' | sort -u | paste -sd, - | sed 's/,/, /g'); CI=true fails them instead"; \
	else echo "make test: no test skipped"; fi; \
	exit $$status

lint: ## clippy and rustfmt, as CI wants them
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

fixtures: ## Rewrite the golden answers (tests/fixtures/*/*.expected.json) from the server's, then compare; review with git diff
	@echo "rewriting expected answers (this run fails with \"fixtures rewritten\" when any changed)" >&2
	-UPDATE_FIXTURES=1 $(CARGO) test --locked --test server fixtures_
	$(CARGO) test --locked --test server
	@git status --short -- tests/fixtures

chart-files: ## Regenerate the chart's files/ from manifests/ (matchConditions, alerts, dashboard), then compare
	-UPDATE_CHART_FILES=1 $(CARGO) test --locked --test chart chart_files_are_generated_from_manifests
	$(CARGO) test --locked --test chart chart_files_are_generated_from_manifests
	@git status --short -- charts/kubevirt-reboot-webhook/files

build: ## Debug build
	$(CARGO) build --locked

release: ## Optimised build
	$(CARGO) build --locked --release --bin $(BIN)

image: $(if $(filter $(RELEASE_BIN),$(BINARY)),release) ## The runtime image, offline, as an OCI archive in target/image/ (needs umoci, Debian)
	bash image/build.sh $(BINARY) $(IMAGE_ARCHIVE) $(IMAGE)

image-archive-path:
	@echo $(abspath $(IMAGE_ARCHIVE))

image-ref:
	@echo $(IMAGE)

manifests: ## Render manifests/ (needs kubectl)
	$(KUBECTL) kustomize manifests

deploy: $(CERTS_DIR)/tls.crt ## Development install: TLS secret from certs/, caBundle filled in
	$(CARGO) run --quiet -- certs --out $(CERTS_DIR) \
	  --host $(BIN).$(NAMESPACE).svc --host $(BIN).$(NAMESPACE).svc.cluster.local --host localhost
	$(KUBECTL) apply -f manifests/base/namespace.yaml
	$(KUBECTL) -n $(NAMESPACE) create secret tls $(BIN)-tls \
	  --cert=$(CERTS_DIR)/tls.crt --key=$(CERTS_DIR)/tls.key --dry-run=client -o yaml | $(KUBECTL) apply -f -
	$(KUBECTL) kustomize manifests | \
	  sed "s|caBundle: \"\"|caBundle: $$(base64 -w0 < $(CERTS_DIR)/ca.crt)|" | $(KUBECTL) apply -f -
	$(KUBECTL) -n $(NAMESPACE) rollout status deployment/$(BIN) --timeout=120s

undeploy: ## Remove the webhook configurations first, then everything else
	-$(KUBECTL) delete mutatingwebhookconfiguration,validatingwebhookconfiguration -l app.kubernetes.io/name=$(BIN)
	-$(KUBECTL) kustomize manifests | $(KUBECTL) delete --ignore-not-found -f -

helm: ## Build Helm at the version pinned in e2e/helm/go.mod into the cache (kept if present); prints its path
	@if [ ! -x "$(HELM_BIN)" ]; then \
	  echo "building helm $(HELM_VERSION) into $(HELM_CACHE)" >&2; \
	  mkdir -p "$(HELM_CACHE)" && cd e2e/helm && \
	  $(GO) build -mod=readonly -trimpath \
	    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_K8S_MINOR) \
	      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_K8S_MINOR)" \
	    -o "$(HELM_BIN).tmp" helm.sh/helm/v3/cmd/helm >&2 && \
	  mv "$(HELM_BIN).tmp" "$(HELM_BIN)"; \
	fi
	@echo "$(HELM_BIN)"

bench: ## Load benchmark over loopback TLS against the floor server, plus decision micro-benchmarks
	$(MAKE) --no-print-directory -C bench run

bench-scale: ## VM cache at 10,000 and 100,000 VMs against the fake API server
	$(CARGO) test --locked --release --test scale -- --ignored --nocapture --test-threads 1

bench-fleet: ## FLEET_VMS (100,000) VMs in the real kube-apiserver: list modes, relist and churn cost, ours against kube-runtime and controller-runtime (root; bench/README.md "Fleet")
	K8S_VERSION=$(K8S_VERSION) bash bench/fleet/run.sh

soak: ## Long mixed-load run against the fake API (SOAK_SECONDS, default 600); fails on errors or growth
	SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test --locked --release --test soak -- --ignored --nocapture --test-threads 1

fuzz: ## Fuzz request decoding and the decisions for a bounded time (FUZZ_SECONDS, default 60)
	$(MAKE) --no-print-directory -C fuzz run

e2e: ## Real kube-apiserver + etcd + kubectl: install from manifests/, run the scenarios (root; K8S_VERSION=...)
	K8S_VERSION=$(K8S_VERSION) bash e2e/run.sh

e2e-build: ## Build (or reuse) the control plane of make e2e and print where it is
	@K8S_VERSION=$(K8S_VERSION) bash -c 'source e2e/build.sh && printf "%s\n" "$$KUBE_APISERVER" "$$ETCD" "$$KUBECTL" "$$E2EHELPER"'

clean: ## Remove build output and generated certificates
	$(CARGO) clean
	rm -f $(CERTS_DIR)/*.crt $(CERTS_DIR)/*.key
