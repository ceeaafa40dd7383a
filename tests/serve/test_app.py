"""The HTTP server on loopback: every endpoint works, and bad input gets 413 / 415 / 422 with a JSON reason,
never a 500, with the server answering /healthz after each; a foreign Host is 421, a cross-site post 403, and
only files under the indexed folder are ever served."""

import http.client
import io
import json
import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image

import mumo
from mumo.data.shapes import ShapesConfig, write_shapes
from mumo.data.tokenizer import Tokenizer
from mumo.serve.app import Limits, create_app
from mumo.serve.engine import Engine
from mumo.serve.index import ImageIndex, update_index

LIMITS = Limits(max_body_bytes=2 * 2**20, max_pixels=4_000_000, max_pixels_in_flight=8_000_000)


@pytest.fixture(scope="module")
def server(serving, tmp_path_factory, free_port):
    """A uvicorn server on 127.0.0.1 over a tiny random CoCa (embeddings + captions) and an index."""
    root = tmp_path_factory.mktemp("serve")
    tokenizer = Tokenizer.train(["a red circle", "a blue star above a green square"] * 20, vocab_size=300)
    model = mumo.create_model(
        "captioner_conv_tiny", seed=0, contrastive=True, **{"text.vocab_size": tokenizer.vocab_size}
    )
    mumo.save_pretrained(model, root / "model", tokenizer=tokenizer)
    tokenizer.context_length = model.context_length
    images = write_shapes(root / "shapes", 12, config=ShapesConfig(image_size=32)) / "images"
    update_index(model, root / "model", images, root / "index")
    engine = Engine(model, tokenizer, max_batch=16, max_wait_ms=20)
    port = free_port()
    with serving(create_app(engine, ImageIndex(root / "index"), LIMITS), port):
        yield {"port": port, "engine": engine, "images": images, "root": root}
    engine.close()


def _request(server, method, path, body=None, headers=None):
    """(status, body, content type); a ``Host`` in ``headers`` replaces the one http.client would send."""
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data, response.getheader("content-type") or ""


def _json(server, method, path, payload=None):
    body = json.dumps(payload) if payload is not None else None
    status, data, _ = _request(server, method, path, body, {"Content-Type": "application/json"})
    return status, json.loads(data)


def _multipart(fields: dict[str, tuple[str, bytes, str] | str]) -> tuple[bytes, str]:
    boundary = "mumo-test-boundary"
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data, ctype = value
            disposition = f'form-data; name="{name}"; filename="{filename}"'
            head = f"Content-Disposition: {disposition}\r\nContent-Type: {ctype}"
        else:
            head, data = f'Content-Disposition: form-data; name="{name}"', value.encode()
        parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _upload(server, path, image: bytes, filename="x.png", headers=None, **fields):
    body, ctype = _multipart({"image": (filename, image, "image/png"), **fields})
    status, data, _ = _request(server, "POST", path, body, {"Content-Type": ctype, **(headers or {})})
    return status, json.loads(data)


def _png(size=(32, 32), color=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _alive(server):
    status, body = _json(server, "GET", "/healthz")
    assert status == 200 and body["status"] == "ok"


def test_endpoints(server):
    status, health = _json(server, "GET", "/healthz")
    assert health == {
        "status": "ok",
        "model": "Captioner",
        "capabilities": ["caption", "embed", "generate"],
        "embed": True,
        "caption": True,
        "search": True,
        "indexed": 12,
    }
    status, body = _json(server, "POST", "/embed/text", {"texts": ["a red circle", "a blue star"]})
    vectors = torch.tensor(body["embeddings"])
    assert status == 200 and vectors.shape == (2, 32)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(2))
    status, body = _upload(server, "/embed/image", _png())
    assert status == 200 and len(body["embedding"]) == 32
    status, body = _upload(server, "/zero-shot", _png(), labels="red circle\nblue square, green star")
    assert status == 200 and [x["label"] for x in body["labels"]].count("blue square") == 1
    assert len(body["labels"]) == 3 and abs(sum(x["probability"] for x in body["labels"]) - 1) < 1e-5
    status, body = _upload(server, "/caption", _png())
    assert status == 200 and isinstance(body["caption"], str)
    status, body = _json(server, "GET", "/search?q=a%20red%20circle&k=5")
    assert status == 200 and len(body["results"]) == 5
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    status, data, ctype = _request(server, "GET", body["results"][0]["url"])
    assert status == 200 and ctype == "image/png" and data[:4] == b"\x89PNG"
    assert _request(server, "GET", "/images/999")[0] == 404
    status, data, ctype = _request(server, "GET", "/")
    assert status == 200 and "text/html" in ctype and b'<script src="/app.js">' in data
    schema = json.loads(_request(server, "GET", "/openapi.json")[1])
    assert {"/embed/text", "/embed/image", "/zero-shot", "/caption", "/search", "/healthz"} <= set(
        schema["paths"]
    )


