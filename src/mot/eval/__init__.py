"""Evaluation: metrics and analyses of trained models and runs (step matching, loss curves, PCA of
hidden states, caption use, exact ShapeScenes scores, model sizes). It never trains a model."""
