# hsi: hybrid secure inference. `make demo` and `make test` do all set-up they need.
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-slow lint lock protos bench bench-he results leakage leakage-table image clean

setup:
	@bash scripts/setup.sh

# The fully private encoder: HE linears at the owner, MPC nonlinears between owner and keyholder, the
# keyholder's enclave converting; --check compares with plaintext and the data plane with the privacy report.
demo: setup
	$(VENV)/bin/hsi plan --policy deploy/policies/private-minilm.yaml
	$(VENV)/bin/hsi embed --policy deploy/policies/private-minilm.yaml --check --min-cosine 0.995 \
	    "Patient is a 67-year-old man with type 2 diabetes, hypertension and stage 3 chronic kidney disease; started on metformin 500 mg twice daily."

# ruff; mypy, --strict on the shared layer; import-linter: the layer rule (pyproject.toml [tool.importlinter])
lint: setup
	$(VENV)/bin/ruff check hsi orchestrator zones tests bench
	$(VENV)/bin/mypy --strict hsi
	$(VENV)/bin/mypy orchestrator zones
	$(VENV)/bin/lint-imports

test: setup lint
	$(PY) -m pytest -q -m "not slow" tests

test-slow: setup
	$(PY) -m pytest -q -m slow tests

# Re-resolve every dependency to its newest allowed version, on purpose; then `make protos` if grpcio-tools moved.
lock: setup
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.10 --python-platform x86_64-manylinux_2_28 \
	    --custom-compile-command "make lock" -o requirements.lock

protos: setup
	bash scripts/gen_protos.sh

bench: setup
	$(PY) bench/e2e.py --json bench/results/e2e.json

bench-he: setup
	$(PY) bench/he_linear.py --json bench/results/he_linear.json

# README's table of figures, from the latest record per (plan, model, network) in bench/results/*.json.
results: setup
	$(PY) bench/results_table.py --write-readme

# The leakage audit (docs/leakage.md): each model's hidden states at the depths below, its output tensor and the
# noise defence, merged into hsi/models/leakage/<model>.json and bench/results/leakage-<model>.json (~3 h).
leakage: setup
	$(PY) bench/leakage.py --model minilm-l6 --depths 0,1,2,3,4,5,6 --final --noise
	$(PY) bench/leakage.py --model smollm2-135m --depths 0,1,2,3,6,12,30 --final --noise
	$(PY) bench/leakage_table.py --write

# README's leakage curve and docs/leakage.md's noise table, from the shipped data.
leakage-table: setup
	$(PY) bench/leakage_table.py --write

# The container image every party runs its zones from. Without Docker Hub: `make image OFFLINE=1` builds the
# base from Debian's mirror and this machine's CPython 3.10 first (deploy/compose/offline-base.sh).
IMAGE ?= hsi:latest
image:
	@if [ -n "$(OFFLINE)" ]; then bash deploy/compose/offline-base.sh hsi-base:py3.10-bookworm && \
	    docker build -f deploy/compose/Dockerfile --build-arg BASE=hsi-base:py3.10-bookworm -t $(IMAGE) . ; \
	else docker build -f deploy/compose/Dockerfile -t $(IMAGE) . ; fi

clean:
	rm -rf .hsi/run
