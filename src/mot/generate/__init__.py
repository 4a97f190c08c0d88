"""Generation: sampling from Transfusion models and the pipelines around the sampler."""
