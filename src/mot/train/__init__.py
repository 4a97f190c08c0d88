"""Training: the trainer and its parts (optimizer and schedule, random state, FSDP2, the objective,
writing metrics). The recipe, run directories and checkpoints are :mod:`mot.runs`'. Import from the
submodules: importing this package alone stays cheap, so ``mot config ...`` does not load
torch.distributed."""
