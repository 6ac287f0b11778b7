"""Checkpoints by name: the registry, downloads, name/dir resolution, release bundles."""
