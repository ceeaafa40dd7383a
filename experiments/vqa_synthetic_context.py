"""Can the captioner's decoder learn a question kind when the vision side is perfect?

The image is replaced by an exact synthetic context: one token per object, the sum of learned colour,
shape and size embeddings and a code of the object's true centre (2-D sin-cos, or with --linear a learned
linear map). The decoder (``captioner_conv_mini_64``'s text stack) trains on the built-in questions with
the loss on the answer alone, and prints, every --report-every steps, the training batches' answer
accuracy per question kind (first answer token, greedy). This separates what the decoder cannot learn
from what the vision tower fails to see. Used for the VQA notes in the README:

    python experiments/vqa_synthetic_context.py --steps 2000 --heads 4 --pos-embed rope
    python experiments/vqa_synthetic_context.py --steps 2000 --heads 4 --pos-embed rope --without position
"""

from __future__ import annotations

import argparse
import collections

import torch

import mumo
from mumo.data.shapes import COLOURS, QUESTION_KINDS, SHAPES, ShapesConfig, generate_scene, questions
from mumo.layers import sincos_1d
from mumo.losses.language import causal_lm_loss

WIDTH = 128  # the decoder's width in captioner_conv_mini_64


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--decoder-depth", type=int, default=2)
    p.add_argument("--pos-embed", choices=["learned", "sincos", "rope"], default="learned")
    p.add_argument("--linear", action="store_true", help="a learned linear code of (x, y), not sin-cos")
    p.add_argument("--without", nargs="*", default=[], choices=QUESTION_KINDS, help="question kinds left out")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--report-every", type=int, default=250, help="steps between accuracy lines")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    kinds = [k for k in QUESTION_KINDS if k not in args.without]
    config = ShapesConfig(min_objects=1, max_objects=3)
    rng = torch.Generator().manual_seed(args.seed)

    def sample(index: int):  # a scene and one question: a kind uniformly, then a question of it
        scene = generate_scene(config, "train", index)
        qs = [q for q in questions(scene) if q.kind in kinds]
        if not qs:  # e.g. three identical objects, left with no question but the left-out count
            return sample(index + 1_000_000)
        present = sorted({q.kind for q in qs}, key=kinds.index)
        u, v = torch.rand(2, generator=rng).tolist()
        of_kind = [q for q in qs if q.kind == present[int(u * len(present))]]
        return scene, of_kind[int(v * len(of_kind))]

    texts = [f"{q.question} {q.answer}" for i in range(4000) for q in [sample(i)[1]]]
    tok = mumo.Tokenizer.train(texts, vocab_size=400, context_length=32)
    overrides = {
        "text.vocab_size": tok.vocab_size,
        "text.num_heads": args.heads,
        "text.pos_embed": args.pos_embed,
        "decoder_depth": args.decoder_depth,
    }
    model = mumo.create_model("captioner_conv_mini_64", seed=args.seed, **overrides)
    colour, shape, size, linear = (torch.nn.Embedding(n, WIDTH) for n in (len(COLOURS), len(SHAPES), 2, 2))
    params = [*model.text.parameters(), *model.decoder.parameters(), *model.decoder_norm.parameters()]
    for table in (colour, shape, size, linear):
        params += list(table.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr)

    def context(scenes) -> torch.Tensor:  # (B, 3, WIDTH): one token per object, zeros where none
        out = torch.zeros(len(scenes), 3, WIDTH)
        for b, scene in enumerate(scenes):
            for k, o in enumerate(scene.objects):
                if args.linear:
                    where = (o.x - 0.5) * 4 * linear.weight[0] + (o.y - 0.5) * 4 * linear.weight[1]
                else:
                    xy = [sincos_1d(torch.tensor([v * 8]), WIDTH // 2) for v in (o.x, o.y)]
                    where = torch.cat(xy, dim=1)[0]
                ids = list(COLOURS).index(o.colour), SHAPES.index(o.shape), int(o.size == "large")
                out[b, k] = colour.weight[ids[0]] + shape.weight[ids[1]] + size.weight[ids[2]] + where
        return out

    hits, seen = collections.Counter(), collections.Counter()
    for step in range(args.steps):
        items = [sample(10_000 + step * args.batch + j) for j in range(args.batch)]
        enc = tok.encode([f"{q.question} {q.answer}" for _, q in items], padding="longest")
        ids, mask = enc.input_ids, enc.attention_mask
        target, starts = mask.clone(), []
        for j, (_, q) in enumerate(items):  # <bos> + the question are context, not targets
            n = 1 + len(tok.encode_ids([q.question])[0])
            target[j, :n] = 0
            starts.append(n)
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        logits = model.decode(ids, positions, None, state=None, context=context([s for s, _ in items]))
        loss = causal_lm_loss(logits, ids, mask, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pred = logits.argmax(-1)
        for j, (_, q) in enumerate(items):
            hits[q.kind] += int(pred[j, starts[j] - 1] == ids[j, starts[j]])
            seen[q.kind] += 1
        if (step + 1) % args.report_every == 0:
            acc = " ".join(f"{k} {hits[k] / seen[k]:.2f}" for k in kinds if seen[k])
            print(f"step {step + 1}  loss {loss.item():.3f}  {acc}", flush=True)
            hits.clear()
            seen.clear()


if __name__ == "__main__":
    main()
