"""The dashboard page and its assets, as served (the browser test drives them for real)."""

import gzip
import importlib.resources

from fastapi.testclient import TestClient

from metrics_pipeline.api import ApiSettings, create_app

from .helpers import LOOPBACK_CLIENT


def test_the_page_carries_the_server_settings_and_a_strict_policy(sqlite_warehouse):
    settings = ApiSettings.from_environ(
        {"METRICS_WAREHOUSE_URL": sqlite_warehouse.url, "METRICS_DASHBOARD_REFRESH_SECONDS": "7"}
    )
    with TestClient(create_app(settings), client=LOOPBACK_CLIENT) as c:
        page = c.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'data-refresh-seconds="7"' in page.text
    assert 'data-auth-required="false"' in page.text
    for selector in (
        'id="biller"',
        'id="metric"',
        'id="period"',
        'id="last-updated"',
        'id="chart-1"',
        'id="chart-2"',
        'id="chart-3"',
        'role="alert"',
    ):
        assert selector in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-eval" not in policy
    assert "<script>" not in page.text  # no inline script: the policy forbids it
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert page.headers["x-content-type-options"] == "nosniff"


def test_the_chart_library_is_served_from_the_installed_plotly_package(client):
    page = client.get("/").text
    src = page.split('<script src="', 1)[1].split('"', 1)[0]
    assert src.startswith("/vendor/plotly.min.js?v=")
    shipped = (importlib.resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()

    zipped = client.get(src, headers={"Accept-Encoding": "gzip"})
    assert zipped.status_code == 200
    assert zipped.headers["content-type"].startswith("text/javascript")
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == shipped  # httpx undoes the gzip
    assert int(zipped.headers["content-length"]) < len(shipped) / 2

    plain = client.get(src, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == shipped
    again = client.get(src, headers={"If-None-Match": zipped.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert gzip.compress(b"") and "max-age" in zipped.headers["cache-control"]


def test_the_dashboard_script_and_styles_are_served(client):
    script = client.get("/static/dashboard.js")
    assert script.status_code == 200 and "setInterval" in script.text
    shared = client.get("/static/api_client.js")  # the token and fetch code of every page
    assert shared.status_code == 200 and "sessionStorage" in shared.text
    for name in ("dashboard", "availability", "exports", "api_client"):
        text = client.get(f"/static/{name}.js").text
        assert "localStorage" not in text  # the token lives in this tab only
        assert "innerHTML" not in text  # text only: API strings are never parsed as HTML
    assert client.get("/static/dashboard.css").status_code == 200
