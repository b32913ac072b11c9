"""Optional tools that make the default detector: synthetic data, training, evaluation.

Nothing here is imported by the runtime; it needs the ``synth`` and ``train`` extras.
"""
