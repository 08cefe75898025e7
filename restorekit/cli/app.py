"""``restorekit app``: serve the Gradio app (Restore, Degrade and Models tabs).

The app lives outside the engine package: ``restorekit_gradio`` in an installed wheel, the
``gradio_app/`` folder in a checkout. Gradio is imported only when this command runs.
"""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any

from ..errors import InvalidParameterError
from ..frontends import load_front_end


def register(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "app",
        parents=[common],
        help="serve the web app (restore, compare, batch, degrade, models)",
        description="Serve RestoreKit's Gradio app. It listens on 127.0.0.1 unless --host says "
        "otherwise; --share opens a public Gradio link (protect it with --auth).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=None, help="port (default: 7860, or the next free one)")
    parser.add_argument("--share", action="store_true", help="also serve through a public *.gradio.live link")
    parser.add_argument("--auth", metavar="USER:PASS", default=None, help="require this login")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N", help="largest input image in pixels (default: 16,000,000)")
    parser.add_argument("--max-output-pixels", type=int, default=None, metavar="N", help="largest result in pixels (default: 64,000,000)")
    parser.add_argument("--max-file-size", default="50mb", metavar="SIZE", help="largest upload, e.g. 50mb or 1gb (default: 50mb)")
    parser.add_argument("--queue-size", type=int, default=32, metavar="N", help="jobs that may wait in the queue (default: 32)")
    parser.set_defaults(handler=cmd_app)
    return parser


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``user:pass`` -> ``(user, pass)``."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise InvalidParameterError("--auth takes USER:PASS, e.g. --auth alice:s3cret.")
    return user, password


def load_app_package() -> ModuleType:
    """The app's ``ui`` module (see :mod:`restorekit.frontends`)."""
    return load_front_end("app", "ui")


def cmd_app(args: argparse.Namespace) -> int:
    ui = load_app_package()
    auth = parse_auth(args.auth)  # --share without --auth is warned about by the launch
    config = ui.AppConfig(
        host=args.host,
        port=args.port,
        share=args.share,
        auth=auth,
        max_pixels=args.max_pixels or ui.jobs.DEFAULT_MAX_PIXELS,
        max_output_pixels=args.max_output_pixels or ui.jobs.DEFAULT_MAX_OUTPUT_PIXELS,
        max_file_size=args.max_file_size,
        queue_size=args.queue_size,
    )
    demo, url = ui.launch(config, prevent_thread_lock=True, quiet=args.quiet)
    print(f"RestoreKit app on {url}  (Ctrl-C to stop)")
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0
