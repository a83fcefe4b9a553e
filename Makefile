# Two entry points: `make demo` (train + evaluate on the generated dataset) and `make test`.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-train clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test,compat,onnx,export]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/keras-insightface demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(VENV)/bin/python bench/train_step.py --cpu

bench-train: $(STAMP)
	$(VENV)/bin/python bench/train.py --cpu

clean:
	rm -rf $(VENV) .pytest_cache
