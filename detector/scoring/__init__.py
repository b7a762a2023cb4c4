"""Scoring, pure: acceleration arrays in, leg movements, epochs, time in bed and non-wear out.

No I/O and no clock here. The one night scorer (:mod:`detector.scoring.scorer`) is fed chunk by chunk by
every path -- ``plm score`` on a file, ``plm import``, the live service -- so their results cannot disagree.
Each threshold is a constant at the top of its module (:mod:`detector.scoring.params` for the detector's).
"""
