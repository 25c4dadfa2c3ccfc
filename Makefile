# sarbridge: the two set-up commands for a newcomer are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= $(or $(SARBRIDGE_DATA),../shared/data)
OUT    ?= outputs

export SARBRIDGE_DATA := $(abspath $(DATA))
export HF_HUB_OFFLINE := 1

.PHONY: setup demo train train-bnn train-det test lint bench-tiling bench-bnn clean help

help:
	@echo "make setup        create $(VENV) and install sarbridge with every extra (train, onnx, geo, dev)"
	@echo "make demo         the main job at CPU size (data checks, synthetic data, tiling a real scene)"
	@echo "make train        BNN pretraining, then the edge detector on SSDD initialised from it (CPU-sized)"
	@echo "make train-bnn    BNN pretraining on the real optical/SAR pairs (CPU-sized, configs/bnn_edge.yaml)"
	@echo "make test         ruff + the whole test suite (what CI runs)"
	@echo "make bench-tiling peak memory of tiling a 20,000 x 20,000 uint16 scene"
	@echo "make bench-bnn    BNN training throughput (pairs/s) per backbone"
	@echo "DATA=...          data root (default ../shared/data, or \$$SARBRIDGE_DATA)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[train,onnx,export,bench,geo,dev]'
	@touch $(STAMP)

setup: $(STAMP)

BNN_CONFIG ?= configs/bnn_edge.yaml
BNN_RUN    ?= $(notdir $(basename $(BNN_CONFIG)))

train-bnn: setup
	$(BIN)/sarbridge train bnn --config $(BNN_CONFIG) --name $(BNN_RUN) --runs-dir runs $(if $(wildcard runs/$(BNN_RUN)/checkpoint.pt),--resume)
	$(BIN)/sarbridge train bnn-export-backbone --from runs/$(BNN_RUN)

DET_CONFIG ?= configs/det_edge.yaml
DET_RUN    ?= det_edge_bnn

train-det: setup
	$(BIN)/sarbridge train detect --config $(DET_CONFIG) --init bnn:runs/$(BNN_RUN) --name $(DET_RUN) --runs-dir runs $(if $(wildcard runs/$(DET_RUN)/checkpoint.pt),--resume)

train: train-bnn train-det

demo: setup
	@echo "== 1/5 SSDD: format, counts per split, box statistics, bad items"
	$(BIN)/sarbridge data check $(DATA)/SSDD
	@echo "== 2/5 optical/SAR pairs for BNN pretraining"
	$(BIN)/sarbridge data check $(DATA)/optsar_sen12_volkov100
	$(BIN)/sarbridge data check $(DATA)/optsar_sih1733_tharun
	@echo "== 3/5 synthetic 16-bit scenes with ground truth and optical renderings"
	$(BIN)/sarbridge data synth --out $(OUT)/demo/synthetic --n 8 --size 512
	$(BIN)/sarbridge data check $(OUT)/demo/synthetic
	@echo "== 4/5 a real large scene cut into 512 px tiles at 0.5 overlap"
	$(BIN)/sarbridge data tile $(DATA)/large_scenes_ioEclipse/vv2.jpg --size 512 --overlap 0.5 --out $(OUT)/demo/tiles
	@echo "== 5/5 BNN pretraining on the real optical/SAR pairs, then the edge detector on SSDD from its SAR backbone"
	$(MAKE) --no-print-directory train
	@echo "outputs: $(OUT)/demo/synthetic (COCO + sar/ + opt/), $(OUT)/demo/tiles (tiles + tiles.json),"
	@echo "         runs/$(BNN_RUN)/ (run.json with test metrics, checkpoint.pt, best.pt, sar_backbone.pt),"
	@echo "         runs/$(DET_RUN)/ (run.json with SSDD test AP, checkpoint.pt, best.pt)"

lint: setup
	$(BIN)/ruff check .

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench-bnn: setup
	$(BIN)/python -m sarbridge.benchmarks.bnn_throughput --sizes 128 256

bench-tiling: setup
	$(BIN)/python -m sarbridge.benchmarks.tile_memory --size 20000

clean:
	rm -rf $(OUT) build dist *.egg-info .pytest_cache .ruff_cache
	@echo "runs/ (training runs) is kept; remove it by hand"
