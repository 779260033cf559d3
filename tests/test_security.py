"""Security properties that are checked over the code base itself."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ultraedit_dagster"


def _calls(name: str):
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                dotted = (
                    f"{func.value.id}.{func.attr}"
                    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    else getattr(func, "id", None)
                )
                if dotted == name:
                    yield path, node


def test_every_torch_load_is_weights_only():
    """A checkpoint is data: torch.load must never unpickle arbitrary objects."""
    found = list(_calls("torch.load"))
    assert found, "the SAM checkpoint path uses torch.load; this test must see it"
    for path, node in found:
        kwargs = {k.arg: k.value for k in node.keywords}
        assert "weights_only" in kwargs and getattr(kwargs["weights_only"], "value", None) is True, (
            f"{path}:{node.lineno} calls torch.load without weights_only=True")


@pytest.mark.parametrize("name", ["pickle.load", "pickle.loads", "dill.load", "joblib.load"])
def test_nothing_unpickles(name):
    assert not list(_calls(name)), f"{name} found in the package"


def test_ui_binds_to_loopback():
    makefile = (PACKAGE.parent / "Makefile").read_text()
    ui = [line for line in makefile.splitlines() if "dagster dev" in line]
    assert ui and all("-h 127.0.0.1" in line for line in ui)
