"""Models made elsewhere, and ours handed back: Hugging Face Llama weights into a tower, mot models
out as Hugging Face directories, and copying towers between architectures (warm starts)."""
