"""Tables of results: the phase boundary, phase cells and the text phase table, refinement's choice of new points."""
