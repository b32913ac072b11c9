"""From findings to words: the study facts and the report writers."""
