"""mriscribe as a DICOM node: C-STORE in (``receiver``), a durable spool (``spool``), analysis
once a study is stable and results out by C-STORE or STOW-RS (``delivery``), all run by
``node.DicomNode``."""
