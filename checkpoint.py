"""The checkpoint: what train.py saves, and the checks that reading one makes. A reader learning the model
can skip this file; train.py and sample.py import it.

    checkpoint(...)        the dict that train.py saves with torch.save: all a resume needs
    load_checkpoint(path)  read one, with one line of error for a missing, unreadable, truncated, foreign
                           or hand-edited file, or for EMA weights that are not finite
    load_weights(...)      weights into a model, with one line for weights of another model's shape
    restore(...)           a resumed run's weights, optimizer, random stream and guide
    resume(...)            --resume: the checkpoint's settings as train.py's, and what may change
"""
import argparse
import copy
import math
from dataclasses import asdict
from pathlib import Path

import torch

from model import Config

# The keys every checkpoint has; checkpoint() also writes "guide", which checkpoints from before it lack
CHECKPOINT_KEYS = ("model", "ema", "optimizer", "generators", "step", "seconds", "config", "args")
READ = {"data": (str, type(None)), "seed": int, "t_sampling": str, "dtype": str, "compile": bool}  # sample.py's


def checkpoint(model, ema, guide, optimizer, generators, step, seconds, args):
    """All that a resumed run needs: the weights, the EMA weights, the optimizer, each process's random
    generator state, the step, the seconds the run has taken so far, the model's Config and train.py's settings
    (a dict); and under "guide" the guide's weights (None until train.py takes them)."""
    values = (model.state_dict(), ema.state_dict(), optimizer.state_dict(), generators, step, seconds,
              asdict(model.cfg), args)
    return {**dict(zip(CHECKPOINT_KEYS, values)), "guide": None if guide is None else guide.state_dict()}


def load_weights(module, state_dict):
    """module.load_state_dict, with weights that do not fit (an older version of model.py) as one line."""
    own = module.state_dict()
    differ = list(own.keys() ^ state_dict.keys()) + [k for k in own.keys() & state_dict.keys()
                                                     if own[k].shape != state_dict[k].shape]
    if differ:  # torch's own message lists every tensor, over many lines
        raise ValueError(f"the checkpoint's weights do not fit this version of the model ({len(differ)} "
                         f"{'tensors differ' if len(differ) > 1 else 'tensor differs'}, e.g. "
                         f"{', '.join(sorted(differ)[:3])}); train a new one")
    module.load_state_dict(state_dict)


