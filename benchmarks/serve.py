"""Throughput of `mumo serve` on loopback: POST /embed/text with the batching engine and without it, or
POST /caption with fp32 and int8 weights.

    python -m benchmarks.serve [--model clip_conv_mini_64] [--clients 1 8 32] [--requests 400]
    python -m benchmarks.serve --caption [--checkpoint runs/coca] [--precisions fp32 int8]

The server runs as its own process (`mumo serve`, 2 torch threads by default); each client is a thread
sending one-text (or one-image) requests back to back over a keep-alive connection. Every setting sends
``--requests`` requests in all (a bounded run, not a timed one), and prints requests/s and latency
percentiles. ``--max-batch 1`` turns batching off: each request is its own forward pass. ``--caption``
posts one PNG of a built-in scene per request to a captioner: a trained one (``--checkpoint``), since a
caption's length (where the model stops) sets its cost, or a random-init ``coca_conv_mini_64``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_folder(name: str, root: Path) -> Path:
    import mumo
    from mumo.data.shapes import ShapesConfig, captions, generate_scene
    from mumo.data.tokenizer import Tokenizer

    texts = [c for i in range(500) for c in captions(generate_scene(ShapesConfig(), "train", i))]
    tokenizer = Tokenizer.train(texts, vocab_size=1000)
    model = mumo.create_model(name, seed=0, **{"text.vocab_size": tokenizer.vocab_size})
    return mumo.save_pretrained(model, root / "model", tokenizer=tokenizer)


def _scene_png() -> bytes:
    """A PNG of one built-in test scene (64 px)."""
    import io

    from PIL import Image

    from mumo.data.shapes import ShapesConfig, generate_scene, render

    out = io.BytesIO()
    Image.fromarray(render(generate_scene(ShapesConfig(), "test", 0), 64)).save(out, format="PNG")
    return out.getvalue()


def _multipart(png: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "mumo-benchmark-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="scene.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _start(model: Path, port: int, max_batch: int, precision: str = "fp32") -> subprocess.Popen:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mumo",
            "serve",
            str(model),
            "--port",
            str(port),
            "--max-batch",
            str(max_batch),
            "--precision",
            precision,
        ],
        env={**os.environ, "OMP_NUM_THREADS": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(600):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not start: {server.stderr.read().decode()[-2000:]}")


def _load(port: int, clients: int, requests: int, png: bytes | None = None) -> tuple[float, list[float]]:
    """Send ``requests`` one-text requests (one-image /caption ones with ``png``) from ``clients`` threads;
    (requests/s, latencies in ms)."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(n: int, seed: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        own = []
        for i in range(n):
            if png is None:
                body = json.dumps({"texts": [f"a red circle above a blue star number {seed}-{i}"]}).encode()
                path, headers = "/embed/text", {"Content-Type": "application/json"}
            else:
                (body, headers), path = _multipart(png), "/caption"
            start = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            own.append(1000 * (time.perf_counter() - start))
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=client, args=(n, i)) for i, n in enumerate(per_client)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return requests / (time.perf_counter() - start), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clip_conv_mini_64", help="random-init model (no --checkpoint)")
    parser.add_argument("--checkpoint", default=None, help="serve this model or run folder instead")
    parser.add_argument("--caption", action="store_true", help="POST /caption instead of /embed/text")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--max-batch", type=int, nargs="+", default=[32, 1])
    parser.add_argument("--precisions", nargs="+", default=["fp32"], help="--precision of each server")
    args = parser.parse_args()
    if args.caption and args.checkpoint is None and args.model == "clip_conv_mini_64":
        args.model = "coca_conv_mini_64"
    png = _scene_png() if args.caption else None
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.checkpoint) if args.checkpoint else _model_folder(args.model, Path(tmp))
        what = "POST /caption, one image" if args.caption else "POST /embed/text, one text"
        print(f"{what} per request, {args.requests} requests per row; {args.checkpoint or args.model}")
        print("| precision | engine max_batch | clients | requests/s | p50 latency | p95 latency |")
        print("|---|---|---|---|---|---|")
        for precision in args.precisions:
            for max_batch in args.max_batch:
                port = _free_port()
                server = _start(model, port, max_batch, precision)
                try:
                    _load(port, 4, 40, png)  # warm-up
                    for clients in args.clients:
                        rate, lat = _load(port, clients, args.requests, png)
                        q = statistics.quantiles(lat, n=20)
                        print(
                            f"| {precision} | {max_batch} | {clients} | {rate:.0f} | {q[9]:.1f} ms "
                            f"| {q[18]:.1f} ms |"
                        )
                finally:
                    server.terminate()
                    server.wait(timeout=20)


if __name__ == "__main__":
    main()
