"""phasescan: map the algorithmic phase space of small transformers (Clock / Pizza / other)."""
from .results import load
from .version import __version__

__all__ = ["load", "__version__"]
