"""Serving adapters: the vLLM text encoder and its Ray Serve deployment (``Encoder`` port)."""
