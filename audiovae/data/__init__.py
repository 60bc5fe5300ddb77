"""Corpora, the feature cache and datasets, image readers, the built-in synthetic corpus."""
