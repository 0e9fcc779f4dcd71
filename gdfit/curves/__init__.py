"""Curve fits: an expression or built-in curve over data columns made a model, its statistics and
standard errors, guesses of its starts, derived parameters, global fits over datasets, the F-test
of its profile intervals, and the statistics of many fits at once."""
