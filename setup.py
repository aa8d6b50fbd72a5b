"""Only what pyproject.toml cannot say: which packages, with runtime/ installed as ``rtseg_runtime``
and the zoo's ``specs/`` as ``rtseg_compiler/_zoo``.

Everything else (metadata, dependencies, entry points) is in pyproject.toml. examples/ holds separate
distributions (a user-op package with its own pyproject.toml), never part of this wheel.

``specs/`` stays at the top of the repository (where users and docs look for it) and ships inside the
package as data, so ``create_model("skipnet_mobilenet_v1")`` and ``rtsegc flops unet_resnet18`` work
from a wheel (rtseg_compiler/zoo.py finds either layout). It holds no Python: pyproject.toml's
package-data names the files it carries.
"""

from setuptools import find_packages, setup

runtime = ["rtseg_runtime" + name.removeprefix("runtime") for name in find_packages(include=["runtime*"])]
setup(
    packages=find_packages(include=["rtseg_compiler*"]) + runtime + ["rtseg_compiler._zoo"],
    package_dir={"rtseg_runtime": "runtime", "rtseg_compiler._zoo": "specs"},
)
