"""Command-line front ends that need I/O (files, the encoder, progress bars)."""
