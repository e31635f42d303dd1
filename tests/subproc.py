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


def forked_child_result(target, args, what: str, timeout: float = 120):
    """Run target(*args, queue) in a forked child and return what it put on the queue; the
    test fails if the child hangs (`what` names the hanging party) or exits non-zero."""
    import multiprocessing

    import pytest

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(*args, queue))
    child.start()
    child.join(timeout=timeout)
    if child.is_alive():
        child.kill()
        pytest.fail(f"{what} hung in a forked child")
    assert child.exitcode == 0, f"the forked child exited with {child.exitcode}"
    return queue.get(timeout=10)


def plugin_site(site, distribution: str, plugins: dict):
    """Write into folder `site` a distribution named `distribution` whose `mxquant.backends`
    entry points are `plugins` (entry-point name -> module source; module mxquant_test_<name>),
    as pip would install it: a child interpreter with `site` on PYTHONPATH discovers them."""
    from pathlib import Path

    site = Path(site)
    modules = {name: "mxquant_test_" + name.replace("-", "_") for name in plugins}
    for name, source in plugins.items():
        (site / f"{modules[name]}.py").write_text(source)
    info = site / f"{distribution.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mxquant.backends]\n" + "".join(f"{n} = {m}\n" for n, m in modules.items()))
    return site
