# Two entry points: `make demo` (train + evaluate on the generated dataset) and `make test`.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test gpu bench bench-train clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test,compat,onnx,export]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/keras-insightface demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile

# JAX's CUDA 12 build into .venv, then the devices JAX sees (a GPU line, or the CPU and why)
gpu: $(STAMP)
	$(VENV)/bin/pip install -q -e ".[cuda]"
	$(VENV)/bin/python -c "import jax; ds = jax.devices(); print('JAX', jax.__version__, 'sees', len(ds), 'device(s):', ', '.join(f'{d.platform}:{d.device_kind}' for d in ds)); raise SystemExit(0 if ds[0].platform == 'gpu' else 'no GPU visible to JAX: check nvidia-smi and the CUDA driver (>= 12)')"

bench: $(STAMP)
	$(VENV)/bin/python bench/train_step.py --cpu

bench-train: $(STAMP)
	$(VENV)/bin/python bench/train.py --cpu

clean:
	rm -rf $(VENV) .pytest_cache
