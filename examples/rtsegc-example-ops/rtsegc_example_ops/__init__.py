"""Example rtseg_compiler user ops; importing this package registers them.

``rtseg_compiler`` finds this package through its ``rtseg_compiler.ops`` entry
point (see pyproject.toml), or ``rtsegc --ops rtsegc_example_ops`` imports it
when it is importable but not installed. Nothing else is needed: the ops use
the same public API (``OpDef``, ``Field``, ``Cost``, ``register``) as the
compiler's built-in ones. See docs/extending.md in rtseg_compiler.
"""

from . import blur_pool, pixel_shuffle  # noqa: F401  (imported for registration)

__all__ = ["blur_pool", "pixel_shuffle"]
