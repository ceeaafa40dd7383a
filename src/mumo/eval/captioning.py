"""Caption and answer quality: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D with pycocoevalcap's scorers (the
numbers papers report), attribute accuracy of captions of the built-in data, VQA exact match, perplexity.

Captions are tokenized as the COCO toolkit's PTB tokenizer does for plain English (lower case, punctuation
split off and dropped) without needing Java; :func:`caption_metrics` can use the real PTB tokenizer
(``tokenize='ptb'``) where Java exists, and the tests check that both agree on captions like ours.

METEOR is pycocoevalcap's own ``Meteor``: ``java -jar meteor-1.5.jar`` in a subprocess, whose start
(a JVM loading its paraphrase table) takes seconds. Policy: by default it is computed when Java is on the
PATH and skipped with one logged line otherwise, so that evaluation keeps working on machines without
Java (CI, laptops) and the other metrics never wait for a JVM they do not need; ``meteor=True`` asks for
it (a one-line :class:`~mumo.errors.ProgramError` naming the package to install when Java is missing),
``meteor=False`` turns it off. SPICE stays out: it downloads Stanford CoreNLP on first use.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mumo.data.shapes import (
    QUESTION_KINDS,
    Scene,
    ShapesConfig,
    ShapesDataset,
    attribute_names,
    captions,
    parse_caption,
    questions,
    scene_attributes,
)
from mumo.data.shapes import ParsedCaption as ParsedCaption  # moved to data.shapes; kept here for one release
from mumo.data.text import TokenCollate
from mumo.data.tokenizer import Tokenizer
from mumo.data.transforms import normalize
from mumo.errors import DataError, ProgramError
from mumo.generation import GenerationConfig, answer_questions, caption_images
from mumo.losses.language import causal_lm_loss

logger = logging.getLogger(__name__)

JAVA_INSTALL = "apt-get install default-jre-headless"  # what a Debian / Ubuntu machine lacks for METEOR

# What the PTB tokenizer drops after splitting (pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS).
_PUNCTUATION = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}


CAPTION_IMAGES = "eval_captions.safetensors"  # a run's example test images, beside their captions in metrics


def simple_tokenize(text: str) -> str:
    """Lower-case, split punctuation off words and drop it, as COCO's PTB tokenizer does for plain text."""
    words = re.findall(r"[\w']+|[^\w\s]+", text.lower().replace("\n", " "))
    return " ".join(w for w in words if w not in _PUNCTUATION)


