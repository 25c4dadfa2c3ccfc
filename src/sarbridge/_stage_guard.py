"""Refuse to import a stage folder under its bare name.

The stage folders (runtime/, train/, ...) sit at the repository root and are
mapped into the ``sarbridge`` namespace by setuptools. Run from the repository
root, ``import runtime`` would otherwise pick up the folder directly and give a
second, diverging copy of every module.
"""


def check(module_name: str, stage: str) -> None:
    """Raise ImportError unless ``module_name`` is ``sarbridge.<stage>``."""
    expected = f"sarbridge.{stage}"
    if module_name != expected:
        raise ImportError(
            f"'{stage}/' is part of sarbridge: import it as '{expected}', not '{module_name}'. "
            "Install the project (make setup) instead of importing from the repository root."
        )
