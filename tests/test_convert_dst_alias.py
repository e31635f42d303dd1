"""SRC and DST that are one folder under two paths which realpath does not see through (a bind
mount: a second mount of one disk, an NFS alias and a case-folding file system look the same to
the converter): `--overwrite` emptied SRC before the identity check (device, inode) was added.

The real case runs `mount --bind` in a private mount namespace (root, or an unprivileged
`unshare -rm` where the kernel allows it) and skips where neither can mount. The contract test
beside it makes the path check blind (a patched `is_inside`) and shows that the identity check
alone refuses a symlinked alias. Oracle: SRC's files, byte for byte, before and after.
"""

import shutil
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("safetensors")

from convert_ckpt import listing, llama_like, save_checkpoint  # noqa: E402
from subproc import child_env  # noqa: E402

# dstdir and plan imported before the contract test patches srcfiles.is_inside (each binds it on import)
from mxquant.checkpoint import CheckpointError, convert, dstdir, plan, srcfiles  # noqa: E402,F401

CHILD = textwrap.dedent("""
    import subprocess, sys
    source, target, src, dst = sys.argv[1:5]
    subprocess.run(["mount", "--bind", source, target], check=True)
    from mxquant.cli import main
    rc = main(["convert", src, dst, "--overwrite", "--device", "cpu", "--quiet"])
    print("rc", rc)
""")


def _mount_prefix():
    """The command prefix that runs a child in its own mount namespace, or None."""
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        if shutil.which(prefix[0]) is None:
            return None
        probe = subprocess.run([*prefix, "sh", "-c", "mkdir -p /tmp/.mxq-a /tmp/.mxq-b && "
                                "mount --bind /tmp/.mxq-a /tmp/.mxq-b"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


# (what is bind-mounted where, SRC, DST, the folder whose files must stay), relative to tmp_path; the
# checkpoint is written into the last; "alias" is the mount point
MODES = {
    "dst is src": ("src", "alias", "src", "alias", "src"),
    "dst inside src": ("src", "alias", "src", "alias/out", "src"),
    "src inside dst": ("dst", "alias", "alias/inner", "dst", "dst/inner"),
    "dst is a subfolder of src": ("src/original", "alias", "src", "alias", "src/original"),
    "src is a subfolder of dst": ("dst/inner", "alias", "alias", "dst", "dst/inner"),
    # a folder inside one side is a folder inside the other: neither side is inside the other
    "a folder of dst is a folder of src": ("src/original", "dst/x", "src", "dst", "src/original"),
    "a folder of src is a folder of dst": ("dst/inner/sub", "src/y", "src", "dst", "dst/inner"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_overwrite_into_a_bind_mount_of_src_is_refused_and_src_untouched(tmp_path, mode):
    prefix = _mount_prefix()
    if prefix is None:
        pytest.skip("no mount namespace here (neither root nor unprivileged `unshare -rm`)")
    source, target, src, dst, watched = (tmp_path / p for p in MODES[mode])
    if watched.name == "original":  # a checkpoint with a subfolder of other files (Llama's original/)
        save_checkpoint(src, llama_like(layers=1), extra_files={"original/params.json": "{}"})
    else:
        save_checkpoint(watched, llama_like(layers=1), extra_files={"tokenizer.json": "{}"})
    if mode == "a folder of src is a folder of dst":  # SRC a checkpoint too; dst/inner/sub holds a file
        save_checkpoint(src, llama_like(layers=1))
        (source / "keep.txt").parent.mkdir(parents=True, exist_ok=True)
        (source / "keep.txt").write_text("dst's")
    source.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    watched_all = [tmp_path / "src", tmp_path / "dst"]
    before = [listing(w) for w in watched_all]
    r = subprocess.run([*prefix, sys.executable, "-c", CHILD, str(source), str(target), str(src), str(dst)],
                       capture_output=True, text=True, env=child_env(), timeout=300)
    assert "rc 2" in r.stdout, r.stdout + r.stderr
    assert "(by this path or another: a link or a mount)" in r.stderr
    assert [listing(w) for w in watched_all] == before  # nothing removed or written, on either side


def test_contract_the_identity_check_alone_refuses_an_alias_of_src(tmp_path, monkeypatch):
    """Contract test: `is_inside` patched to see no overlap, as realpath sees none across a bind
    mount; a symlink to SRC stands in for the mount (stat follows it to SRC's inode)."""
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1))
    (tmp_path / "alias").symlink_to(src, target_is_directory=True)
    before = listing(src)
    monkeypatch.setattr(srcfiles, "is_inside", lambda path, root: False)
    for dst in (tmp_path / "alias", tmp_path / "alias" / "out"):
        with pytest.raises(CheckpointError, match=r"is inside SRC .*\(by this path or another: a link or a mount\)"):
            convert(src, dst, overwrite=True)
    assert listing(src) == before
