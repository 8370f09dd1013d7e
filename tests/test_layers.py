"""What a process loads: each service only its own part of the house (checked in a fresh
interpreter, since this one has imported everything already)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def loaded_by(module: str) -> set[str]:
    code = (
        f"import sys, {module}; "
        "print(' '.join(m for m in sys.modules if m.startswith('metrics_pipeline')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    ("module", "not_loaded"),
    [
        # The collector process shares the web helpers, not the portal API and its exports.
        ("metrics_pipeline.collected.collector", "metrics_pipeline.api"),
        ("metrics_pipeline.collected.consumer", "metrics_pipeline.api"),
        # The API reads the warehouse; it never loads the DataPump family's assets or sensors.
        ("metrics_pipeline.api.app", "metrics_pipeline.datapump.assets"),
        ("metrics_pipeline.api.app", "metrics_pipeline.datapump.sensors"),
        # The collector and the consumer load no other family.
        ("metrics_pipeline.collected.collector", "metrics_pipeline.datapump"),
        ("metrics_pipeline.collected.consumer", "metrics_pipeline.availability"),
    ],
)
def test_a_service_loads_only_its_part(module, not_loaded):
    loaded = loaded_by(module)
    assert module in loaded
    assert not {m for m in loaded if m == not_loaded or m.startswith(not_loaded + ".")}


def test_the_layering_contracts_hold():
    # pyproject.toml's [tool.importlinter] contracts, as `make lint` checks them.
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "0 broken" in result.stdout
