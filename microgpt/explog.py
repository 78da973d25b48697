"""Experiment logging beyond metrics.jsonl: `microgpt train --log tensorboard` writes every step's
loss and lr and every validation loss as TensorBoard scalars in DIR/tensorboard.

    pip install tensorboardX            # or: pip install -e '.[tensorboard]'
    microgpt train --out runs/names --log tensorboard
    tensorboard --logdir runs           # (tensorboard itself is a separate install)

The writer is tensorboardX's SummaryWriter, else torch.utils.tensorboard's. A resumed run drops the
events past its checkpoint (purge_step), as metrics.jsonl does.
"""

import os

from microgpt.errors import UsageError
from microgpt.install import hint

LOGS = ("tensorboard",)  # the choices of --log
TAGS = {"loss": "train/loss", "lr": "train/lr", "val_loss": "val/loss"}  # metrics.jsonl key -> scalar tag


def summary_writer():
    """The SummaryWriter class to use, or a UsageError saying what to install."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("--log tensorboard needs tensorboardX (or torch with tensorboard), which is not "
                             f"installed: {hint('tensorboard', 'tensorboardX')}") from None
    return SummaryWriter


def board_dir(out_dir: str) -> str:
    return os.path.join(out_dir, "tensorboard")


def check_board_dir(out_dir: str) -> None:
    """The events go into a folder DIR/tensorboard: anything else by that name is the user's, and stays."""
    path = board_dir(out_dir)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UsageError(f"--log tensorboard writes into the folder {path}, but that is a file; move it, "
                         f"or choose another --out")


class TensorBoardLog:
    def __init__(self, out_dir: str, start_step: int):
        self.writer = summary_writer()(log_dir=board_dir(out_dir),
                                       purge_step=start_step + 1 if start_step else None)

    def write(self, entry: dict) -> None:
        """One metrics.jsonl entry: {"step", "loss", "lr", "dt"} or {"step", "val_loss"}."""
        for key, tag in TAGS.items():
            if key in entry:
                self.writer.add_scalar(tag, entry[key], entry["step"])

    def close(self) -> None:
        self.writer.close()
