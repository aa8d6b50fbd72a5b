"""Only what pyproject.toml cannot say: which packages, with runtime/ installed as ``rtseg_runtime``.

Everything else (metadata, dependencies, entry points, package data) is in pyproject.toml. examples/
holds separate distributions (a user-op package with its own pyproject.toml), never part of this wheel.
"""

from setuptools import find_packages, setup

runtime = ["rtseg_runtime" + name.removeprefix("runtime") for name in find_packages(include=["runtime*"])]
setup(
    packages=find_packages(include=["rtseg_compiler*"]) + runtime,
    package_dir={"rtseg_runtime": "runtime"},
)
