# Listing Guard. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
export KAFKA_BROKERS ?= 127.0.0.1:9092

.PHONY: help system-deps demo test lint check-deploy unit integration test-replay test-reliability fuzz build broker-install broker-up broker-down schemas clean bench-model bench-decode bench-replay bench-e2e train-data train-model compare-models train-npr cross-validate heldout-model

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

system-deps: ## Install the system libraries the build links against when missing (libheif-dev, pkg-config; apt-get)
	scripts/system-deps.sh

demo: system-deps ## Run the main job with zero setup (in-process mock Kafka, local image server, sample listings)
	$(CARGO) run -q -p listing-guard -- demo

# The integration test binaries, each run by `make test` on a fresh broker database.
INTEGRATION_TESTS := $(basename $(notdir $(wildcard integration-tests/tests/*.rs)))

test: ## Everything CI runs: format, clippy, deployment files, unit tests, integration tests against a real broker (each test file on a fresh broker database)
	$(MAKE) system-deps
	$(MAKE) lint
	$(MAKE) check-deploy
	$(MAKE) unit
	$(MAKE) build
	status=0; for t in $(INTEGRATION_TESTS); do scripts/broker.sh fresh || status=1; $(CARGO) test -p integration-tests --test $$t -- --test-threads=1 --nocapture || status=$$?; done; $(MAKE) broker-down; exit $$status

lint: ## rustfmt check and clippy (warnings are errors)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

check-deploy: ## Validate deploy/ offline: K8s manifests + kustomizations (kubernetes-validate, KEDA schema), Dockerfiles (hadolint), compose (docker-compose config), promtool, collector config
	scripts/check-deploy.sh

unit: ## Unit tests, score conformance (shared corpus), schema freshness
	$(CARGO) test --workspace --exclude integration-tests

integration: build ## End-to-end tests against the broker at KAFKA_BROKERS (start one with broker-up)
	$(CARGO) test -p integration-tests -- --test-threads=1 --nocapture

test-replay: build ## Re-audit tests only: starts the broker, runs integration-tests/tests/replay.rs, stops it
	$(MAKE) broker-up
	status=0; $(CARGO) test -p integration-tests --test replay -- --nocapture || status=$$?; $(MAKE) broker-down; exit $$status

test-reliability: build ## Full-scale faults: 5,000 listings x 20 SIGKILLs, 3 broker restarts, rebalance, SIGTERM, hostile corpus (starts the broker)
	$(MAKE) broker-up
	status=0; for t in reliability broker_restart hostile_inputs; do LG_RELIABILITY=full $(CARGO) test -p integration-tests --test $$t -- --test-threads=1 --nocapture || status=$$?; done; $(MAKE) broker-down; exit $$status

fuzz: ## cargo-fuzz every parser and the decode path, FUZZ_SECONDS (default 60) each (nightly + cargo-fuzz)
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} fuzz/run.sh

build: system-deps ## Build the listing-guard binary
	$(CARGO) build -p listing-guard

broker-install: ## Build the tansu broker into ~/.cache/listing-guard (once; ~10-15 min)
	scripts/broker.sh install

broker-up: ## Start tansu on 127.0.0.1:9092 with sqlite storage (installs it first if needed)
	scripts/broker.sh up

broker-down: ## Stop the broker
	scripts/broker.sh down

schemas: ## Regenerate the JSON Schemas under schemas/
	$(CARGO) run -q -p listing-guard -- schemas --out schemas

clean: ## Remove build outputs (the cached broker binary stays)
	$(CARGO) clean

bench-model: ## Model throughput: candle (CPU, 2 threads) vs ONNX Runtime on the same weights
	test -x target/bench-venv/bin/python || python3 -m venv target/bench-venv
	target/bench-venv/bin/python -m pip install --quiet numpy onnx onnxruntime safetensors
	RAYON_NUM_THREADS=2 $(CARGO) bench -p lg-benches --bench model

bench-decode: ## JPEG decode whole vs crop-first (the model's crops only), on synthetic photos and the shared corpus
	$(CARGO) bench -p lg-benches --bench decode

bench-replay: ## Re-audit throughput with a warm cache vs the broker's read-only throughput (starts the broker)
	$(MAKE) broker-up
	status=0; $(CARGO) bench -p lg-benches --bench replay || status=$$?; $(MAKE) broker-down; exit $$status

bench-e2e: ## End to end vs the Python reference pipeline on the same broker and images (starts the broker; E2E_LISTINGS, E2E_REPEATS)
	test -x target/bench-venv/bin/python || python3 -m venv target/bench-venv
	target/bench-venv/bin/python -m pip install --quiet numpy onnx onnxruntime safetensors confluent-kafka requests pillow
	$(CARGO) build --profile bench -p listing-guard
	$(MAKE) broker-up
	status=0; LISTING_GUARD_BIN=$(CURDIR)/target/release/listing-guard $(CARGO) bench -p lg-benches --bench e2e || status=$$?; $(MAKE) broker-down; exit $$status

# The NPR network's recipe: cross-validation and the final fit share it (train --cv-report checks).
TRAIN_RECIPE := --steps 200 --batch 16
ECOMMERCE := vton-inputs-catvton,vton-inputs-fitdit,vton-inputs-ootdiffusion,rembg-examples,paint-by-example-inputs
CV_REPORT := models/npr-small/cv-report.json

train-data:
	models/prepare_data.sh target/train-data
	$(CARGO) build --release -p listing-guard

train-model: train-data ## Rebuild the shipped model, models/residual-lr (~3 min, seeded): its leave-family-out cross-validation (models/families.tsv), then the fit on everything
	target/release/listing-guard train-features --data target/train-data --out models/residual-lr --work target/cv-features --ecommerce $(ECOMMERCE) --families models/families.tsv

compare-models: train-data ## The feature model on the network's leave-source-out folds, and both combined (~3 min; needs target/cv/oof.json from make cross-validate): target/compare/
	target/release/listing-guard train-features --data target/train-data --out target/compare/model --work target/compare --ecommerce $(ECOMMERCE) --npr-oof target/cv/oof.json

train-npr: train-data ## Rebuild the NPR network, models/npr-small (~15 min, seeded): train on everything, calibration and operating points from the committed cross-validation report
	target/release/listing-guard train --data target/train-data --out models/npr-small $(TRAIN_RECIPE) --cv-report $(CV_REPORT)

cross-validate: train-data ## Leave-source-out cross-validation of the NPR recipe (~70 min): 5 folds of whole groups into target/cv, report copied to models/npr-small/cv-report.json
	target/release/listing-guard cross-validate --data target/train-data --out target/cv $(TRAIN_RECIPE) --ecommerce $(ECOMMERCE)
	cp target/cv/report.json $(CV_REPORT)

heldout-model: ## Unseen-generator check: train without two families (plain / with B-Free pairs), evaluate on them
	models/heldout.sh
