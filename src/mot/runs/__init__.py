"""Run directories: the recipe a run was made from and its resolution against the corpus, the
directory's files (``config.yaml``, ``environment.json``, ``metrics.jsonl``), its checkpoints, and
its model loaded without an optimizer. Below ``train`` (which writes runs) and ``generate`` (which
reads them). Import from the submodules."""
