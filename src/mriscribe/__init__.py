"""mriscribe: brain MRI tumour detection with millimetre measurements and a first-read report."""

__version__ = "0.1.0"
