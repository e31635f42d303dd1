"""Which files of SRC the converter reads, under which names: the index checked, shard names
normalised once (here, and nowhere else), every other file vetted before it is copied.

A checkpoint may come from anywhere, so nothing in it chooses a path outside SRC or DST:
- a shard name is a plain relative path ending in `.safetensors`: no absolute path, no `..`,
  no backslash or NUL; `./a` and `a//b` are normalised to `a` and `a/b` (transformers accepts
  them), and the normalised name is the one used for reading, writing and the output index;
- every file read (shards, and the files copied unchanged) resolves, symlinks followed, to a
  regular file inside SRC's root: SRC itself, or for a Hugging Face cache snapshot
  (`.../models--org--name/snapshots/<rev>`, whose files link to `../../blobs/`) the repository
  folder of that cache entry;
- FIFOs, sockets, devices, dangling symlinks and symlinked directories are refused before any
  work, never met half-way through.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat

from .stio import CheckpointError, encodable

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
SUFFIX = ".safetensors"
RESERVED = (".mxquant-convert", "mxquant-manifest.json")
"""Names in DST that are the converter's own (manifest.PARTS, manifest.MANIFEST)."""


def load_json(path: str, what: str):
    """A JSON file, any parse failure (deep nesting included) as one CheckpointError."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{what}: not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None


def source_root(src: str) -> str:
    """The folder every file read must resolve into: SRC, or a Hugging Face cache repository
    folder when SRC is one of its snapshots."""
    real = os.path.realpath(src)
    parent = os.path.dirname(real)
    if os.path.basename(parent) == "snapshots" and os.path.isdir(os.path.join(parent, os.pardir, "blobs")):
        return os.path.dirname(parent)
    return real


def is_inside(path: str, root: str) -> bool:
    """`path` (already resolved) is `root` or below it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _identity(path: str, follow: bool = True):
    """(st_dev, st_ino) of `path`, or None: missing, or an inode number of 0, which identifies
    nothing (Python's os.stat_result docs)."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st.st_ino else None


def _up(path: str) -> set:
    """The identities of `path` and of each of its existing ancestors."""
    out, p = set(), os.path.realpath(path)
    while True:
        out.add(_identity(p))
        parent = os.path.dirname(p)
        if parent == p:
            return out - {None}
        p = parent


def _down(root: str) -> set:
    """The identities of folder `root` and of every folder below it (mount points crossed,
    symbolic links not followed)."""
    out = {_identity(root)}
    for folder, dirs, _ in os.walk(root, onerror=lambda e: None):
        out.update(_identity(os.path.join(folder, d), follow=False) for d in dirs)
    return out - {None}


def check_apart(src: str, dst: str) -> None:
    """CheckpointError unless SRC (and, for a Hugging Face cache snapshot, its repository folder)
    and DST are apart: neither is the other, inside the other or shares a folder with it, by path
    or by identity (device and inode): one side or an ancestor of it is a folder of the other, or
    a folder below one is a folder of the other, so that a bind mount, a second mount of one
    disk or a case-folded spelling of either side or of a folder inside it, which realpath does
    not see through, counts too. (A folder mounted over and hidden has no identity to compare.)
    Checked when the plan is made and again just before DST is emptied."""
    real_src, real_dst, root = os.path.realpath(src), os.path.realpath(dst), source_root(src)
    how = "(by this path or another: a link or a mount)"
    if is_inside(real_dst, real_src):
        raise CheckpointError(f"DST {dst} is inside SRC {src}, or is SRC itself; the source is never written to")
    if is_inside(real_src, real_dst):
        raise CheckpointError(f"SRC {src} is inside DST {dst}, or is DST itself")
    down_dst = _down(dst) if os.path.isdir(dst) else set()
    near_dst, down_src = _up(dst) | down_dst, _down(src)
    if near_dst & down_src:
        raise CheckpointError(f"DST {dst} is inside SRC {src}, is SRC itself or shares a folder with it {how}; "
                              "the source is never written to")
    if _up(src) & down_dst:
        raise CheckpointError(f"SRC {src} is inside DST {dst}, or is DST itself {how}")
    if root != real_src:  # a Hugging Face cache snapshot's files live in its repository's blobs/
        down_root = _down(root)
        if is_inside(real_dst, root) or is_inside(root, real_dst) or near_dst & down_root or _up(root) & down_dst:
            raise CheckpointError(f"DST {dst} overlaps {root}, the Hugging Face cache repository whose blobs/ hold "
                                  f"SRC {src}'s files {how}; the source is never written to: pick a DST outside it")


def shard_name(raw) -> str:
    """The normalised form of a shard name from the index, or a CheckpointError."""
    if not isinstance(raw, str) or not raw:
        raise CheckpointError(f"{INDEX}: shard name {raw!r} is not a file name")
    bad = ("\\" in raw and "a backslash") or ("\0" in raw and "a NUL byte") or \
          (os.path.isabs(raw) and "an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not bad and ".." in parts:
        bad = "a '..' component"
    if not bad and (not parts or not parts[-1].endswith(SUFFIX) or parts[-1] == SUFFIX):
        bad = f"not a *{SUFFIX} file"
    if not bad and parts[0] in RESERVED:
        bad = "a name the converter keeps for itself"
    if bad:
        raise CheckpointError(f"{INDEX}: shard name {raw!r} is refused ({bad}); "
                              "a shard must be a plain relative path inside the checkpoint")
    return "/".join(parts)


def resolve_inside(src: str, root: str, rel: str) -> str:
    """SRC/rel, checked: it resolves (symlinks followed) to a regular file inside `root`."""
    path = os.path.join(src, rel)
    real = os.path.realpath(path)
    if not is_inside(real, root):
        raise CheckpointError(f"SRC/{rel} resolves to {real}, outside the checkpoint; refusing to read it")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise CheckpointError(f"SRC/{rel} is missing (or a dangling symlink)") from None
    except OSError as e:  # a name too long, a component that is a file (ENOTDIR), ...: the index's doing
        raise CheckpointError(f"SRC/{_short(rel)} cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"SRC/{rel} is not a regular file (a FIFO, socket, device or folder); refusing")
    return path


def _short(rel: str) -> str:
    return rel if len(rel) <= 120 else rel[:60] + "..." + rel[-40:]


def _check_index(index) -> tuple[dict, dict]:
    """(weight_map with normalised shard names, metadata) of a parsed index, its structure checked."""
    if not isinstance(index, dict):
        raise CheckpointError(f"{INDEX}: not a JSON object")
    weight_map, meta = index.get("weight_map"), index.get("metadata", {})
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{INDEX}: weight_map must be a non-empty object of tensor name -> shard file")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{INDEX}: metadata must be an object, not {type(meta).__name__}")
    bad = next((x for kv in weight_map.items() for x in kv if isinstance(x, str) and not encodable(x)), None)
    if bad is not None:
        raise CheckpointError(f"{INDEX}: weight_map entry {bad!r:.200} is not valid Unicode (a lone surrogate "
                              "escape); no file or tensor has that name")
    return {k: shard_name(v) for k, v in weight_map.items()}, meta


def source_shards(src: str) -> tuple[list[str], dict | None]:
    """(normalised shard names, sorted; the index's {"weight_map", "metadata"} or None when SRC
    is a single model.safetensors). Each shard is checked to resolve inside SRC's root."""
    root = source_root(src)
    if os.path.lexists(os.path.join(src, INDEX)):
        resolve_inside(src, root, INDEX)
        weight_map, meta = _check_index(load_json(os.path.join(src, INDEX), INDEX))
        files = sorted(set(weight_map.values()))
        for name in files:
            resolve_inside(src, root, name)
        return files, {"weight_map": weight_map, "metadata": meta}
    if os.path.lexists(os.path.join(src, SINGLE)):
        resolve_inside(src, root, SINGLE)
        return [SINGLE], None
    raise CheckpointError(f"SRC {src} is not a Hugging Face safetensors checkpoint (no {SINGLE} or {INDEX})")


