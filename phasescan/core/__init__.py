"""What a sweep is, without JAX: the config fields and their validation, tasks and input formats, grid expansion and run_ids, shards, the classification rule, the progress bar."""
