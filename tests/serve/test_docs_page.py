"""The API page at /docs is served from this server's own files (no CDN: it works offline), only the listed
files under /static/ are reachable, and /healthz tells the page what the model can do."""

import json
import re
import urllib.error
import urllib.request

import pytest

from mumo.serve.app import create_app
from mumo.serve.engine import Engine


@pytest.fixture(scope="module")
def clip_server(serving, clip_and_tokenizer, free_port):
    """The base URL of a server over a tiny CLIP (embeddings, no decoder) without an index."""
    engine = Engine(*clip_and_tokenizer, max_batch=4)
    port = free_port()
    try:
        with serving(create_app(engine), port):
            yield f"http://127.0.0.1:{port}"
    finally:
        engine.close()


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("content-type", "")


def test_docs_loads_only_files_of_this_server(clip_server):
    status, page, ctype = _get(clip_server + "/docs")
    assert status == 200 and "text/html" in ctype
    html = page.decode()
    assert "Content-Security-Policy" in html and "unsafe-eval" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) == 3 and all(a.startswith("/static/") for a in assets), assets  # no CDN
    types = {}
    for asset in assets:
        status, data, ctype = _get(clip_server + asset)
        assert status == 200 and len(data) > 100, asset
        types[asset.rsplit(".", 1)[1]] = ctype
    assert types["js"].startswith("text/javascript") and types["css"].startswith("text/css")


@pytest.mark.parametrize(
    "path", ["/static/index.html", "/static/swagger-ui/LICENSE", "/static/../app.py", "/static/", "/redoc"]
)
def test_only_the_listed_static_files_are_served(clip_server, path):
    assert _get(clip_server + path)[0] == 404


def test_healthz_tells_what_a_clip_can_do(clip_server):
    status, body, _ = _get(clip_server + "/healthz")
    health = json.loads(body)
    assert status == 200
    assert health["capabilities"] == ["embed"]
    assert (health["embed"], health["caption"], health["search"]) == (True, False, False)