def restore(saved, model, ema, optimizer, generator, rank):
    """A resumed run's state from its checkpoint: the weights, the EMA weights, the optimizer and process `rank`'s
    random stream. Returns the guide (a copy of ema with its weights), or None before the run took one. Raises
    ValueError in one line for a state that does not fit."""
    try:
        load_weights(model, saved["model"])
        load_weights(ema, saved["ema"])
        guide = None
        if saved["guide"] is not None:
            guide = copy.deepcopy(ema)
            load_weights(guide, saved["guide"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generators"][rank])
    except (KeyError, RuntimeError) as e:  # a hand-edited optimizer or generator state, say
        raise ValueError((str(e).strip().splitlines() or [type(e).__name__])[0]) from None
    return guide


def load_checkpoint(path):
    """A checkpoint written by train.py as a dict, its config as a Config. Raises ValueError, in one line, for a
    missing, unreadable, truncated or foreign file, for a key that holds the wrong kind of value, and for EMA
    weights that are not finite (they would sample black images)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give the checkpoint in it, {path / 'ckpt.pt'}")
    if not path.is_file():
        out = path.parent  # train.py writes out/ckpt.pt
        raise ValueError(f"no checkpoint at {path}; train one first with: python train.py"
                         + (f" --out {out}" if path.name == "ckpt.pt" and out not in (Path("out"), Path(".")) else ""))
    not_ours = f"{path} is not a checkpoint written by train.py"
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError as e:  # no permission, a disk error
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if head != b"PK\x03\x04":  # torch.save writes a zip file
        raise ValueError(not_ours if head else f"{path} is empty")
    try:  # map_location: a CUDA-trained checkpoint loads anywhere
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or corrupt
        raise ValueError(f"cannot read {path} as a checkpoint ({type(e).__name__}); is the file complete?") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{not_ours}: it holds a {type(saved).__name__}")
    missing = [key for key in CHECKPOINT_KEYS if key not in saved]
    if missing or not (isinstance(saved["args"], dict) and READ.keys() <= saved["args"].keys()):
        raise ValueError(f"{not_ours} (missing: {', '.join(missing) or 'some of its args'})")
    problem = wrong_value(saved)
    if problem:
        raise ValueError(f"{path}: {problem}; was it edited by hand? Use an earlier checkpoint, or train a new one")
    if not all(w.isfinite().all() for w in saved["ema"].values() if w.is_floating_point()):
        raise ValueError(f"{path}: its EMA weights are not finite (nan or inf), so every sample would be black; "
                         f"train a new one")
    try:
        saved["config"] = Config(**saved["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path} describes a model this version cannot build ({e})") from None
    return saved


def wrong_value(saved):
    """What is wrong with the values of a checkpoint's keys, as words naming the key, or None."""
    weights = lambda v: isinstance(v, dict) and v and all(isinstance(k, str) and torch.is_tensor(t) for k, t in v.items())
    number = lambda v, kind: isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    wanted = {"model": weights, "ema": weights, "guide": lambda v: v is None or weights(v),
              "optimizer": lambda v: isinstance(v, dict) and {"state", "param_groups"} <= v.keys(),
              "generators": lambda v: isinstance(v, list) and v and all(torch.is_tensor(g) and g.dtype == torch.uint8
                                                                         for g in v),
              "step": lambda v: number(v, int), "seconds": lambda v: number(v, (int, float)),
              "config": lambda v: isinstance(v, dict)}
    for key, fits in wanted.items():
        if not fits(saved.get(key)):
            return f"'{key}' holds {shown(saved.get(key))}"
    for key, kind in READ.items():
        if not isinstance(saved["args"][key], kind) or (kind is int and isinstance(saved["args"][key], bool)):
            return f"args '{key}' holds {shown(saved['args'][key])}"
    return None


def shown(value):
    """A value as an error line shows it: short."""
    text = repr(value) if isinstance(value, (str, int, float, type(None))) else f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


# A resume takes every setting from the checkpoint but these: NOT_KEPT belong to this start (a CUDA run may
# resume on a CPU), and MAY_CHANGE stand unless given again; --steps or --minutes replaces the other.
NOT_KEPT = {"out", "device", "dtype", "compile", "resume"}
MAY_CHANGE = {"steps", "minutes", "log_every", "sample_every", "save_every"}


def resume(parser, args, processes):
    """--resume: the checkpoint in --out, and train.py's command line parsed again with its settings as the
    defaults, each checked as its flag is. Raises ValueError, in one line, for a change that is not allowed."""
    path = Path(args.out) / "ckpt.pt"
    checkpoint = load_checkpoint(path)
    saved = {k: v for k, v in checkpoint["args"].items() if k not in NOT_KEPT}
    if saved["data"] and not Path(saved["data"]).is_dir():  # else argparse would blame a --data never given
        raise ValueError(f"{path} was trained on {saved['data']}, which is no folder from here: resume where the "
                         f"run began")
    for action in parser._actions:  # argparse checks what is typed, not defaults: the flags' own checks, here
        value = saved.get(action.dest)
        try:
            if value is not None and action.type:
                action.type(str(value))
            if value is not None and action.choices and value not in action.choices:
                raise argparse.ArgumentTypeError(f"not one of {', '.join(action.choices)}")
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"{path}: args '{action.dest}' holds {shown(value)}: {e}; was it edited by hand? "
                             f"Use an earlier checkpoint, or train a new one") from None
    if args.steps or args.minutes:  # the run's new length
        saved.update(steps=args.steps, minutes=args.minutes)
    parser.set_defaults(**saved)
    args = parser.parse_args()
    for key, value in saved.items():
        if key not in MAY_CHANGE and getattr(args, key) != value:
            flag = "--" + key.replace("_", "-")
            trained = f"with {flag} {value}" if value is not None else f"without {flag}"
            raise ValueError(f"{path} was trained {trained}, not with {flag} {getattr(args, key)}: "
                             f"drop {flag}, or use another --out for a new run")
    if args.steps and args.steps <= checkpoint["step"]:
        raise ValueError(f"{path} is at step {checkpoint['step']} of {args.steps}: nothing to train; give a larger "
                         + ("--minutes" if args.minutes else "--steps") + " to go on")
    if len(checkpoint["generators"]) != processes:  # one random stream per process
        n = len(checkpoint["generators"])
        raise ValueError(f"{path} was trained by {n} process(es), not {processes}: resume it with as many "
                         f"(torchrun --standalone --nproc_per_node={n}" + (", or no torchrun)" if n == 1 else ")"))
    return checkpoint, args
