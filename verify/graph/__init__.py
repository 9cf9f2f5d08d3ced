"""Graph IR: `Graph`, `Node`, the operator vocabulary (`ops`) and normalisation passes (`passes`)."""
from verify.graph.ir import Graph, Node

__all__ = ["Graph", "Node"]
