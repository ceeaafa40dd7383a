"""Throughput of `mumo serve` for POST /embed/text on loopback, with the batching engine and without it.

    python -m benchmarks.serve [--model clip_conv_mini_64] [--clients 1 8 32] [--requests 400]

The server runs as its own process (`mumo serve`, 2 torch threads by default); each client is a thread
sending one-text requests back to back over a keep-alive connection. Every setting sends ``--requests``
requests in all (a bounded run, not a timed one), and prints requests/s and latency percentiles.
``--max-batch 1`` turns batching off: each request is its own forward pass.
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


def _start(model: Path, port: int, max_batch: int) -> subprocess.Popen:
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


def _load(port: int, clients: int, requests: int) -> tuple[float, list[float]]:
    """Send ``requests`` one-text requests from ``clients`` threads; (requests/s, latencies in ms)."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(n: int, seed: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        own = []
        for i in range(n):
            body = json.dumps({"texts": [f"a red circle above a blue star number {seed}-{i}"]})
            start = time.perf_counter()
            conn.request("POST", "/embed/text", body=body, headers={"Content-Type": "application/json"})
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
    parser.add_argument("--model", default="clip_conv_mini_64")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--max-batch", type=int, nargs="+", default=[32, 1])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = _model_folder(args.model, Path(tmp))
        print(f"POST /embed/text, one text per request, {args.requests} requests per row; {args.model}")
        print("| engine max_batch | clients | requests/s | p50 latency | p95 latency |")
        print("|---|---|---|---|---|")
        for max_batch in args.max_batch:
            port = _free_port()
            server = _start(model, port, max_batch)
            try:
                _load(port, 4, 40)  # warm-up
                for clients in args.clients:
                    rate, lat = _load(port, clients, args.requests)
                    q = statistics.quantiles(lat, n=20)
                    print(f"| {max_batch} | {clients} | {rate:.0f} | {q[9]:.1f} ms | {q[18]:.1f} ms |")
            finally:
                server.terminate()
                server.wait(timeout=20)


if __name__ == "__main__":
    main()