def _ptb_tokenize(texts: dict[int, list[str]]) -> dict[int, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": t} for t in v] for k, v in texts.items()})


def _use_meteor(meteor: bool | None) -> bool:
    """Whether to compute METEOR: ``meteor`` if given (True without Java is an error), else when Java is
    on the PATH."""
    if meteor is False:
        return False
    if shutil.which("java") is not None:
        return True
    if meteor:
        raise ProgramError(
            f"METEOR runs Java (java -jar meteor-1.5.jar), which is not installed: {JAVA_INSTALL}"
        )
    logger.info(
        "METEOR skipped: Java is not installed (%s); the other caption metrics do not need it", JAVA_INSTALL
    )
    return False


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    """pycocoevalcap's METEOR of tokenized captions; the JVM it starts ends with the scorer."""
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        score, _ = Meteor().compute_score(gts, res)
    except (OSError, ValueError) as e:  # the JVM could not start, or died and answered nothing
        raise ProgramError(
            f"METEOR's Java process gave no score ({e}); check that `java -version` runs"
        ) from e
    return float(score)


def caption_metrics(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    tokenize: str = "simple",
    meteor: bool | None = None,
) -> dict[str, float]:
    """Corpus BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of one predicted caption per image against its
    references, as the COCO caption evaluation computes them.

    Args:
        predictions: N captions.
        references: N lists of reference captions (at least one each).
        tokenize: 'simple' (pure Python) or 'ptb' (Stanford's PTB tokenizer, needs Java).
        meteor: True: compute METEOR (needs Java); False: not; None: when Java is on the PATH (the
            module docstring explains why).

    Returns:
        ``{"BLEU-1": …, "BLEU-4": …, "METEOR": …, "ROUGE-L": …, "CIDEr-D": …}`` (METEOR only when computed);
        CIDEr-D is pycocoevalcap's ``Cider`` (×10 scale, Gaussian length penalty, clipped counts), whose
        document frequencies come from these references; ROUGE-L is its ``Rouge`` (LCS F-measure, β = 1.2).

    Raises:
        DataError: the lists do not pair up, or an image has no reference.
        ProgramError: ``meteor=True`` without Java, or the METEOR process failed.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references) or not predictions:
        raise DataError(
            f"need one prediction per reference list, got {len(predictions)} and {len(references)}"
        )
    if any(len(r) == 0 for r in references):
        raise DataError("every image needs at least one reference caption")
    use_meteor = _use_meteor(meteor)  # before any work: a missing Java is reported at once
    res = {i: [p] for i, p in enumerate(predictions)}
    gts = {i: list(r) for i, r in enumerate(references)}
    if tokenize == "ptb":
        res, gts = _ptb_tokenize(res), _ptb_tokenize(gts)
    elif tokenize == "simple":
        res = {k: [simple_tokenize(t) for t in v] for k, v in res.items()}
        gts = {k: [simple_tokenize(t) for t in v] for k, v in gts.items()}
    else:
        raise DataError(f"tokenize must be 'simple' or 'ptb', got {tokenize!r}")
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)}
    if use_meteor:
        out["METEOR"] = _meteor(gts, res)
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
    return out


def attribute_accuracy(texts: Sequence[str], scenes: Sequence[Scene]) -> dict[str, Any]:
    """How much of each scene its caption gets right.

    Captions are read back with :func:`~mumo.data.shapes.parse_caption` and compared with
    :func:`~mumo.data.shapes.scene_attributes`.

    Returns:
        ``attribute_accuracy``: correct attributes / all attributes; a caption with the wrong number of
        objects, or in no known template, gets none right. "X above Y" and "Y below X" say the same, so a
        pair is scored in whichever order the caption names it;
        ``per_attribute``: the same per kind (size, colour, shape, position of a lone object, relation
        of a pair); ``caption_exact``: captions with every attribute right; ``parsed``: captions in a
        known template.
    """
    hits: dict[str, list[int]] = {}  # kind -> [correct, total]
    exact = parsed_count = 0
    for text, scene in zip(texts, scenes, strict=True):
        truth = scene_attributes(scene)
        parsed = parse_caption(text)
        parsed_count += parsed is not None
        readings = parsed.readings() if parsed is not None else []
        scored = [[a == b for a, b in zip(r, truth, strict=True)] for r in readings if len(r) == len(truth)]
        best = max(scored, key=sum, default=[False] * len(truth))
        for name, ok in zip(attribute_names(len(scene.objects)), best, strict=True):
            pair = hits.setdefault(name, [0, 0])
            pair[0], pair[1] = pair[0] + ok, pair[1] + 1
        exact += all(best)
    n = max(len(texts), 1)
    correct, total = sum(h[0] for h in hits.values()), sum(h[1] for h in hits.values())
    return {
        "attribute_accuracy": correct / max(total, 1),
        "per_attribute": {k: c / t for k, (c, t) in hits.items()},
        "caption_exact": exact / n,
        "parsed": parsed_count / n,
    }


def _scene_batches(config: ShapesConfig, split: str, size: int, batch_size: int) -> Any:
    dataset = ShapesDataset(split, size, config)
    for start in range(0, size, batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, size))]
        yield normalize(torch.stack([it["image"] for it in items])), [it["scene"] for it in items]


@torch.inference_mode()
def evaluate_captions(
    model: nn.Module,
    tokenizer: Tokenizer,
    config: ShapesConfig,
    split: str = "test",
    size: int = 1000,
    generation: GenerationConfig | None = None,
    batch_size: int = 100,
    examples: int = 8,
    meteor: bool | None = None,
) -> dict[str, Any]:
    """Caption ``size`` scenes of ``split`` and score them against all four template captions of each.

    Returns:
        BLEU-1..4, METEOR (``meteor``, as :func:`caption_metrics` takes it), ROUGE-L, CIDEr-D, attribute
        accuracy, exact captions, the fraction that parse, and the first ``examples`` (generated,
        reference) pairs.
    """
    if meteor:
        _use_meteor(meteor)  # a missing Java is reported before the captions are generated, not after
    model.eval()
    generation = generation or GenerationConfig(max_new_tokens=model.context_length)
    predicted, scenes = [], []
    for images, batch_scenes in _scene_batches(config, split, size, batch_size):
        predicted += caption_images(model, tokenizer, images, generation)
        scenes += batch_scenes
    metrics: dict[str, Any] = caption_metrics(predicted, [captions(s) for s in scenes], meteor=meteor)
    metrics.update(attribute_accuracy(predicted, scenes))
    metrics["n"] = len(predicted)
    metrics["examples"] = [
        [p, captions(s)[0]] for p, s in zip(predicted[:examples], scenes[:examples], strict=True)
    ]
    return metrics


@torch.inference_mode()
def evaluate_vqa(
    model: nn.Module,
    tokenizer: Tokenizer,
    config: ShapesConfig,
    split: str = "test",
    size: int = 1000,
    batch_size: int = 100,
) -> dict[str, Any]:
    """Answer every question (:func:`~mumo.data.shapes.questions`) of ``size`` scenes by greedy
    generation; exact match of the answer word.

    Returns:
        ``exact_match`` over all questions, ``macro`` (the mean of the per-kind accuracies, so that the
        many count questions do not dominate), per-kind accuracies and counts.
    """
    model.eval()
    hits: dict[str, list[bool]] = {k: [] for k in QUESTION_KINDS}
    generation = GenerationConfig(max_new_tokens=4)
    for images, scenes in _scene_batches(config, split, size, batch_size):
        rows, texts, answers, kinds = [], [], [], []
        for i, scene in enumerate(scenes):
            for q in questions(scene):
                rows.append(i)
                texts.append(q.question)
                answers.append(q.answer)
                kinds.append(q.kind)
        said = answer_questions(model, tokenizer, images, rows, texts, generation)
        for kind, a, s in zip(kinds, answers, said, strict=True):
            hits[kind].append(a == s)
    per_kind = {k: sum(v) / len(v) for k, v in hits.items() if v}
    every = [h for v in hits.values() for h in v]
    return {
        "exact_match": sum(every) / max(len(every), 1),
        "macro": sum(per_kind.values()) / max(len(per_kind), 1),
        "per_kind": per_kind,
        "counts": {k: len(v) for k, v in hits.items() if v},
    }


@torch.inference_mode()
def perplexity(model: nn.Module, dataset: Dataset, batch_size: int = 64) -> float:
    """exp of the mean next-token loss over every predicted token of a text data set (packed windows)."""

    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=TokenCollate(dataset.pad_id))
    total = count = 0.0
    for batch in loader:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        logits = model(None, ids, mask).logits
        n = float((mask[:, 1:] & mask[:, :-1]).sum())
        total += float(causal_lm_loss(logits, ids, mask)) * n
        count += n
    return math.exp(total / max(count, 1.0))
