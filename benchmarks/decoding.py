"""Autoregressive decoding: the KV-cached decoder against recomputing the whole prefix at every step,
batched mixed requests against one by one, and host reads per generated token.

1. **Cache vs recompute**: one request, a ``--prompt`` token prompt, ``--new`` greedy tokens (free
   mode), by :class:`mot.generate.decoding.Decoder` and by :func:`mot.generate.reference_decoding.
   reference_generate` (the whole sequence through the model at every step). Both give the same
   tokens (tests/generate/test_decoding.py); the ratio of their times is the cache's gain.
2. **Batched vs one by one**: 8 mixed requests (text continuation, an image with guidance, a
   caption, speech both ways) in one batch, against the same 8 alone; tokens per second of each.
3. **Host reads per token**: calls of ``batching.fetch`` (the step's one device -> host read)
   divided by decoding steps.

Both sides of each comparison run in ONE process, alternating, after a warm-up, and the median is
reported. The model has random weights (the time does not depend on them); its vocabulary has text,
64-code images and speech units, as a Chameleon+Speech corpus does.

    python benchmarks/decoding.py
    python benchmarks/decoding.py --device cuda --width 1024 --layers 16 --prompt 512 --new 512
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import mot.generate.batching as batching
from mot.config import ModelConfig
from mot.generate.decoding import Decoder, Request
from mot.generate.logits import Sampling
from mot.generate.modality_state import SpanRules
from mot.generate.reference_decoding import reference_generate
from mot.model.transformer import build_model
from mot.tokenizers.vocab import VocabLayout

LAYOUT = VocabLayout({"text": 4096, "image": 1024, "speech": 500})
RULES = SpanRules(image_tokens=64, speech_max_units=100)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--architecture", choices=["mot", "dense"], default="mot")
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens of the cache-vs-recompute test")
    p.add_argument("--new", type=int, default=512, help="generated tokens of the cache-vs-recompute test")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    return p.parse_args(argv)


def timed(work, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    work()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def alternate(works: dict, rounds: int, device: str) -> dict:
    """Median seconds of each work, run A B A B ... after one warm-up round."""
    for work in works.values():
        work()
    times = {name: [] for name in works}
    for _ in range(rounds):
        for name, work in works.items():
            times[name].append(timed(work, device))
    return {name: statistics.median(values) for name, values in times.items()}


def text_ids(count: int, salt: int) -> list:
    start = LAYOUT.id_range("text")[0]
    return [start + (salt * 31 + i * 7) % 4096 for i in range(count)]


def mixed_requests() -> list:
    """Eight requests of every kind, 40 to 100 new tokens each."""
    bos, (boi, eoi), (bos_s, eos_s) = LAYOUT.special("<bos>"), LAYOUT.markers("image"), LAYOUT.markers("speech")
    image, speech = LAYOUT.id_range("image")[0], LAYOUT.id_range("speech")[0]
    sampled = Sampling(temperature=1.0, top_k=50)
    return [Request([bos, *text_ids(30, 1)], "text", 60), Request([bos, *text_ids(12, 2), boi], "image", 65,
                                                                   sampled, guidance=3.0),
            Request([bos, boi, *range(image, image + 64), eoi], "text", 40),
            Request([bos, *text_ids(20, 3), bos_s], "speech", 100, sampled),
            Request([bos, bos_s, *range(speech, speech + 80), eos_s], "text", 40),
            Request([bos, *text_ids(200, 4)], "free", 80, sampled), Request([bos, *text_ids(5, 5)], "text", 60),
            Request([bos, *text_ids(50, 6), boi], "image", 65, sampled)]


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    towers = {m: "shared" for m in LAYOUT.modalities} if args.architecture == "dense" else {}
    config = ModelConfig(vocab_size=LAYOUT.vocab_size, d_model=args.width, n_layers=args.layers, n_heads=args.heads,
                         max_seq_len=max(args.prompt + args.new, 400) + 8, modalities=LAYOUT.modalities,
                         **({"towers": towers} if towers else {}))
    model = build_model(config, device=args.device).eval()
    decoder = Decoder(model, LAYOUT, RULES)
    # greedy over text only, so both sides make exactly --new tokens whatever the random model prefers
    long = [Request([LAYOUT.special("<bos>"), *text_ids(args.prompt - 1, 0)], "text", args.new)]
    eos = LAYOUT.special("<eos>")
    model.head.weight.data[eos] = 0  # the random model must not end early: <eos> gets logit 0
    cache = alternate({"cached": lambda: decoder.generate(long),
                       "recomputed": lambda: reference_generate(model, LAYOUT, long, RULES)}, args.rounds, args.device)
    made = len(decoder.generate(long)[0].tokens)

    batch = mixed_requests()
    tokens = sum(len(g.tokens) + g.finished for g in decoder.generate(batch))
    mixed = alternate({"batched": lambda: decoder.generate(batch),
                       "one by one": lambda: [decoder.generate([r]) for r in batch]}, args.rounds, args.device)

    reads = []
    original = batching.fetch
    batching.fetch = lambda tensor: reads.append(1) or original(tensor)
    steps = max(len(g.tokens) + g.finished for g in decoder.generate(batch))
    batching.fetch = original

    result = {"prompt_tokens": args.prompt, "new_tokens": made,
              "cached_tokens_per_s": made / cache["cached"], "recomputed_tokens_per_s": made / cache["recomputed"],
              "cache_speedup": cache["recomputed"] / cache["cached"],
              "mixed_tokens": tokens, "batched_tokens_per_s": tokens / mixed["batched"],
              "one_by_one_tokens_per_s": tokens / mixed["one by one"],
              "batching_speedup": mixed["one by one"] / mixed["batched"], "host_reads_per_step": len(reads) / steps}
    print(f"{args.architecture}, width {args.width}, {args.layers} layers, vocab {LAYOUT.vocab_size}; {args.device}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.rounds}")
    print(f"{args.prompt}-token prompt, {made} new tokens: cached {result['cached_tokens_per_s']:.1f} tok/s, "
          f"recomputed {result['recomputed_tokens_per_s']:.1f} tok/s: {result['cache_speedup']:.1f}x")
    print(f"8 mixed requests, {tokens} tokens: batched {result['batched_tokens_per_s']:.1f} tok/s, one by one "
          f"{result['one_by_one_tokens_per_s']:.1f} tok/s: {result['batching_speedup']:.2f}x")
    print(f"host reads per decoding step: {result['host_reads_per_step']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
