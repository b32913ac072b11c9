"""A study: the uploaded images arranged into series, in anatomical order."""
