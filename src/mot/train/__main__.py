"""``python -m mot.train ...`` (and ``torchrun --nproc-per-node N -m mot.train ...``) is ``mot train ...``."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
