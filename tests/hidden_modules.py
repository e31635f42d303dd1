"""Source text that makes packages unimportable in a child interpreter, as on a machine where
they are not installed: prepend `hide(...)` to a `python -c` script. Importing a hidden package
or any of its submodules raises ModuleNotFoundError (an ImportError), before anything else runs."""


def hide(*packages: str) -> str:
    return f"""
import sys
class _Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {packages!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)
sys.meta_path.insert(0, _Hidden())
"""
