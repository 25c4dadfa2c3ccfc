# sarbridge: the two set-up commands for a newcomer are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= $(or $(SARBRIDGE_DATA),../shared/data)
OUT    ?= outputs

export SARBRIDGE_DATA := $(abspath $(DATA))

# Without the real data (no $(DATA)/SSDD), make demo runs on generated scenes instead:
# BNN pretraining on synthetic optical/SAR pairs, the detector on synthetic ship boxes.
SYNTH_DIR := $(abspath $(OUT)/demo/synthetic)
NO_DATA   := $(if $(wildcard $(DATA)/SSDD/Annotations),,1)
BNN_ARGS  ?=
DET_ARGS  ?=
BENCH_DATA ?= SSDD
export HF_HUB_OFFLINE := 1

.PHONY: setup demo train train-bnn train-det export compress detect bench report test lint bench-tiling bench-bnn bench-runtime clean help

help:
	@echo "make setup        create $(VENV) and install sarbridge with every extra (train, onnx, openvino, export, compress, bench, geo, dev)"
	@echo "make demo         the main job at CPU size (data checks, synthetic data, tiling a real scene)"
	@echo "make train        BNN pretraining, then the edge detector on SSDD initialised from it (CPU-sized)"
	@echo "make train-bnn    BNN pretraining on the real optical/SAR pairs (CPU-sized, configs/bnn_edge.yaml)"
	@echo "make export       the trained detector -> artifacts/\$$(DET_RUN) (ONNX + manifest, parity-checked), and the zoo detector"
	@echo "make compress     METHOD=int8|qat|fp16 TARGET=onnxruntime|openvino|tensorrt FROM=zoo:ssdd_edge_det -> artifacts/<name>_<method>_<target>"
	@echo "                  METHOD=prune|distill|finetune COMPRESS_ARGS='--ratio 0.5 ...' -> runs/<name>_<method>"
	@echo "                  RECIPE=configs/compress_edge_prune50_kd_int8.yaml (resumes where it stopped)"
	@echo "make detect       sarbridge detect on the real large scenes with overlays -> \$$(OUT)/detect"
	@echo "make bench        sarbridge bench on the SSDD test split and the large scenes -> reports/\$$(DET_RUN)"
	@echo "make report       sarbridge's deployable models vs Ultralytics YOLOv8n/YOLO11n on SSDD, one bench run -> benchmarks/results/cpu"
	@echo "make bench-runtime runtime overhead, ONNX Runtime vs PyTorch, 20k x 20k GeoTIFF memory"
	@echo "make test         ruff + the whole test suite (what CI runs)"
	@echo "make bench-tiling peak memory of tiling a 20,000 x 20,000 uint16 scene"
	@echo "make bench-bnn    BNN training throughput (pairs/s) per backbone"
	@echo "DATA=...          data root (default ../shared/data, or \$$SARBRIDGE_DATA)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[train,onnx,openvino,export,compress,bench,geo,dev]'
	@touch $(STAMP)

setup: $(STAMP)

BNN_CONFIG ?= configs/bnn_edge.yaml
BNN_RUN    ?= $(notdir $(basename $(BNN_CONFIG)))

train-bnn: setup
	$(BIN)/sarbridge train bnn --config $(BNN_CONFIG) --name $(BNN_RUN) --runs-dir runs $(if $(wildcard runs/$(BNN_RUN)/checkpoint.pt),--resume) $(BNN_ARGS)
	$(BIN)/sarbridge train bnn-export-backbone --from runs/$(BNN_RUN)

DET_CONFIG ?= configs/det_edge.yaml
DET_RUN    ?= det_edge_bnn

train-det: setup
	$(BIN)/sarbridge train detect --config $(DET_CONFIG) --init bnn:runs/$(BNN_RUN) --name $(DET_RUN) --runs-dir runs $(if $(wildcard runs/$(DET_RUN)/checkpoint.pt),--resume) $(DET_ARGS)

train: train-bnn train-det

ARTIFACT ?= artifacts/$(DET_RUN)
# The zoo's SSDD detector (zoo/): export, detect and bench also run it beside the model
# trained here, so the report shows the released accuracy next to the short demo schedule.
ZOO_DET      ?= ssdd_edge_det
HAVE_ZOO_DET := $(if $(NO_DATA),,$(wildcard zoo/$(ZOO_DET)/manifest.json))
ZOO_ARTIFACT ?= artifacts/$(ZOO_DET)
SCENES   ?= $(DATA)/large_scenes_ioEclipse/vv2.jpg $(DATA)/large_scenes_ioEclipse/Test_image.png

export: setup
	$(BIN)/sarbridge export onnx --from runs/$(DET_RUN) --out $(ARTIFACT)
ifneq ($(HAVE_ZOO_DET),)
	$(BIN)/sarbridge export onnx --from zoo:$(ZOO_DET) --out $(ZOO_ARTIFACT)
endif

# compress: INT8 per deployment target (calibrated on train images, accuracy-guarded) or FP16
# (artifacts/), pruning / distillation / fine-tuning (runs/), or a recipe of chained steps
METHOD ?= int8
TARGET ?= onnxruntime
FROM   ?= zoo:$(ZOO_DET)
RECIPE ?=
TRAINING_METHODS = prune distill finetune
COMPRESS_NAME = $(notdir $(subst zoo:,,$(FROM)))_$(METHOD)
COMPRESS_OUT ?= $(if $(filter $(METHOD),$(TRAINING_METHODS)),runs/$(COMPRESS_NAME),artifacts/$(COMPRESS_NAME)$(if $(filter fp16,$(METHOD)),,_$(TARGET)))
COMPRESS_ARGS ?=

