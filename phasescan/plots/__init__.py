"""matplotlib, nowhere else: the sweep figures, single-model inspection, the training-history and refinement figures, and drawing them all into a folder."""
