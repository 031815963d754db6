"""Analyses that run trained networks: the temperature figure and teacher agreement.

``python -m kdlab.analysis temperature|agreement …``. They live apart from ``kdlab.report``,
which only reads the files that runs leave behind.
"""
