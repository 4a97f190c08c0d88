"""Generation: sampling from Transfusion models, the pipelines around the sampler, and the image
files they read and write."""
