"""phasescan: map the algorithmic phase space of small transformers (Clock / Pizza / other)."""
from .results import load

__all__ = ["load"]
__version__ = "0.1.0"
