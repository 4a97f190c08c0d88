"""Where documents come from: generated scenes, corpora shipped by packages, synthesized speech."""
