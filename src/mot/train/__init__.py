"""Training: the recipe, the trainer and its parts (optimizer and schedule, checkpoints, random
state, FSDP2, metrics, the run directory). Import from the submodules: importing this package
alone stays cheap, so ``mot config ...`` does not load torch.distributed."""
