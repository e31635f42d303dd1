"""Every package folder in the tree ships: pyproject.toml lists packages explicitly (the
built-in backends live in the top-level backends/ and install as mxquant.backends), so a new
subpackage missing from that list would work in an editable install and vanish from a wheel."""

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top, name in (("mxquant", "mxquant"), ("backends", "mxquant.backends")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed, f"in the tree, not listed: {sorted(found - listed)}; listed, not in the tree: {sorted(listed - found)}"
    assert config["package-dir"]["mxquant.backends"] == "backends"
