"""Running things: a sweep's chunks compiled, run, resumed and recorded; models trained again for inspection; saved models measured; shards merged."""
