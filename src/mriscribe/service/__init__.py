"""The HTTP service: the prototype's API and upload page, on FastAPI."""
