"""The pure JAX programs: the models, the dataset and its split, the loss, every metric, the training Program, a chunk of models compiled and driven segment by segment."""
