"""The runtime (installed as ``rtseg_runtime``): ``rtsegc train``, ``eval``, ``predict`` and ``bench``.

It builds networks through the compiler's public API and adds datasets, augmentation, losses,
metrics, checkpoints and reports; the compiler never imports it (``commands`` explains how its
commands reach ``rtsegc``).
"""
