"""Staged, all-or-nothing writes of export artifacts, and the checks on the output path.

The artifact is built in a temporary folder next to the target and moved into place only once
complete; a path whose replacement could remove what the export did not create is refused.
"""

import contextlib
import os
import shutil
import tempfile

from keras_margins._validation import check_flag


def check_export_path(path, overwrite, kind):
    """Refuse every output path whose replacement could remove what the export did not create.

    ``kind`` is ``"directory"`` (SavedModel) or ``"file"`` (TFLite, ONNX). Returns the absolute
    path. Raises ``ValueError`` for the current directory (``""``, ``"."``), any parent of it,
    a filesystem root, an existing special file (socket, FIFO, device), an existing directory
    where a file is written, or an existing file where a directory is written.
    """
    check_flag("overwrite", overwrite)
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`path` must be a string or path-like object. Received: path={path!r} of type "
            f"{type(path).__name__}"
        )
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raise TypeError(f"`path` must be a string path. Received: path={path!r}")
    absolute = os.path.abspath(raw)
    parent = os.path.realpath(os.path.dirname(absolute))
    name = os.path.basename(absolute)
    resolved = os.path.join(parent, name) if name else parent
    if not os.path.islink(absolute):
        resolved = os.path.realpath(absolute)
    cwd = os.path.realpath(os.getcwd())
    if not name or os.path.commonpath([cwd, resolved]) == resolved:
        raise ValueError(
            f"`path` must not be the current directory or one of its parents (the export would "
            f"replace it). Received: path={path!r}, which resolves to {resolved!r} (current "
            f"directory: {cwd!r})"
        )
    if os.path.lexists(absolute) and not os.path.islink(absolute):
        import stat

        mode = os.lstat(absolute).st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise ValueError(
                f"`path` must be a new path, a regular file or a directory. Received: "
                f"path={path!r}, an existing special file"
            )
        if kind == "file" and stat.S_ISDIR(mode):
            raise ValueError(
                f"`path` is an existing directory, and this export writes a single file; it "
                f"never replaces a directory. Received: path={path!r}"
            )
        if kind == "directory" and stat.S_ISREG(mode):
            raise ValueError(
                f"`path` is an existing file, and this export writes a directory; it never "
                f"replaces a file. Received: path={path!r}"
            )
    return absolute


def _check_target(path, overwrite):
    check_flag("overwrite", overwrite)
    if os.path.isdir(path) and not os.path.islink(path):
        if os.listdir(path) and not overwrite:
            raise FileExistsError(
                f"The output path {path!r} exists and is not empty. Pass `overwrite=True` to "
                "replace it, or choose another path."
            )
    elif os.path.lexists(path) and not overwrite:
        raise FileExistsError(
            f"The output path {path!r} exists. Pass `overwrite=True` to replace it, or choose "
            "another path."
        )


@contextlib.contextmanager
def staged_output(path, overwrite, kind):
    """Yield a temporary path; on success move it to ``path``, on failure remove everything."""
    path = check_export_path(path, overwrite, kind)
    _check_target(path, overwrite)
    parent = os.path.dirname(path)
    created = []
    probe = parent
    while not os.path.isdir(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.partial-", dir=parent)
    staged = os.path.join(staging, os.path.basename(path))
    try:
        yield staged
        if not os.path.lexists(staged):
            raise RuntimeError(f"The exporter wrote nothing to {staged!r}")
        if os.path.lexists(path):
            # An empty directory, or anything when overwrite=True: set it aside, then replace.
            _check_target(path, overwrite)
            old = os.path.join(staging, ".old")
            os.rename(path, old)
            try:
                os.rename(staged, path)
            except BaseException:
                os.rename(old, path)
                raise
        else:
            os.rename(staged, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # deepest first: only the folders this call created
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    shutil.rmtree(staging, ignore_errors=True)
