"""Emitters, one per output form of a resolved graph.

* ``torch_module``: the ``torch.fx.GraphModule`` every build returns;
* ``python_source``: a standalone, readable PyTorch file (``rtsegc compile --save-code``);
* ``diagram``: the diagram model, which layers a picture draws as one box (no torch, no Graphviz);
* ``dot``: Graphviz DOT text for that model (``rtsegc visualize``).
"""
