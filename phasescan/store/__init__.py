"""Files: atomic writes, result chunks and runs.parquet, history.parquet, the .npz weights, an unfinished chunk's saved state, rows sent on to Weights & Biases."""
