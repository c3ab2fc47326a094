# The README's two commands: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0 (CPU build) is on this project's machines; elsewhere pick the build for your GPU, e.g.
#   make TORCH="torch --index-url https://download.pytorch.org/whl/cu128" test
TORCH ?= torch==2.13.0
DEMO := demo
# the real LA data for the tests that need it (they skip where it is absent)
LA_ROOT ?= ../shared/data/LA

.PHONY: all install test demo clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamp: reinstall when the package's requirements change.
$(VENV)/.installed: $(BIN)/python DTCTraining/pyproject.toml Testing/requirements.txt
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e "DTCTraining[test]" -r Testing/requirements.txt
	touch $@

install: $(VENV)/.installed

test: install
	DTC_LA_ROOT=$(abspath $(LA_ROOT)) $(BIN)/python -m pytest -q -p no:cacheprovider DTCTraining/tests Testing benchmarks/tests

# Train DTC briefly on synthetic phantoms on the CPU, segment held-out phantoms with `dtc infer`, score them
# with `dtc evaluate`, then run the Slicer module's batch script (its logic on real MRML, no Slicer needed).
# 150 iterations stop far from convergence, so the demo keeps the learning rate up (the official steps
# never step that early) instead of the default decay to 0.
demo: install
	rm -rf $(DEMO)
	$(BIN)/dtc make-phantoms -o $(DEMO)/phantoms --count 10 --labeled 3 --validation 2 --size 80 80 56 --seed 1
	$(BIN)/dtc train --datalist $(DEMO)/phantoms/datalist.json -o $(DEMO)/run --iterations 150 \
		--patch 48 48 48 --n-filters 8 --val-every 50 --precise-bn 20 --lr-schedule step --progress bar
	$(BIN)/dtc infer --model $(DEMO)/run/model.safetensors -o $(DEMO)/predictions \
		$(DEMO)/phantoms/images/phantom_008.nrrd $(DEMO)/phantoms/images/phantom_009.nrrd
	$(BIN)/dtc evaluate --pred $(DEMO)/predictions/phantom_008-label.nrrd $(DEMO)/predictions/phantom_009-label.nrrd --gt $(DEMO)/phantoms/labels/phantom_008.nrrd $(DEMO)/phantoms/labels/phantom_009.nrrd \
		--json $(DEMO)/metrics.json
	$(BIN)/python DTCSegmentation/Scripts/batch.py segment --model $(DEMO)/run/model.safetensors -o $(DEMO)/segmentations \
		$(DEMO)/phantoms/images/phantom_009.nrrd
	@echo "Demo done: model $(DEMO)/run/model.safetensors, label maps $(DEMO)/predictions, Slicer segmentations $(DEMO)/segmentations"

clean:
	rm -rf $(VENV) $(DEMO)
