"""Many runs from one config: the grid, batches of runs in one tensor, where batches run (this
process or Dask), the journal of finished runs, and loss landscapes."""
