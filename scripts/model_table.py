"""Print the markdown table of every paper preset for docs/models.md.

    python scripts/model_table.py [--context 4096]

Counts are analytic (``mot.model.accounting``) and checked against each model built on the meta
device; the same rows as ``mot config list --sizes`` (:func:`mot.eval.sizes.preset_table`).
"""

from __future__ import annotations

import argparse

from mot.eval.sizes import preset_table


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table; numeric columns right-aligned."""
    left = {"preset", "table", "non-embedding per tower"}
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if column in left else "---:" for column in header) + "|"]
    lines += ["| " + " | ".join(f"`{cell}`" if i == 0 else cell for i, cell in enumerate(row)) + " |"
              for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=None, help="context length for FLOPs (default 4096)")
    print(markdown(*preset_table(parser.parse_args().context)))


if __name__ == "__main__":
    main()