def _readable(path: str) -> bool:
    """Whether this process (its effective ids, where the OS tells them apart) may read `path`."""
    return os.access(path, os.R_OK, effective_ids=os.access in os.supports_effective_ids)


OTHER_WEIGHTS = ("pytorch_model*.bin", "consolidated*.pth", "consolidated*.pt", "tf_model*.h5",
                 "flax_model*.msgpack", "*.gguf", "ggml*.bin", "*.ckpt")
"""The names (matched case-insensitively) of weight files of other formats: transformers'
PyTorch, TensorFlow and Flax weights, Meta's original/consolidated.*.pth, GGUF and GGML files,
checkpoints (*.ckpt); and their `<name>.index.json`: not copied (see other_files). By name, not by
extension alone: a model's own assets may be `.pt` or `.bin` files (a speaker dictionary, a
tokenizer model), and those are copied, as are other runtimes' exports (onnx/, openvino/)."""


def other_weights(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1].removesuffix(".index.json").lower()
    return any(fnmatch.fnmatchcase(name, p) for p in OTHER_WEIGHTS)


def other_files(src: str, shards: list[str]) -> tuple[list[str], list[str]]:
    """(the files of SRC that are copied unchanged, the weight files of other formats left out),
    relative paths, sorted. Copied: all but the shards, the index, config.json and the other
    formats' weights (copied, they would ship unconverted weights next to a config that says
    compressed-tensors). Refuses what cannot be copied safely, and safetensors files the index
    does not list (they would be read as the checkpoint's own)."""
    root, skip = source_root(src), set(shards) | {INDEX, "config.json"}
    out, left = [], []

    def unreadable(e: OSError):  # os.walk would skip the folder silently
        raise CheckpointError(f"SRC/{os.path.relpath(e.filename, src)} cannot be read ({e.strerror}); its files "
                              "would be copied into DST")

    for here, dirs, names in os.walk(src, onerror=unreadable):
        dirs.sort()
        for d in dirs:
            if os.path.islink(os.path.join(here, d)):
                rel = os.path.relpath(os.path.join(here, d), src)
                raise CheckpointError(f"SRC/{rel} is a symlink to a folder; not copied (replace it with the folder)")
        for n in sorted(names):
            rel = os.path.relpath(os.path.join(here, n), src).replace(os.sep, "/")
            if rel in skip:
                continue
            if rel.split("/")[0] in RESERVED:
                raise CheckpointError(f"SRC/{rel}: a name mxquant convert keeps for its own output")
            if rel.endswith(SUFFIX):
                raise CheckpointError(f"SRC/{rel} is a safetensors file that is not one of the checkpoint's "
                                      "shards; copied as is it would ship unconverted weights (move it out of SRC)")
            if other_weights(rel):
                left.append(rel)
                continue
            path = resolve_inside(src, root, rel)
            if not _readable(path):  # refused here, not once every shard is converted
                raise CheckpointError(f"SRC/{rel} cannot be read (permission denied); it would be copied into DST")
            out.append(rel)
    written = set(out) | set(shards) | {INDEX, "config.json", RESERVED[1]}  # each lands by way of <name>.tmp
    for rel in out:
        if rel.endswith(".tmp") and rel[: -len(".tmp")] in written:
            raise CheckpointError(f"SRC/{rel}: mxquant convert writes DST/{rel[: -len('.tmp')]} by way of this name, "
                                  "so the copy would be lost (a leftover of an interrupted write? move it out of SRC)")
    return out, sorted(left)
