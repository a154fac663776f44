"""The ``sparseprune`` command (also ``python -m sparseprune``): argument parsing only; the work is
in the rest of :mod:`sparseprune.runner`.

    sparseprune train --method M --model NAME --dataset NAME [options]   train a subnetwork
    sparseprune train --resume DIR [--epochs TOTAL]                      continue a run exactly
    sparseprune oneshot --method M --model NAME (--density D | --pattern N:M) [options]
                                                                         prune a pretrained model
    torchrun --nproc-per-node N -m sparseprune train ...                 the same on N processes
    sparseprune report DIR                                               a run's table
    sparseprune compare DIR... [--plot PNG]                              runs side by side
    sparseprune info                                                     installation, methods, data

Exit status: 0 on success, 2 on bad input (one line on stderr, no traceback), 1 when training
itself fails (e.g. the loss diverges), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Optional, Sequence

import sparseprune as sp
from sparseprune import _validate as V

PROG = "sparseprune"

TRAIN_FLAGS = ("method", "model", "dataset", "opt", "batch_size", "steps_per_epoch", "lr", "group_lr", "density",
               "density_scope", "budget_strength", "seed", "out", "val_fraction", "augment", "select", "init",
               "data_dir", "download", "threads", "overwrite", "fsdp")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``sparseprune train: error: ... (see --help)``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


OPTION_PREFIX = "method_option:"  # argparse dest of the flags made from the methods' options


def _option_value(text: str):
    from .config import parse_value

    return parse_value(text)


def _method_option_flags(parser: argparse.ArgumentParser, taken: set[str]) -> None:
    """One flag per option of the registered methods (their constructors' keyword arguments):
    ``--rescale smart``, ``--temperature 0.5``; booleans as ``--signed-constant`` /
    ``--no-signed-constant``. Options whose name a runner flag already uses (``density``) are left
    to that flag; any option is also reachable with ``--opt KEY=VALUE``."""
    from . import methods

    g = parser.add_argument_group(
        "method options", "Built from the registered methods' keyword arguments (see "
        "`sparseprune info`); checked by sparseprune.methods.create for the chosen --method.")
    for name, defaults in methods.option_defaults().items():
        if name in taken:
            continue
        flag = "--" + name.replace("_", "-")
        where = "; ".join(f"{m} (default {d!r})" for m, d in defaults.items())
        kw = dict(dest=OPTION_PREFIX + name, default=argparse.SUPPRESS, help=where)
        if all(isinstance(d, bool) for d in defaults.values()):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            g.add_argument(flag, type=_option_value, metavar=name.upper(), **kw)


def method_options(args: argparse.Namespace) -> dict:
    """The method options given as their own flags (``--rescale smart`` -> ``{"rescale": "smart"}``)."""
    return {k[len(OPTION_PREFIX):]: v for k, v in vars(args).items()
            if k.startswith(OPTION_PREFIX)}


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a method on a model and dataset",
                       description="Train a sparse subnetwork: live progress per epoch, a "
                       "checkpoint per epoch, final.json, metrics.csv and plots in the run "
                       "directory.")
    g = p.add_argument_group("what to train")
    from . import methods

    g.add_argument("--method", help=f"pruning method: {', '.join(sorted(methods.available()))} "
                   "(see `sparseprune info`)")
    g.add_argument("--model", help="lenet300, lenet5, conv2, conv4, conv6, vgg11, resnet18")
    g.add_argument("--dataset", help="fashion-mnist, mnist, kmnist, cifar10, cifar100, synthetic")
    g.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="method option, repeatable, e.g. --opt rescale=smart; the same as the "
                        "option's own flag below (--rescale smart)")
    role = {r: ", ".join(m for m in sp.methods.available()
                         if sp.methods.get(m).density_role == r) for r in V.DENSITY_ROLES}
    g.add_argument("--density", type=_float,
                   help="fraction of weights the final subnetwork keeps, in (0, 1]; a method with "
                        f"a density option ({role['option']}) trains with it; methods with a "
                        f"learned density ({role['learned']}) train toward it with a budget "
                        "(by default a constraint on the density each method's own final rule "
                        "keeps, ramped over the first 80 %% of the steps, then the masks commit) "
                        "and the final top-k by score keeps exactly it; for the others the final "
                        "top-k alone imposes it")
    g.add_argument("--density-scope", choices=V.SCOPES,
                   help="impose --density over all layers together (default) or per layer")
    g.add_argument("--budget-strength", type=_float, metavar="LAMBDA",
                   help="use the penalty form of the budget instead, lambda * ((C - D*N) / "
                        "C_initial)^2 with this lambda (sparseprune.budget.BudgetLoss); 0: no "
                        "budget, the final top-k alone imposes the density (default: the "
                        "constrained budget, sparseprune.budget.Budget)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=_int, help="epochs (default 10); with --resume the run's new "
                   "total, not epochs to add")
    g.add_argument("--batch-size", type=_int, help="batch size (default 256)")
    g.add_argument("--steps-per-epoch", type=_int, metavar="N",
                   help="end each epoch after N batches of its own shuffled order (default: a "
                        "full pass); short epochs for slow models, still exactly resumable")
    g.add_argument("--lr", type=_float, help="learning rate of the method's main parameter "
                   "group (default: the method's, e.g. ASLP 50 on the scores)")
    g.add_argument("--group-lr", action="append", metavar="NAME=LR",
                   help="learning rate of a named group (scores, scale, weights), repeatable")
    g.add_argument("--seed", type=_int, help="seed of init, split, shuffling, masks (default 0)")
    g.add_argument("--patience", type=_int,
                   help="stop after this many epochs without a val accuracy gain (default off)")
    g.add_argument("--select", choices=("best", "last"),
                   help="final model: best validation epoch (default) or the last")
    g.add_argument("--init", choices=V.INITS,
                   help="weight init (default: the method's; ASLP: kaiming_normal)")
    g.add_argument("--max-minutes", type=_float,
                   help="do not start an epoch that would end past this many minutes of "
                        "training in this session (a resumed run gets a new budget)")
    g.add_argument("--threads", type=_int, help="torch CPU threads (default torch's)")
    g.add_argument("--fsdp", action="store_true", default=None,
                   help="under torchrun: shard weights, scores, gradients and optimizer state "
                        "over the ranks (FSDP2 fully_shard per masked layer and at the root; "
                        "default: DDP, every rank holds the whole model)")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", help="dataset directory or its parent (default: "
                   "$SPARSEPRUNE_DATA, /usr/share/datasets/<name>, ~/.cache/sparseprune/<name>)")
    g.add_argument("--download", action="store_true", default=None,
                   help="fetch a missing dataset from its official source (MD5-checked)")
    g.add_argument("--val-fraction", type=_float, help="validation split of train (default 0.1)")
    g.add_argument("--augment", action="store_true", default=None,
                   help="random crop (and flip where labels allow) per batch, seeded")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="run directory (default runs/<dataset>-<model>-<method>...)")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="replace a run already in --out")
    g.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR from its last checkpoint (only --epochs, "
                        "--patience, --max-minutes may change: a change is printed, written to "
                        "config.json and recorded in final.json)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    _method_option_flags(p, {a.dest for a in p._actions})


def _oneshot_parser(sub) -> None:
    p = sub.add_parser("oneshot", help="prune a pretrained model in one shot (magnitude, wanda, "
                       "sparsegpt)", description="One-shot pruning on calibration data "
                       "(sparseprune.prune_oneshot) of a runner model (weights from --weights) or "
                       "of MiniLM-L6 (--model minilm, calibrated on the fortunes corpus); writes "
                       "config.json, final.json, subnetwork.safetensors, oneshot.txt, density.png.")
    g = p.add_argument_group("what to prune")
    g.add_argument("--method", help=f"{', '.join(V.ONESHOT_METHODS)}")
    g.add_argument("--model", help="minilm, or a runner model: lenet300, lenet5, conv2, conv4, "
                   "conv6, vgg11, resnet18")
    g.add_argument("--dataset", help="runner models: the dataset (calibration from its train "
                   "split, accuracy on its test split)")
    g.add_argument("--weights", metavar="PATH", help="runner models: a state dict (torch.save "
                   "or sparseprune.save) or a finished train run directory (its subnetwork.safetensors)")
    g.add_argument("--density", type=_float, help="fraction of each layer's weights kept")
    g.add_argument("--pattern", metavar="N:M", help="N kept of every M consecutive inputs, "
                   "e.g. 2:4 (instead of --density)")
    g.add_argument("--include", action="append", metavar="GLOB", help="layers to prune "
                   "(repeatable; default: every layer; minilm: encoder.*)")
    g.add_argument("--exclude", action="append", metavar="GLOB", help="layers to leave dense")
    g = p.add_argument_group("calibration")
    g.add_argument("--calibration", type=_int, help="calibration images or sentences (128)")
    g.add_argument("--batch-size", type=_int, help="calibration batch size (32)")
    g.add_argument("--heldout", type=_int, help="minilm: held-out sentences scored (512)")
    g.add_argument("--one-pass", action="store_true", help="calibrate every layer on the dense "
                   "model (default: block by block on the pruned earlier blocks)")
    g.add_argument("--group", choices=("row", "layer"), help="comparison group of an "
                   "unstructured density (wanda: row, magnitude: layer)")
    g.add_argument("--blocksize", type=_int, help="sparsegpt column block (128)")
    g.add_argument("--percdamp", type=_float, help="sparsegpt dampening (0.01)")
    g.add_argument("--seed", type=_int, help="calibration sample and split seed (0)")
    g.add_argument("--val-fraction", type=_float, help="validation split (0.1, as train)")
    g.add_argument("--data-dir", help="dataset directory or its parent")
    g.add_argument("--download", action="store_true", default=None, help="fetch the dataset")
    g.add_argument("--threads", type=_int, help="torch CPU threads")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="run directory (default runs/oneshot-...)")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _oneshot(args: argparse.Namespace) -> int:
    from . import ConfigError
    from . import oneshot

    missing = [f"--{n}" for n in ("method", "model") if getattr(args, n) is None]
    if missing:
        raise ConfigError(f"oneshot needs {', '.join(missing)}")
    fields = oneshot.OneshotConfig.__dataclass_fields__
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    given["sequential"] = not args.one_pass
    if args.data_dir is not None:
        given["data_dir"] = str(pathlib.Path(args.data_dir).expanduser().absolute())
    config = oneshot.OneshotConfig(**given)
    oneshot.validate(config)
    out = pathlib.Path(args.out) if args.out else oneshot.default_out(config)
    oneshot.run(config, out, overwrite=args.overwrite, progress=not args.no_progress)
    print()
    print(oneshot.format_run(out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Learn sparse subnetworks and run them: "
                     "sparseprune's experiment runner.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {sp.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,oneshot,report,compare,info}")
    _train_parser(sub)
    _oneshot_parser(sub)
    p = sub.add_parser("report", help="print a run's results", description="Print a run's "
                       "configuration, final test accuracy, density in weights and FLOPs, and "
                       "per-layer table.")
    p.add_argument("directory", help="run directory")
    p = sub.add_parser("compare", help="compare runs", description="One Markdown table across "
                       "runs and a Pareto plot of test accuracy vs density.")
    p.add_argument("directories", nargs="+", metavar="DIR", help="run directories")
    p.add_argument("--plot", default="pareto.png", help="PNG to write (default pareto.png)")
    p.add_argument("--target-acc", type=_float, metavar="FRACTION",
                   help="add a column: first epoch whose val accuracy reaches it, e.g. 0.85")
    sub.add_parser("info", help="installation, methods, models, datasets",
                   description="Versions, CPU kernels, the methods with their training "
                   "defaults, models, and where each dataset is found.")
    return parser


def _config_from(args: argparse.Namespace):
    from . import ConfigError, RunConfig, parse_pairs

    missing = [f"--{n}" for n in ("method", "model", "dataset") if getattr(args, n) is None]
    if missing:
        raise ConfigError(f"train needs {', '.join(missing)} (or --resume DIR)")
    given = {k: v for k, v in vars(args).items()
             if k in RunConfig.__dataclass_fields__ and v is not None}
    if args.data_dir is not None:  # absolute, so that --resume works from any directory
        given["data_dir"] = str(pathlib.Path(args.data_dir).expanduser().absolute())
    given["options"] = parse_pairs(args.opt, "--opt")
    for key, value in method_options(args).items():
        if key in given["options"]:
            raise ConfigError(f"option {key} given twice (--{key.replace('_', '-')} and --opt)")
        given["options"][key] = value
    given["group_lr"] = parse_pairs(args.group_lr, "--group-lr")
    return RunConfig(**given)


def _train(args: argparse.Namespace) -> int:
    """``train`` on one process, or on each rank of a torchrun job (:mod:`.ranks`)."""
    from . import RunError
    from .ranks import join, leave, lost_peer

    ranks = join()
    try:
        return _train_on(args, ranks)
    except RuntimeError as exc:
        message = None if isinstance(exc, RunError) else lost_peer(
            exc, ranks, args.resume or args.out or "the run directory")
        if message is None:
            raise
        raise RunError(message) from exc
    finally:
        leave()


def _train_on(args: argparse.Namespace, ranks) -> int:
    from .. import runner
    from . import ConfigError

    progress = False if args.no_progress else None
    if args.resume:
        clashing = [f"--{n.replace('_', '-')}" for n in TRAIN_FLAGS
                    if getattr(args, n, None) not in (None, [])]
        clashing += [f"--{n.replace('_', '-')}" for n in method_options(args)]
        if clashing:
            raise ConfigError(f"--resume takes the configuration from {args.resume}/config.json; "
                              f"drop {', '.join(clashing)} (only --epochs, --patience, "
                              "--max-minutes may change)")
        runner.resume_run(pathlib.Path(args.resume), epochs=args.epochs, patience=args.patience,
                          max_minutes=args.max_minutes, progress=progress, ranks=ranks)
        if ranks.main:
            print(runner.report(pathlib.Path(args.resume)))
        return 0
    config = _config_from(args)
    out = pathlib.Path(args.out) if args.out else runner.default_out(config)
    args.out = str(out)  # for the interrupt message
    runner.train(config, out, overwrite=bool(args.overwrite), progress=progress, ranks=ranks)
    if ranks.main:
        print()
        print(runner.report(out))
    return 0


def _info() -> int:
    from . import data as D
    from .info import info
    from .models import MODELS
    from . import methods

    rows = info()
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key.ljust(width)}  {value}")
    print("\nmethods (train defaults; --lr / --group-lr override):")
    for name, kind in sorted(methods.available().items()):
        recipe = methods.recipe(name)
        lrs = ", ".join(f"{g} {lr:g}" for g, lr in recipe.lrs.items())
        print(f"  {name:<12} {kind:<14} {recipe.optimizer} ({lrs}; momentum {recipe.momentum:g}, "
              f"wd {recipe.weight_decay:g}, schedule {recipe.lr_schedule or 'none'}); "
              f"{recipe.source}")
        opts = [f"{o}={d[name]!r}" for o, d in methods.option_defaults().items() if name in d]
        if opts:
            print(f"  {'':<12} options: {', '.join(opts)}")
    print(f"\nmodels: {', '.join(MODELS)}")
    print("\ndatasets:")
    for name, dinfo in D.DATASETS.items():
        where = D.locate(name)
        if dinfo.kind == "synthetic":
            where = "generated in memory"
        elif where is None:
            where = f"not found (--download fetches it into {D.download_dir(name)})"
        print(f"  {name:<14} {where}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the console script; returns the exit status."""
    from . import ConfigError, RunError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, one line printed)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "oneshot":
            return _oneshot(args)
        if args.command == "report":
            from . import oneshot, report
            directory = pathlib.Path(args.directory)
            print(oneshot.format_run(directory) if oneshot.is_oneshot_run(directory)
                  else report(directory))
            return 0
        if args.command == "compare":
            from . import compare
            print(compare([pathlib.Path(d) for d in args.directories], pathlib.Path(args.plot),
                          args.target_acc))
            print(f"\nPareto plot: {pathlib.Path(args.plot).resolve()}")
            return 0
        return _info()
    except ConfigError as exc:
        print(f"{PROG} {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"{PROG} {args.command}: training failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an unwritable --out, a full disk: the file and the reason
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{PROG} {args.command}: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = getattr(args, "resume", None) or getattr(args, "out", None) or "the run directory"
        print(f"\n{PROG}: interrupted; the last completed epoch is checkpointed: continue with "
              f"`{PROG} train --resume {where}`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
