"""Search latency of the image index (``mumo.serve.index``) at 10k and 100k vectors: exact FAISS inner
product, IVF, and a plain torch ``matmul + topk`` for reference.

    python -m benchmarks.search [--sizes 10000 100000] [--dim 256] [--queries 200] [--threads 1]

Vectors are unit-normalised draws around 1,000 random centres (image embeddings cluster by content; uniform
random vectors would be IVF's worst case and nobody's data). One query at a time (an interactive search),
median over ``--queries`` queries; recall@10 of IVF against the exact result.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from benchmarks._common import setup
from mumo.serve.index import build_faiss


def _vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(1000, dim, generator=g)
    points = centres[torch.randint(0, 1000, (n,), generator=g)] + 0.5 * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(points, dim=-1).numpy()


def _latency_ms(search, queries: np.ndarray) -> float:
    times = []
    for q in queries:
        start = time.perf_counter()
        search(q[None])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    setup(threads=args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    print(
        f"{args.dim}-d unit vectors, one query at a time, median of {args.queries}; {args.threads} thread(s)"
    )
    head = ["vectors", "exact (IndexFlatIP)", "IVF (nprobe 16)", "IVF recall@10", "torch matmul + topk"]
    print("| " + " | ".join([*head, "IVF build"]) + " |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        data = _vectors(n, args.dim)
        queries = _vectors(args.queries, args.dim, seed=1)
        exact = build_faiss(data, ivf_threshold=n + 1)
        start = time.perf_counter()
        ivf = build_faiss(data, ivf_threshold=1)
        build = time.perf_counter() - start
        matrix = torch.from_numpy(data)

        def brute(q: np.ndarray, matrix: torch.Tensor = matrix) -> None:
            torch.topk(matrix @ torch.from_numpy(q)[0], 10)

        _, want = exact.search(queries, 10)
        _, got = ivf.search(queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got, strict=True)])
        row = [
            f"{_latency_ms(lambda q, index=exact: index.search(q, 10), queries):.2f} ms",
            f"{_latency_ms(lambda q, index=ivf: index.search(q, 10), queries):.3f} ms (nlist {ivf.nlist})",
            f"{recall:.3f}",
            f"{_latency_ms(brute, queries):.2f} ms",
            f"{build:.1f} s",
        ]
        print(f"| {n:,} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
