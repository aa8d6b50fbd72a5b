"""Emitters: torch modules (``torch_module``) and Graphviz diagrams (``dot``)."""
