# Set-up and the two entry points of the README. Everything installs into .venv (CPU torch pinned: an unpinned
# torch pulls a multi-GB CUDA build), except the Triton server side (see triton-setup).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: setup triton-setup demo test test-fast gpu-prep gpu-report clean

# Speech engines for ASR data (speechtrt.asr.synth): espeak-ng, festival with its Debian English voices, flite; sox
# shifts festival/flite speakers and resamples.
SPEECH_DEBS := espeak-ng sox fortunes fortunes-min festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite

$(BIN)/.installed: pyproject.toml
	@{ command -v espeak-ng >/dev/null && command -v festival >/dev/null && command -v flite >/dev/null && \
	   dpkg -s fortunes festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts >/dev/null 2>&1; } || \
	  { apt-get update -qq && apt-get install -y -qq $(SPEECH_DEBS) >/dev/null; } || \
	  echo "warning: could not install $(SPEECH_DEBS) (needs root); audio and text tests will fail or skip"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# The Triton server side lives in its own virtualenv: nvidia-pytriton (which bundles a real tritonserver with the
# Python backend) pins numpy<2, and the main environment runs numpy 2. The server's Python-backend models import
# speechtrt from this checkout (editable, --no-deps) and need only what its runtime imports: CPU torch, ONNX Runtime.
# Clients (tritonclient) run in the main environment.
TRITON_VENV := .venv-triton
TRITON_BIN := $(TRITON_VENV)/bin
PYTRITON := nvidia-pytriton==0.7.0

$(TRITON_BIN)/.installed: pyproject.toml
	$(PY) -m venv $(TRITON_VENV)
	$(TRITON_BIN)/pip install -q --upgrade pip
	$(TRITON_BIN)/pip install -q $(TORCH) $(PYTRITON) 'numpy<2' onnxruntime
	$(TRITON_BIN)/pip install -q --no-deps -e .
	$(TRITON_BIN)/python -c "import speechtrt.triton.models, pytriton, onnxruntime, torch"
	@touch $@

triton-setup: $(TRITON_BIN)/.installed

setup: $(BIN)/.installed $(TRITON_BIN)/.installed

# The whole product on the CPU: export with parity, calibrate + quantize (fidelity report), build every engine
# ahead of time for sm86 with TensorRT-RTX, benchmark TTS against the seed baseline, evaluate ASR across accents,
# serve 64 streams. Reports land in reports/demo/ (the committed full-size reports in reports/ stay as they are).
DEMO_REPORTS := reports/demo
demo: setup
	$(BIN)/speechtrt export --model all --out out/onnx
	$(BIN)/speechtrt calibrate --onnx-dir out/onnx --reports $(DEMO_REPORTS)
	$(BIN)/speechtrt build --gpu sm86 --fp32 --fp16 --int8 --onnx-dir out/onnx
	$(BIN)/speechtrt bench --device cpu --quick --onnx-dir out/onnx --out $(DEMO_REPORTS)
	$(BIN)/speechtrt eval --quick --out $(DEMO_REPORTS)
	$(BIN)/speechtrt stream --streams 64 --seconds 10 --out $(DEMO_REPORTS)

# Two workers, each test file on one of them (its module fixtures are made once); TEST_WORKERS=0 runs in-process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# Every GPU number from one command, within 8 minutes (speechtrt gpu-report; README "GPU report"). gpu-prep runs where
# espeak-ng is (it writes the accented test audio the GPU machine cannot make); gpu-report runs on the CUDA machine
# with the Python that has CUDA torch (GPU_PY), the checkout on PYTHONPATH.
GPU_PY ?= python3
gpu-prep: setup
	$(BIN)/speechtrt gpu-report --prepare --inputs gpu_inputs

gpu-report:
	PYTHONPATH=$(CURDIR) $(GPU_PY) -m speechtrt.cli gpu-report --inputs gpu_inputs --out reports/gpu

clean:
	rm -rf $(VENV) $(TRITON_VENV) out