@pytest.mark.parametrize(
    "host,answer",
    [("127.0.0.1", "413 .* at most 2,097,152 bytes"), ("evil.example", "421 .* --allow-host evil.example")],
)
def test_a_50_mb_body_is_refused_before_it_is_read(server, host, answer):
    # the host check runs first (a stranger's body is never read), the body limit then (413 for the rest)
    size = 50 * 2**20
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=30) as s:
        head = f"POST /embed/image HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n\r\n"
        s.sendall(head.encode())
        try:
            for _ in range(50):
                s.sendall(b"\0" * 2**20)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: what we want
        response = s.recv(65536).decode(errors="replace")
    assert re.match(f"HTTP/1.1 {answer}", response, re.DOTALL), response[:300]
    _alive(server)


def test_a_chunked_body_without_length_is_cut_at_the_limit(server):
    def chunks():
        for _ in range(8):  # 8 MiB, no Content-Length
            yield b"\0" * 2**20

    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=30)
    try:
        conn.request(
            "POST",
            "/embed/text",
            body=chunks(),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = conn.getresponse()
    assert response.status == 413 and "at most" in json.loads(response.read())["detail"]
    conn.close()
    _alive(server)


def test_an_html_file_named_jpg_is_415(server):
    status, body = _upload(server, "/embed/image", b"<html><body>hello</body></html>", filename="cat.jpg")
    assert status == 415 and "not an image" in body["detail"]
    _alive(server)


def test_a_decompression_bomb_is_refused_before_decoding(server):
    buffer = io.BytesIO()
    Image.new("1", (14_000, 14_000)).save(buffer, format="PNG")  # 196 M pixels in a few tens of KB
    assert len(buffer.getvalue()) < LIMITS.max_body_bytes
    status, body = _upload(server, "/zero-shot", buffer.getvalue(), labels="a")
    assert status in (413, 422) and "pixels" in body["detail"]
    _alive(server)


@pytest.mark.parametrize(
    "texts",
    [
        ["\ud800 lone surrogate", "nul \x00 byte", "\u202eright-to-left", "zalgo a\u0301\u0302\u0303\u0304"],
        ["🦄" * 500, "", "\ufeff\u200b\u200d", "a\r\nb\tc"],
    ],
)
def test_unicode_junk_is_handled(server, texts):
    status, body = _json(server, "POST", "/embed/text", {"texts": texts})
    assert status == 200 and len(body["embeddings"]) == len(texts)
    status, body = _json(server, "GET", "/search?q=%ED%A0%80%F0%9F%A6%84&k=3")  # invalid UTF-8, then 🦄
    assert status == 200 and len(body["results"]) == 3
    _alive(server)


@pytest.mark.parametrize(
    "path,payload,status",
    [
        ("/embed/text", {"texts": ["x" * 2001]}, 422),
        ("/embed/text", {"texts": ["a"] * 65}, 422),
        ("/embed/text", {"texts": []}, 422),
        ("/embed/text", {"text": "no list"}, 422),
        ("/embed/text", "not an object", 422),
        ("/search?q=&k=3", None, 422),
        ("/search?q=a&k=0", None, 422),
        ("/search?q=a&k=lots", None, 422),
    ],
)
def test_bad_values_are_422_with_a_reason(server, path, payload, status):
    method = "POST" if payload is not None else "GET"
    got, body = _json(server, method, path, payload)
    assert got == status and body["detail"]
    _alive(server)


def test_bad_uploads(server):
    assert _upload(server, "/embed/image", b"")[0] == 422  # empty
    truncated = _png((64, 64))[:60]
    status, body = _upload(server, "/embed/image", truncated)
    assert status == 422 and "damaged" in body["detail"]
    assert _upload(server, "/zero-shot", _png(), labels=" \n ,")[0] == 422  # no labels
    status, data, _ = _request(
        server, "POST", "/embed/text", b"\xff\xfe{not json", {"Content-Type": "application/json"}
    )
    assert status == 422 and json.loads(data)["detail"]
    _alive(server)


def test_concurrent_requests_share_forward_passes(server):
    engine = server["engine"]
    before = engine.batches
    with ThreadPoolExecutor(16) as pool:
        results = list(
            pool.map(lambda i: _json(server, "POST", "/embed/text", {"texts": [f"text {i}"]}), range(32))
        )
    assert all(status == 200 for status, _ in results)
    assert engine.batches - before < 32  # batched: fewer forward passes than requests


@pytest.mark.parametrize("path", ["/search?q=a", "/images/0", "/healthz", "/"])
def test_a_foreign_host_is_421(server, path):
    # a DNS-rebinding page reaches 127.0.0.1 under its own name: its Host header gives it away
    for host in ("evil.example", f"evil.example:{server['port']}", "127.0.0.1.evil.example", "[::2]:80"):
        status, data, ctype = _request(server, "GET", path, headers={"Host": host})
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else "::2"
        assert (status, ctype) == (421, "application/json"), host
        assert f"start it with --allow-host {name}" in json.loads(data)["detail"]
    for host in (f"127.0.0.1:{server['port']}", "localhost", "LocalHost:1", "[::1]:8000", "localhost."):
        assert _request(server, "GET", path, headers={"Host": host})[0] == 200, host


def test_cross_site_posts_are_403(server):
    port = server["port"]
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": f"http://evil.example:{port}"},
        {"Origin": "null"},  # a sandboxed frame or a file:// page
        {"Origin": "not a url"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "cross-site"},
    ):
        status, body = _upload(server, "/zero-shot", _png(), headers=headers, labels="red, blue")
        assert status == 403 and "cross-site" in body["detail"], headers
        status, data, _ = _request(server, "POST", "/embed/text", b'{"texts": ["a"]}', headers)
        assert status == 403, headers
    for headers in (
        {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"},  # the page itself
        {"Origin": "http://localhost:5173"},  # another port of a loopback name
        {"Sec-Fetch-Site": "same-site"},
        {},  # curl, Python: no Origin
    ):
        status, body = _upload(server, "/zero-shot", _png(), headers=headers, labels="red, blue")
        assert status == 200 and len(body["labels"]) == 2, headers
    # reading is refused by the browser itself (no CORS headers), so a GET with a foreign Origin is served
    status, data, _ = _request(server, "GET", "/search?q=a&k=1", headers={"Origin": "http://evil.example"})
    assert status == 200


def test_allow_host_adds_names(serving, server, free_port, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from mumo.cli import app as cli

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    model = str(server["root"] / "model")
    args = ["--host", "192.0.2.7", "--allow-host", "mumo.lan", "--allow-host", "Photos.Example."]
    result = CliRunner().invoke(cli, ["serve", model, *args])
    assert result.exit_code == 0, result.output
    port = free_port()
    with serving(started["app"], port):
        for host, status in [
            ("mumo.lan", 200),
            (f"photos.example:{port}", 200),
            ("192.0.2.7:8000", 200),  # the address it was told to listen on
            ("127.0.0.1", 200),
            ("evil.example", 421),
        ]:
            assert _request({"port": port}, "GET", "/healthz", headers={"Host": host})[0] == status, host
        # the origin check uses the same names (422: past the check, an empty list of texts)
        for origin, status in [("http://mumo.lan:8000", 422), ("https://evil.example", 403)]:
            headers = {"Origin": origin, "Content-Type": "application/json"}
            assert _request({"port": port}, "POST", "/embed/text", b'{"texts": []}', headers)[0] == status


def test_only_files_under_the_indexed_folder_are_served(serving, server, tmp_path, free_port):
    # a crafted manifest.jsonl (the index folder is just files) names files outside the indexed folder
    gallery = shutil.copytree(server["images"], tmp_path / "images")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nSECRET")
    (gallery / "link.png").symlink_to(secret)  # a symlink inside the folder that escapes it
    (gallery / "alias.png").symlink_to(gallery / sorted(p.name for p in gallery.iterdir())[0])  # stays inside
    (gallery / "page.html").write_text("<script>fetch('/search?q=a')</script>")  # inside, but no image
    index = shutil.copytree(server["root"] / "index", tmp_path / "index")
    meta = json.loads((index / "index.json").read_text())
    (index / "index.json").write_text(json.dumps({**meta, "images_dir": str(gallery)}))
    rows = [json.loads(line) for line in (index / "manifest.jsonl").read_text().splitlines()]
    deleted = gallery / rows[8]["path"]
    refused = ["../secret.png", "../../../../../../../etc/passwd", str(secret), "/etc/passwd", "link.png"]
    refused += ["x/../../secret.png", "page.html", "nothing-here.png", deleted.name]
    for row, path in zip(rows, refused + ["alias.png"], strict=False):
        row["path"] = path
    (index / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    deleted.unlink()  # deleted since indexing
    port = free_port()
    with serving(create_app(server["engine"], ImageIndex(index), LIMITS), port):
        for row, path in enumerate(refused):
            status, data, ctype = _request({"port": port}, "GET", f"/images/{row}")
            assert (status, ctype) == (404, "application/json"), path
            assert b"SECRET" not in data and b"root:" not in data and b"script" not in data
        for row in (len(refused), len(refused) + 1):  # the symlink that stays inside; an ordinary row
            status, data, ctype = _request({"port": port}, "GET", f"/images/{row}")
            assert status == 200 and ctype == "image/png" and data[:4] == b"\x89PNG", row


def test_zero_shot_is_one_function_for_the_cli_the_server_and_the_library(
    serving, tmp_path, free_port, monkeypatch
):
    import math

    from typer.testing import CliRunner

    import mumo.inference
    from mumo.cli import app as cli
    from mumo.data.pairs import load_rgb
    from mumo.data.transforms import eval_transform
    from mumo.eval import embed_images
    from mumo.eval.zero_shot import zero_shot_probs

    # a model whose own temperature is 14.3, not the 100 the server once assumed
    tokenizer = Tokenizer.train(["a red circle", "a blue star above a green square"] * 20, vocab_size=300)
    model = mumo.create_model("clip_conv_tiny", seed=0, **{"text.vocab_size": tokenizer.vocab_size}).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(14.3))
    mumo.save_pretrained(model, tmp_path / "model", tokenizer=tokenizer)
    tokenizer.context_length = model.context_length
    image = write_shapes(tmp_path / "shapes", 1, config=ShapesConfig(image_size=48)) / "images" / "000000.png"
    labels = ["red circle", "a blue star", "green square"]

    pixels = eval_transform(model.image_size)(load_rgb(image))[None]
    library = zero_shot_probs(model, tokenizer, embed_images(model, pixels), labels)[0]
    scaled = 14.3 * embed_images(model, pixels) @ mumo.eval.build_classifier(model, tokenizer, labels, ["{}"])
    torch.testing.assert_close(library, scaled.softmax(dim=-1)[0], atol=1e-6, rtol=0)  # labels as typed

    seen = []  # what the CLI computed, before it rounded the numbers for printing
    spy = lambda *a, **kw: seen.append(zero_shot_probs(*a, **kw)) or seen[-1]  # noqa: E731
    monkeypatch.setattr(mumo.inference, "zero_shot_probs", spy)  # where the CLI finds it
    args = ["zero-shot", str(tmp_path / "model"), str(image), "--labels", ",".join(labels)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    printed = {line.split(maxsplit=1)[1]: float(line.split()[0]) for line in lines}
    assert len(seen) == 1
    torch.testing.assert_close(seen[0][0], library, atol=1e-5, rtol=0)
    assert printed == pytest.approx(dict(zip(labels, library.tolist(), strict=True)), abs=6e-4)

    engine = Engine(model, tokenizer, max_batch=8)
    port = free_port()
    try:
        with serving(create_app(engine, None, LIMITS), port):
            status, body = _upload({"port": port}, "/zero-shot", image.read_bytes(), labels="\n".join(labels))
    finally:
        engine.close()
    assert status == 200
    served = {x["label"]: x["probability"] for x in body["labels"]}
    assert served == pytest.approx(dict(zip(labels, library.tolist(), strict=True)), abs=1e-5)
