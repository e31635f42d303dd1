"""The environment for a child interpreter of a test: none of mxquant's MXQUANT_* variables
(so the parent's selection, plugins and probe timeout do not leak in), `sites` in front of
PYTHONPATH, then `extra` on top."""

import os


def child_env(*sites, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MXQUANT_")}
    if sites:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, sites), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env.update(extra)
    return env
