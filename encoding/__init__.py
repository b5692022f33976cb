"""Text encoding adapters shared by the service and the offline evaluation: the vLLM encoder,
its settings, the multilingual e5 checkpoint conversion and the vLLM engine start-up.

Same layer as ``storage``: imports ``portrait`` only (``tests/unit/test_layers.py``).
"""
