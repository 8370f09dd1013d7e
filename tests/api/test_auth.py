"""Bearer tokens: who may read what, and the open (no tokens) mode's loopback-only rule."""

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from metrics_pipeline.api import ApiSettings, create_app
from metrics_pipeline.api.server import check_exposure, serve
from metrics_pipeline.resources.engines import ConfigurationError
from metrics_pipeline.web.auth import load_tokens, token_digest

from .helpers import ADMIN_TOKEN, LOOPBACK_CLIENT, PORTAL_TOKEN

QUERY = {"metricTypeId": 1, "timeStampTypeId": 1, "from": "2025-03-01", "to": "2025-03-02"}


@pytest.fixture(scope="module")
def secured(sqlite_warehouse, tokens_file) -> Iterator[TestClient]:
    settings = ApiSettings(warehouse_url=sqlite_warehouse.url, tokens_file=str(tokens_file))
    # A remote client address: tokens, not the address, decide.
    with TestClient(create_app(settings), client=("10.20.30.40", 5555)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong"),
        {"Authorization": f"Basic {PORTAL_TOKEN}"},
        {"Authorization": "Bearer "},
        bearer(token_digest(PORTAL_TOKEN)),
    ],  # the stored digest is not a token
    ids=["none", "unknown", "basic-scheme", "empty", "digest-as-token"],
)
@pytest.mark.parametrize(
    "path", ["/api/metrics/11", "/api/metric-types", "/api/timestamp-types", "/api/billers"]
)
def test_no_or_unknown_token_is_401(secured, headers, path):
    response = secured.get(path, params=QUERY, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_portal_token_reads_only_its_billers(secured):
    own = secured.get("/api/metrics/11", params=QUERY, headers=bearer(PORTAL_TOKEN))
    assert own.status_code == 200 and own.json()["points"]
    other = secured.get("/api/metrics/12", params=QUERY, headers=bearer(PORTAL_TOKEN))
    assert other.status_code == 403
    assert other.json()["parameter"] == "billerId" and "12" in other.json()["detail"]
    assert "points" not in other.text
    # A biller without data is refused the same way: a 404 would tell it exists or not.
    assert (
        secured.get("/api/metrics/999", params=QUERY, headers=bearer(PORTAL_TOKEN)).status_code
        == 403
    )
    assert secured.get("/api/billers", headers=bearer(PORTAL_TOKEN)).json()["billers"] == [11]


def test_a_star_token_reads_every_biller(secured):
    for biller in (11, 12):
        response = secured.get(f"/api/metrics/{biller}", params=QUERY, headers=bearer(ADMIN_TOKEN))
        assert response.status_code == 200 and response.json()["points"]
    assert (
        secured.get("/api/metrics/999", params=QUERY, headers=bearer(ADMIN_TOKEN)).status_code
        == 404
    )
    assert secured.get("/api/billers", headers=bearer(ADMIN_TOKEN)).json()["billers"] == [11, 12]


def test_health_page_and_spec_need_no_token(secured):
    assert secured.get("/api/health").status_code == 200
    assert secured.get("/openapi.json").status_code == 200
    page = secured.get("/")
    assert page.status_code == 200 and 'data-auth-required="true"' in page.text


def test_open_mode_serves_loopback_clients_only(sqlite_warehouse):
    app = create_app(ApiSettings(warehouse_url=sqlite_warehouse.url))
    for address, status in ((LOOPBACK_CLIENT, 200), (("::1", 1), 200), (("192.168.1.9", 1), 401)):
        with TestClient(app, client=address) as c:
            assert c.get("/api/metrics/11", params=QUERY).status_code == status, address
            assert c.get("/api/billers").status_code == status, address


def test_serve_refuses_an_open_api_on_a_non_loopback_host(sqlite_warehouse, tokens_file):
    open_env = {"METRICS_WAREHOUSE_URL": sqlite_warehouse.url}
    with pytest.raises(ConfigurationError, match="METRICS_API_TOKENS_FILE"):
        serve("0.0.0.0", 1, open_env)
    with pytest.raises(ConfigurationError, match="refusing"):
        check_exposure("192.168.1.5", ApiSettings(warehouse_url=sqlite_warehouse.url))
    check_exposure("127.0.0.1", ApiSettings(warehouse_url=sqlite_warehouse.url))
    check_exposure("localhost", ApiSettings(warehouse_url=sqlite_warehouse.url))
    check_exposure(
        "0.0.0.0", ApiSettings(warehouse_url=sqlite_warehouse.url, tokens_file=str(tokens_file))
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ('{"name": "x"}', "JSON list"),
        ('[{"sha256": "' + "a" * 64 + '", "billers": "*"}]', "'name'"),
        ('[{"name": "clear", "sha256": "my-secret-token", "billers": "*"}]', "64 hex digits"),
        ('[{"name": "x", "sha256": "' + "a" * 64 + '", "billers": "all"}]', "'billers'"),
        ('[{"name": "x", "sha256": "' + "a" * 64 + '", "billers": ["11"]}]', "'billers'"),
        (
            '[{"name": "x", "sha256": "' + "a" * 64 + '", "billers": [1]},'
            ' {"name": "y", "sha256": "' + "A" * 64 + '", "billers": [2]}]',
            "twice",
        ),
    ],
)
def test_a_malformed_tokens_file_is_a_configuration_error(tmp_path, content, message):
    path = tmp_path / "tokens.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        load_tokens(path)


def test_a_missing_tokens_file_stops_the_app(tmp_path, sqlite_warehouse):
    with pytest.raises(ConfigurationError, match="cannot read"):
        create_app(
            ApiSettings(
                warehouse_url=sqlite_warehouse.url, tokens_file=str(tmp_path / "absent.json")
            )
        )


def test_tokens_file_keeps_digests_only(tokens_file):
    text = tokens_file.read_text()
    assert PORTAL_TOKEN not in text and ADMIN_TOKEN not in text
    principals = load_tokens(tokens_file)
    assert principals[token_digest(PORTAL_TOKEN)].billers == frozenset({11})
    assert principals[token_digest(ADMIN_TOKEN)].billers is None
    assert json.loads(text)[0]["sha256"] == token_digest(PORTAL_TOKEN)
