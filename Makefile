# Two commands do all set-up on a fresh machine:
#   make app   -> creates .venv, installs everything, opens the app on the built-in demo cohort
#   make test  -> same set-up plus test tools, then ruff + pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501
# Without sign-in ([auth] in .streamlit/secrets.toml) the app serves this computer only.
ADDRESS ?= 127.0.0.1

.PHONY: app test lint clean-cache

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install only when a requirements file or pyproject changes.
$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -e .
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install -r requirements-dev.txt
	touch $@

app: $(VENV)/.installed
	$(BIN)/streamlit run app.py --server.port $(PORT) --server.address $(ADDRESS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

clean-cache:
	find cache -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
