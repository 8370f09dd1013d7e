"""``GET /api/metrics/{billerId}/objectives`` and the billers' series of ``GET /metrics``, on
real SQLite and PostgreSQL warehouses."""

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.datapump.objectives import validate, write_objectives
from metrics_pipeline.resources.warehouse import WarehouseResource
from tests.datapump.test_objectives import write_hours

from .helpers import LOOPBACK_CLIENT

BURNING, QUIET, PLAIN = 31, 32, 33
LAST = datetime(2025, 3, 1, 11)
AT = "2025-03-01T12:20:00Z"  # judged at the end of the hour 11:00-12:00


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def client(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/wh.db"
    else:
        url = request.getfixturevalue("pg_databases").create()
    rows = []
    for h in range(6):
        hour = LAST - timedelta(hours=h)
        rows.append((BURNING, hour, 1000, 200 if hour == LAST else 5, 1, 300.0, 1))
        rows.append((QUIET, hour, 10, 10, 10, 100.0, 1))
        rows.append((PLAIN, hour, 1000, 900, 900, 300.0, 1))
    write_hours(url, rows)
    write_objectives(
        WarehouseResource(url=url),
        [validate(BURNING, 0.01, 0.01, 800), validate(QUIET, 0.01, 0.01)],
    )
    with TestClient(create_app(ApiSettings(warehouse_url=url)), client=LOOPBACK_CLIENT) as c:
        yield c


def test_a_burning_billers_budget_and_burn_state(client):
    body = client.get(f"/api/metrics/{BURNING}/objectives", params={"at": AT}).json()
    assert body["at"] == "2025-03-01T12:00:00Z"
    assert (body["state"], body["severity"]) == ("page", "ERROR")
    assert body["objectives"] == {"errorRate": 0.01, "timeoutRate": 0.01, "p95Ms": 800.0}
    errors = body["errorRate"]
    assert errors["budgetRemaining"] == pytest.approx(1 - 225 / 60)
    assert (errors["requests30d"], errors["bad30d"], errors["coveredHours30d"]) == (6000, 225, 6)
    page = errors["alerts"][0]
    assert (page["name"], page["firing"], page["longBurn"]) == ("page", True, pytest.approx(20))
    assert body["timeoutRate"]["state"] == "ok" and body["p95"]["state"] == "ok"


def test_a_quiet_biller_a_biller_without_objective_and_an_unknown_one(client):
    quiet = client.get(f"/api/metrics/{QUIET}/objectives", params={"at": AT}).json()
    assert (quiet["state"], quiet["severity"]) == ("not enough traffic", None)
    plain = client.get(f"/api/metrics/{PLAIN}/objectives", params={"at": AT}).json()
    assert (plain["state"], plain["objectives"], plain["errorRate"]) == ("no objective", None, None)
    unknown = client.get("/api/metrics/4242/objectives", params={"at": AT})
    assert unknown.status_code == 404 and unknown.json()["parameter"] == "billerId"
    bad = client.get(f"/api/metrics/{BURNING}/objectives", params={"at": "yesterday"})
    assert bad.status_code == 400 and bad.json()["parameter"] == "at"


def test_metrics_exposes_each_billers_budget_and_the_burns_with_traffic(client, monkeypatch):
    import metrics_pipeline.api.routers.prometheus as prometheus

    monkeypatch.setattr(prometheus, "utc_second", lambda: datetime(2025, 3, 1, 12, 20))
    text = client.get("/metrics").text
    budget = "metrics_pipeline_slo_biller_error_budget_remaining_ratio"
    burn = "metrics_pipeline_slo_biller_burn_rate"
    assert f'{budget}{{biller="{BURNING}",objective="error_rate"}} -2.75' in text
    assert f'{burn}{{biller="{BURNING}",objective="error_rate",window="1h"}} 20.0' in text
    assert f'{burn}{{biller="{BURNING}",objective="error_rate",window="6h"}} 3.75' in text
    # Biller 32 fails every call, but 60 calls in 6 h never page: no burn series for it.
    assert f'{budget}{{biller="{QUIET}",objective="error_rate"}}' in text
    assert f'biller="{QUIET}",objective="error_rate",window=' not in text
    assert f'biller="{PLAIN}"' not in text
