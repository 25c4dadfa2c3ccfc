"""Reading the run.json of finished training runs, for the research tables."""

from __future__ import annotations

import json
from pathlib import Path


def load_finished_run(run: Path) -> dict:
    """``run``'s run.json; exits with a message when it is missing or has no final test pass."""
    path = Path(run) / "run.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no run.json (has the run finished?)")
    rec = json.loads(path.read_text())
    if "final" not in rec:
        raise SystemExit(
            f"{path}: the run has no final test evaluation (status {rec.get('status')})"
        )
    return rec
