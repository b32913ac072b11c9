"""mriscribe: brain MRI tumour detection with millimetre measurements and a first-read report."""

import os

__version__ = "0.1.0"

# ONNX Runtime 1.29+ collects usage telemetry on Linux. pyproject keeps it below 1.29, where
# its env-var opt-out is incomplete; this variable is that opt-out for releases that honour it
# fully. Medical software must not phone home: off unless an operator sets it explicitly.
os.environ.setdefault("ORT_TELEMETRY_DISABLED", "1")
