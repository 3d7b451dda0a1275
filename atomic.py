"""Writing a file whole or not at all. A reader learning the model can skip this file.

Every file the project writes (checkpoints, pictures, CSVs, the image cache, bench.py's JSON) goes
through save_atomically: a crash, a Ctrl-C or a full disk never leaves half a file, and the previous
one stays whole until the new one is.
"""
import io
import os
from pathlib import Path

import torch

TEMP = ".tmp"  # a temp file is named like its file, plus TEMP and the writer's process id


def save_atomically(obj, path, write=torch.save):
    """write(obj, file) into a temp file beside path, then rename it to path. A failed write raises OSError
    (errno ENOSPC for a full disk) naming path, the temp file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}{TEMP}{os.getpid()}")
    data = io.BytesIO()  # torch.save onto a full disk raises a RuntimeError without the errno; a plain write does not
    write(obj, data)
    try:
        with open(temp, "wb") as file:
            file.write(data.getbuffer())
            file.flush()
            os.fsync(file.fileno())  # on the disk before the rename: after a power cut, the old file or the new
        os.replace(temp, path)
    except BaseException as e:
        temp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename == str(temp):
            e.filename = str(path)  # the messages name the file the user knows, not the temp file
        raise


def left_behind(folder):
    """The temp files in folder whose writers were killed mid-write (kill -9, a power cut): (paths, bytes).
    Only call it while holding the folder, when no other process writes there."""
    temps = [p for p in Path(folder).glob(f"*{TEMP}*") if p.is_file() and p.name.rsplit(TEMP, 1)[1].isdigit()]
    return temps, sum(p.stat().st_size for p in temps)
