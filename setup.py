"""Package discovery that pyproject.toml cannot express: ``roomee`` lives in services/ and its
``roomee.operator`` subpackage in operator/ (mapped by ``package-dir``); find both trees."""

from setuptools import find_packages, setup

setup(
    packages=find_packages("services", include=["roomee", "roomee.*"])
    + ["roomee.operator"]
    + [f"roomee.operator.{name}" for name in find_packages("operator")],
)
