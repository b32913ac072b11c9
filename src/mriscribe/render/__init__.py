"""Turning an analysis into things people read: annotated images, the PDF and the JSON."""
