"""``mot serve``: a trained run behind HTTP, with requests batched by tower between decoding steps."""
