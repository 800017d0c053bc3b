# `make report` (the main job) and `make test`; each sets up .venv itself.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ragopt-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv report report-full bench test test-fast clean

venv: $(STAMP)

# torch==2.13.0 first: it is a local CPU wheel; any other spec may pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Notebook 06 on the committed sample with the default simulator preset: RAG-Anything's folder mode
# shipped and tuned against ragopt, twice each (about 5 minutes here); report-full adds the
# per-optimization ablation with 3 repeats and verdicts (about 30 minutes).
REPORT_PARAMETERS ?= {"repeats": 2, "variants": "quick"}
REPORT_FULL_PARAMETERS ?= {"repeats": 3, "variants": "core"}

report: $(STAMP)
	$(VENV)/bin/ragopt report --notebook 06_ablation_report --out reports/report.html --parameters '$(REPORT_PARAMETERS)'

report-full: $(STAMP)
	$(VENV)/bin/ragopt report --notebook 06_ablation_report --out reports/report-full.html --out-dir reports/runs-full --parameters '$(REPORT_FULL_PARAMETERS)'

bench: $(STAMP)
	$(VENV)/bin/ragopt bench --baseline

# Three workers on two cores: most tests wait on the simulated LLM's latency, not on a core.
test: $(STAMP)
	$(PY) -m pytest -q -n 3 --dist loadgroup

# No notebooks, no fresh-process runs, no whole-corpus ingestions: under 2 minutes.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not notebook and not isolated and not slow"

clean:
	rm -rf reports .pytest_cache
