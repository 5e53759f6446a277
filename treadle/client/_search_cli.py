"""The filters of ``treadle instances list`` and the ``--tag`` of ``treadle run``."""

from __future__ import annotations

import argparse

from treadle.client._requests import Filters


def tag_arg(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may hold ``=``; the server checks the rest)."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not a tag: give it as k=v")
    return key, value


def add_tag_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--tag", dest="tags", type=tag_arg, action="append", metavar="K=V", help=help
    )


def tags_of(args: argparse.Namespace) -> dict[str, str] | None:
    return dict(args.tags) if args.tags else None


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status", action="append", help="only instances with this status (repeatable: any)"
    )
    add_tag_argument(parser, "only instances with this tag (repeatable: all of them)")
    # --key is the API key of every command: the instance's key is --flow-key, as for ``run``.
    parser.add_argument("--flow-key", metavar="KEY", help="only instances with this flow key")
    parser.add_argument("--created-after", metavar="TIME", help="ISO 8601 with a time zone")
    parser.add_argument("--created-before", metavar="TIME", help="ISO 8601 with a time zone")
    parser.add_argument("--id-prefix", metavar="PREFIX", help="ids starting with this")
    parser.add_argument("--error-name", metavar="NAME", help="ended with this error (KeyError)")


def filters_of(args: argparse.Namespace) -> Filters:
    given: Filters = {
        "tags": tags_of(args),
        "key": args.flow_key,
        "created_after": args.created_after,
        "created_before": args.created_before,
        "id_prefix": args.id_prefix,
        "error_name": args.error_name,
    }
    return given
