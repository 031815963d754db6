"""``python -m kdlab.bench``: images/s of full KD training steps, pipelines and loops.

See ``kdlab/bench/__main__.py`` for the rows and options and docs/benchmarks.md for results.
"""
