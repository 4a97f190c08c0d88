"""A refactor must not change what mot computes: prepare the ci corpus and run the Chameleon
comparison for 40 steps on it, then write what must stay the same as one JSON file.

    python scripts/refactor_check.py OUT            # before the change (e.g. in a git worktree)
    python scripts/refactor_check.py OUT2           # after it
    diff OUT/fingerprint.json OUT2/fingerprint.json  # nothing: the refactor changed nothing

The fingerprint holds the SHA-256 of every file of the prepared corpus (its JSON records without
the fields that differ between two runs of the same code: wall-clock times and the output
directory) and every metrics record of each architecture (losses per modality, gradient norms,
learning rates; without times and rates). About 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

#: fields that differ between two runs of the same code
VOLATILE = {"seconds", "train_seconds", "steps_per_second", "out_dir", "tokens_per_second"}
STEPS = ["steps=40", "eval_every=20", "checkpoint_every=20", "log_every=5", "optim.warmup_steps=10"]


def stable(value):
    """``value`` without the :data:`VOLATILE` fields, at any depth."""
    if isinstance(value, dict):
        return {key: stable(item) for key, item in value.items() if key not in VOLATILE}
    if isinstance(value, list):
        return [stable(item) for item in value]
    return value


def corpus_fingerprint(corpus: Path) -> dict:
    digests = {}
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".json":
            data = json.dumps(stable(json.loads(data)), sort_keys=True).encode()
        digests[str(path.relative_to(corpus))] = hashlib.sha256(data).hexdigest()
    return digests


def metrics_fingerprint(runs: Path) -> dict:
    return {run.name: [stable(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]
            for run in sorted(runs.iterdir())}


def mot(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "mot", *arguments], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a new directory for the corpus, the runs and fingerprint.json")
    out = parser.parse_args().out
    mot("prepare", "--config", "configs/data/ci.yaml", "--out", str(out / "ci"))
    mot("compare", "--config", "configs/experiments/chameleon.yaml", "--out", str(out / "compare"),
        f"overrides=[data.corpus={out / 'ci'},{','.join(STEPS)}]")
    fingerprint = {"corpus": corpus_fingerprint(out / "ci"),
                   "metrics": metrics_fingerprint(out / "compare" / "chameleon" / "runs")}
    (out / "fingerprint.json").write_text(json.dumps(fingerprint, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out / 'fingerprint.json'}")


if __name__ == "__main__":
    main()
