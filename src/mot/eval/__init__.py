"""Evaluation: validation losses, step matching, plots and reports."""
