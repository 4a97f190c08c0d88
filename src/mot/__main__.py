"""``python -m mot ...`` is ``mot ...`` (and ``torchrun --nproc-per-node N -m mot train ...`` trains on N GPUs)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
