"""Pictures: the loss curve and a fit's data and curve, sweeps, parameter profiles, many fits'
histograms and loss landscapes (matplotlib, the `plot` extra)."""
