"""The training commands: `cloud`, `serve`, `join` and `demo`."""

from __future__ import annotations

import argparse
from pathlib import Path

from hiertrain_edge.cli.common import add_threads
from hiertrain_edge.cli.device_config import add_config_option, apply_device_config
from hiertrain_edge.cli.keys import add_security_flags, security_from_args
from hiertrain_edge.cli.status import add_observe_options, status_listen


def _add_schedule_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--schedule",
        metavar="N:C1:C2,...",
        help=f"fixed schedule, groups as n:c1:c2, e.g. 22:6:6,21:2:6,21:2:4 ({default})",
    )


def _listen_endpoint(value: str | None, default_port: int) -> str:
    """--listen as an endpoint: host[:port] as the other flags take it, or tcp://HOST:PORT;
    by default every interface (which needs keys, or --insecure)."""
    from hiertrain_edge.wire.transport import endpoint

    return endpoint(value, default_port) if value else f"tcp://*:{default_port}"


def cmd_cloud(args: argparse.Namespace) -> int:
    from hiertrain_edge.runtime.cloud import CloudServer
    from hiertrain_edge.wire.transport import CLOUD_PORT

    listen = _listen_endpoint(args.listen, CLOUD_PORT)
    security = security_from_args(args, listens=[listen])
    CloudServer(listen, args.out, once=args.once, security=security).serve()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hiertrain_edge.planning.schedule import Schedule
    from hiertrain_edge.runtime.edge import EdgeServer
    from hiertrain_edge.runtime.job import Job, load_job
    from hiertrain_edge.wire.transport import CLOUD_PORT, EDGE_PORT, endpoint

    if args.job:
        load_job(args.job)  # a mistake in the job file first; the edge re-reads it at each join
    job = Path(args.job) if args.job else Job()
    schedule = Schedule.parse(args.schedule) if args.schedule else None
    cloud = endpoint(args.cloud, CLOUD_PORT) if args.cloud else None
    listen = _listen_endpoint(args.listen, EDGE_PORT)
    status = status_listen(args.status_listen, listen)
    security = security_from_args(
        args, listens=[listen, status], server=cloud, server_role="cloud"
    )
    EdgeServer(
        job,
        listen,
        cloud,
        args.out,
        once=args.once,
        schedule=schedule,
        status_listen=status,
        metrics_port=args.metrics_port,
        security=security,
    ).serve()
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from hiertrain_edge.datasets import load_dataset, split
    from hiertrain_edge.runtime.device import Board
    from hiertrain_edge.wire.transport import EDGE_PORT, endpoint

    apply_device_config(args)  # settings file fills what the flags left unset
    data = load_dataset(args.data)
    train, test = split(data, args.test_fraction)
    edge = endpoint(args.edge, EDGE_PORT)
    security = security_from_args(args, server=edge, server_role="edge")
    report = Board(edge, train, test, args.out, args.board_id, security=security).run()
    if args.report:
        report.write(args.report)
    acc = "n/a" if report.test_accuracy is None else f"{report.test_accuracy:.4f}"
    print(
        f"trained {len(report.iterations)} steps in {report.wall_s:.1f} s: "
        f"train loss {report.train_loss:.4f}, test accuracy {acc} on {len(test)} samples"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hiertrain_edge.errors import ConfigError
    from hiertrain_edge.models import get_model
    from hiertrain_edge.planning.schedule import Schedule, default_three_group
    from hiertrain_edge.runtime.demo import run_demo

    settings: dict[str, object] = {
        "model": args.model,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "epochs": args.epochs,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "seed": args.seed,
    }
    if args.schedule and args.plan:
        raise ConfigError("give either --schedule or --plan, not both")
    if args.steps is not None and args.epochs is not None:
        raise ConfigError(
            f"give either --steps ({args.steps}) or --epochs ({args.epochs:g}), not both"
        )
    spec = get_model(args.model)
    if args.schedule:
        schedule = Schedule.parse(args.schedule).validate(spec.num_units, args.batch_size)
        settings["schedule"] = schedule.to_dict()
    elif not args.plan:
        # The three-group default, so that every tier does real work in the demo.
        settings["schedule"] = default_three_group(spec.num_units, args.batch_size).to_dict()
    return run_demo(
        settings,
        args.data,
        args.report,
        args.out,
        args.threads or 1,
        args.test_fraction,
        args.log_level,
        _edge_observe_args(args),
    )


def _edge_observe_args(args: argparse.Namespace) -> list[str]:
    out = ["--status-listen", args.status_listen or "none"]
    if args.metrics_port is not None:
        out += ["--metrics-port", str(args.metrics_port)]
    return out


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("cloud", help="run the cloud tier: wait for edges and train their tails")
    p.add_argument("--listen", help="endpoint to bind (default tcp://*:47820)")
    p.add_argument("--out", help="folder for the trained model (model.pt)")
    p.add_argument("--once", action="store_true", help="exit after one job")
    add_security_flags(p, admits="edges", connects=None)
    add_threads(p)
    p.set_defaults(func=cmd_cloud, tier="cloud")

    p = sub.add_parser("serve", help="run the edge tier: admit a board and coordinate the job")
    p.add_argument("--job", help="job file (TOML); default: the built-in small-CNN job")
    p.add_argument("--cloud", help="cloud host[:port] (default port 47820)")
    p.add_argument("--listen", help="endpoint to bind for boards (default tcp://*:47810)")
    p.add_argument("--out", help="folder for the trained model (model.pt)")
    p.add_argument("--once", action="store_true", help="exit after one job")
    add_observe_options(p)
    add_security_flags(p, admits="boards (and status clients)", connects="cloud")
    _add_schedule_option(p, "overrides the job file's")
    add_threads(p)
    p.set_defaults(func=cmd_serve, tier="edge")

    p = sub.add_parser("join", help="run the device tier on the board that holds the data")
    p.add_argument(
        "edge",
        metavar="EDGE_HOST",
        nargs="?",
        help="edge host[:port] (default port 47810; default: `edge` in the settings file)",
    )
    add_config_option(p)
    p.add_argument(
        "--data",
        help="MNIST IDX folder, .npz with x and y, or image folder "
        "(default: the bundled MNIST test set)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="last fraction of the samples held out for testing (default 0.2)",
    )
    p.add_argument("--report", help="write a JSON run report here")
    p.add_argument("--out", help="folder for the trained model (model.pt)")
    p.add_argument(
        "--board-id",
        help="this board's name at the edge (default: the host name); a restarted board "
        "with the same name resumes its job",
    )
    add_security_flags(p, admits=None, connects="edge")
    add_threads(p)
    p.set_defaults(func=cmd_join, tier="device")

    p = sub.add_parser("demo", help="all three tiers on this machine, on the bundled MNIST")
    p.add_argument("--data", help="data path as for join (default: the bundled MNIST test set)")
    p.add_argument(
        "--model",
        default="small_cnn",
        help="zoo model or package.module:function (default small_cnn)",
    )
    p.add_argument(
        "--batch-size", type=int, default=64, metavar="B", help="samples per step (default 64)"
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (instead of --epochs)")
    p.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="passes over the training samples (default 3; give this or --steps)",
    )
    p.add_argument(
        "--optimizer",
        choices=["sgd", "adam"],
        default="sgd",
        help="sgd (with momentum 0.9) or adam (default sgd)",
    )
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the weights and the batch order (default 0)"
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="last fraction of the samples held out for testing (default 0.2)",
    )
    p.add_argument("--report", help="write the board's JSON run report here")
    p.add_argument("--out", help="folder for logs and models (default: a temporary folder)")
    # Off unless asked: a free port each run.
    add_observe_options(p, default_status="none", status_default_text="off")
    p.add_argument(
        "--plan",
        action="store_true",
        help="profile the three tiers and let the planner's schedule table choose each "
        "step's schedule (default: a fixed three-group schedule)",
    )
    _add_schedule_option(p, "default: a fixed three-group schedule")
    add_threads(p)
    p.set_defaults(func=cmd_demo, tier="demo")
