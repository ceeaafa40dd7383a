"""Batched inference for the server: many request threads, one model thread.

Requests (embed texts, embed images, caption images, zero-shot labels) are queued; one worker thread owns
the model and takes up to ``max_batch`` queued items of one kind at a time (optionally waiting
``max_wait_ms`` for more), so concurrent requests share forward passes instead of fighting over the CPU's
cores.

    engine = Engine(model, tokenizer)
    vectors = engine.embed_texts(["a red circle"])     # (1, E), from any thread
    engine.close()
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mumo.errors import DataError
from mumo.generation import GenerationConfig, caption_images
from mumo.inference import embed_images, embed_texts, model_device, zero_shot_probs
from mumo.models import capabilities


@dataclass
class _Job:
    kind: str  # "text", "image", "caption" or "zero_shot"
    items: list[Any]  # texts, (3, H, W) image tensors, or (image, labels, templates) for zero-shot
    future: Future = field(default_factory=Future)


class Engine:
    """Runs ``model`` for many callers in batches (see the module docstring).

    Args:
        model: a dual encoder (``encode_image`` / ``encode_text``) and/or a captioner.
        tokenizer: the model's tokenizer.
        max_batch: most items per forward pass.
        max_wait_ms: how long the worker waits for more items before running a partial batch. The default 0
            takes what is queued when the worker gets to it: an idle server answers at once, and requests
            arriving while a batch runs form the next one.
        generation: settings of generated captions (``GenerationConfig``; default greedy, 32 tokens).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        generation: Any = None,
    ) -> None:

        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.generation = generation or GenerationConfig()
        can = capabilities(model)
        self.can_caption, self.can_embed = "caption" in can, "embed" in can
        self.image_size = getattr(model, "image_size", None)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._held: deque[_Job] = deque()  # taken from the queue, but of another kind than the batch
        self._worker = threading.Thread(target=self._run, name="mumo-engine", daemon=True)
        self._worker.start()
        self.batches = 0  # forward passes run (for tests and the benchmark)

    # ------------------------------------------------------------------------------------- callers

    def embed_texts(self, texts: list[str]) -> Tensor:
        """(N, E) unit embeddings of ``texts``."""
        self._need(self.can_embed, "embed texts")
        return torch.stack(self._submit("text", list(texts)))

    def embed_images(self, images: Tensor) -> Tensor:
        """(N, E) unit embeddings of normalised (N, 3, H, W) images."""
        self._need(self.can_embed, "embed images")
        return torch.stack(self._submit("image", list(images)))

    def caption(self, images: Tensor) -> list[str]:
        """A generated caption per normalised (N, 3, H, W) image."""
        self._need(self.can_caption, "caption images")
        return self._submit("caption", list(images))

    def zero_shot(
        self, image: Tensor, labels: list[str], templates: tuple[str, ...] = ("{}",)
    ) -> list[float]:
        """Probabilities over ``labels`` for one normalised (3, H, W) image, exactly as the CLI and the
        evaluation compute them (:func:`mumo.inference.zero_shot_probs`: labels as typed by default, the
        model's own temperature). It runs whole in the worker, so the model is only ever used by that thread;
        concurrent requests share the image forward pass."""
        self._need(self.can_embed, "classify images zero-shot")
        return self._submit("zero_shot", [(image, list(labels), tuple(templates))])[0]

    def close(self) -> None:
        """Stop the worker once the queued work is done."""
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _need(self, can: bool, what: str) -> None:
        if not can:
            raise DataError(f"this model ({type(self.model).__name__}) cannot {what}")

    def _submit(self, kind: str, items: list[Any]) -> list[Any]:
        """Queue items (split into batches of at most ``max_batch``) and wait for the results, in order."""
        jobs = [_Job(kind, items[i : i + self.max_batch]) for i in range(0, len(items), self.max_batch)]
        for job in jobs:
            self._queue.put(job)
        return [r for job in jobs for r in job.future.result()]

    # ------------------------------------------------------------------------------------- worker

    def _next(self, timeout: float | None) -> _Job | None:
        if self._held:
            return self._held.popleft()
        return (
            self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        )

    def _run(self) -> None:
        import time

        while True:
            first = self._next(None)
            if first is None:
                return
            batch, size = [first], len(first.items)
            deadline = time.perf_counter() + self.max_wait
            others: list[_Job] = []
            while size < self.max_batch:
                try:
                    job = self._next(deadline - time.perf_counter())
                except queue.Empty:
                    break
                if job is None:  # close(): finish this batch first
                    self._queue.put(None)
                    break
                if job.kind == first.kind and size + len(job.items) <= self.max_batch:
                    batch.append(job)
                    size += len(job.items)
                else:
                    others.append(job)
            self._held.extend(others)
            try:
                results = self._forward(first.kind, [x for job in batch for x in job.items])
            except Exception as e:  # noqa: BLE001 - handed to the callers, the worker lives on
                for job in batch:
                    job.future.set_exception(e)
                continue
            start = 0
            for job in batch:
                job.future.set_result(results[start : start + len(job.items)])
                start += len(job.items)

    def _forward(self, kind: str, items: list[Any]) -> list[Any]:
        """One forward pass over a batch of one kind: the evaluation's own embedding and captioning."""

        self.batches += 1
        if kind == "text":
            return list(embed_texts(self.model, self.tokenizer, items, batch_size=len(items)).cpu())
        if kind == "zero_shot":  # one image pass for the batch, then each request's own labels
            embeds = embed_images(self.model, torch.stack([x[0] for x in items]), batch_size=len(items))
            return [
                zero_shot_probs(self.model, self.tokenizer, embeds[i : i + 1], labels, templates)[0].tolist()
                for i, (_, labels, templates) in enumerate(items)
            ]
        images = torch.stack(items)
        if kind == "image":
            return list(embed_images(self.model, images, batch_size=len(items)).cpu())
        return caption_images(
            self.model, self.tokenizer, images.to(model_device(self.model)), self.generation
        )