compress: setup
ifneq ($(RECIPE),)
	$(BIN)/sarbridge compress --recipe $(RECIPE) --resume $(COMPRESS_ARGS)
else
	$(BIN)/sarbridge compress --method $(METHOD) $(if $(filter int8 qat,$(METHOD)),--target $(TARGET)) --from $(FROM) --out $(COMPRESS_OUT) $(COMPRESS_ARGS)
endif

detect: setup
	$(BIN)/sarbridge detect $(SCENES) --model $(if $(HAVE_ZOO_DET),$(ZOO_ARTIFACT),$(ARTIFACT)) --out $(OUT)/detect --overlay

report: setup
	$(BIN)/python -m sarbridge.benchmarks.research.canonical_report --out benchmarks/results/cpu $(REPORT_ARGS)

bench: setup
	$(BIN)/sarbridge bench --models $(ARTIFACT) $(if $(HAVE_ZOO_DET),$(ZOO_ARTIFACT)) --data $(BENCH_DATA) --backends onnxruntime,pytorch --scenes $(SCENES) --out reports/$(DET_RUN)

SYNTH_SET = BNN_RUN=bnn_edge_synthetic DET_RUN=det_edge_synthetic \
	BNN_ARGS="--set data.roots=[$(SYNTH_DIR)] --set optim.epochs=10" \
	DET_ARGS="--set data.root=$(SYNTH_DIR) --set optim.epochs=30 --set optim.warmup_steps=20" BENCH_DATA=$(SYNTH_DIR) \
	SCENES="$(SYNTH_DIR)_scene/sar/000099.tif"
DEMO_SET = $(if $(NO_DATA),$(SYNTH_SET))

demo: setup
ifeq ($(NO_DATA),1)
	@echo "== no real data at $(DATA) (no SSDD): the demo runs on generated scenes (set DATA=... for the real job)"
	@echo "== 1-2/8 skipped: real data checks"
	@echo "== 3/8 synthetic 16-bit scenes with ground truth and optical renderings"
	$(BIN)/sarbridge data synth --out $(SYNTH_DIR) --n 48 --size 512
	$(BIN)/sarbridge data check $(SYNTH_DIR)
	$(BIN)/sarbridge data synth --out $(SYNTH_DIR)_scene --n 1 --size 2048 --seed 99
	@echo "== 4/8 a 2048 x 2048 synthetic scene cut into 512 px tiles at 0.5 overlap"
	$(BIN)/sarbridge data tile $(SYNTH_DIR)_scene/sar/000099.tif --size 512 --overlap 0.5 --out $(OUT)/demo/tiles
else
	@echo "== 1/8 SSDD: format, counts per split, box statistics, bad items"
	$(BIN)/sarbridge data check $(DATA)/SSDD
	@echo "== 2/8 optical/SAR pairs for BNN pretraining"
	$(BIN)/sarbridge data check $(DATA)/optsar_sen12_volkov100
	$(BIN)/sarbridge data check $(DATA)/optsar_sih1733_tharun
	@echo "== 3/8 synthetic 16-bit scenes with ground truth and optical renderings"
	$(BIN)/sarbridge data synth --out $(OUT)/demo/synthetic --n 8 --size 512
	$(BIN)/sarbridge data check $(OUT)/demo/synthetic
	@echo "== 4/8 a real large scene cut into 512 px tiles at 0.5 overlap"
	$(BIN)/sarbridge data tile $(DATA)/large_scenes_ioEclipse/vv2.jpg --size 512 --overlap 0.5 --out $(OUT)/demo/tiles
endif
	@echo "== 5/8 BNN pretraining on optical/SAR pairs, then the edge detector from its SAR backbone"
	$(MAKE) --no-print-directory train $(DEMO_SET)
	@echo "== 6/8 ONNX export, checked against PyTorch on test images"
	$(MAKE) --no-print-directory export $(DEMO_SET)
	@echo "== 7/8 sarbridge detect (torch-free) on large scenes, with overlays"
	$(MAKE) --no-print-directory detect $(DEMO_SET)
	@echo "== 8/8 sarbridge bench: accuracy against latency, memory, size (and energy where a probe exists)"
	$(MAKE) --no-print-directory bench $(DEMO_SET)
	@echo "outputs: $(OUT)/demo/synthetic (COCO + sar/ + opt/), $(OUT)/demo/tiles (tiles + tiles.json),"
	@echo "         runs/ (BNN and detector runs: run.json with test metrics, checkpoints, sar_backbone.pt),"
	@echo "         artifacts/ (model.onnx, manifest.json), $(OUT)/detect/ (COCO JSON + overlay PNG per scene),"
	@echo "         reports/ (report.md, report.html, results.json, plots)"

lint: setup
	$(BIN)/ruff check .

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench-bnn: setup
	$(BIN)/python -m sarbridge.benchmarks.research.bnn_throughput --sizes 128 256

bench-tiling: setup
	$(BIN)/python -m sarbridge.benchmarks.tile_memory --size 20000

bench-runtime: setup
	$(BIN)/python -m sarbridge.benchmarks.research.runtime_figures --model $(ARTIFACT) --run runs/$(DET_RUN) --threads 2 --out reports/runtime_$(DET_RUN)

clean:
	rm -rf $(OUT) build dist *.egg-info .pytest_cache .ruff_cache
	@echo "runs/, artifacts/ and reports/ are kept; remove them by hand"
