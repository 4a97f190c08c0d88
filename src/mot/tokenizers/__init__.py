"""Tokenizers that mot trains itself (text BPE, image VQ, image VAE, speech units) and the
unified vocabulary that places their ids side by side."""
