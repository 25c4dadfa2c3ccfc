# sarbridge: the two set-up commands for a newcomer are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= $(or $(SARBRIDGE_DATA),../shared/data)
OUT    ?= outputs

export SARBRIDGE_DATA := $(abspath $(DATA))
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test lint bench-tiling clean help

help:
	@echo "make setup        create $(VENV) and install sarbridge with every extra (train, onnx, geo, dev)"
	@echo "make demo         the main job at CPU size (data checks, synthetic data, tiling a real scene)"
	@echo "make test         ruff + the whole test suite (what CI runs)"
	@echo "make bench-tiling peak memory of tiling a 20,000 x 20,000 uint16 scene"
	@echo "DATA=...          data root (default ../shared/data, or \$$SARBRIDGE_DATA)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[train,onnx,geo,dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	@echo "== 1/4 SSDD: format, counts per split, box statistics, bad items"
	$(BIN)/sarbridge data check $(DATA)/SSDD
	@echo "== 2/4 optical/SAR pairs for BNN pretraining"
	$(BIN)/sarbridge data check $(DATA)/optsar_sen12_volkov100
	$(BIN)/sarbridge data check $(DATA)/optsar_sih1733_tharun
	@echo "== 3/4 synthetic 16-bit scenes with ground truth and optical renderings"
	$(BIN)/sarbridge data synth --out $(OUT)/demo/synthetic --n 8 --size 512
	$(BIN)/sarbridge data check $(OUT)/demo/synthetic
	@echo "== 4/4 a real large scene cut into 512 px tiles at 0.5 overlap"
	$(BIN)/sarbridge data tile $(DATA)/large_scenes_ioEclipse/vv2.jpg --size 512 --overlap 0.5 --out $(OUT)/demo/tiles
	@echo "outputs: $(OUT)/demo/synthetic (COCO + sar/ + opt/), $(OUT)/demo/tiles (tiles + tiles.json)"

lint: setup
	$(BIN)/ruff check .

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench-tiling: setup
	$(BIN)/python -m sarbridge.benchmarks.tile_memory --size 20000

clean:
	rm -rf $(OUT) build dist *.egg-info .pytest_cache .ruff_cache
