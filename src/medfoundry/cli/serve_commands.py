"""``medfoundry serve``: the web app (upload, segment, view, correct, download)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.cli.arg_types import positive_int

log = logging.getLogger(__name__)


def add_serve(sub, common) -> None:
    """Register ``medfoundry serve``."""
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="web app: upload an image, segment it, view and correct the overlay, download",
        description="Serve a web page and an HTTP API (OpenAPI at /docs) to upload a NIfTI or a "
        "zipped DICOM series, segment it with one of the given models in a bounded job queue, "
        "view the label overlay in 2D and 3D (NiiVue), correct it with a brush, and download "
        "the label map (NIfTI), a DICOM SEG (DICOM input) and the findings report. Users "
        "authenticate with a bearer token: the first start creates the 'admin' user and prints "
        "its token once; --add-user makes more. Only token hashes are stored in WORKDIR.",
        epilog="Example: medfoundry serve --workdir serve_work --model hippo=runs/hippo/run",
    )
    p.add_argument(
        "--workdir",
        required=True,
        type=Path,
        metavar="DIR",
        help="server folder: token hashes and jobs/<user>/<job id>/ (inputs and results)",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a model offered as NAME: a model file, a checkpoint or a run folder (repeatable)",
    )
    p.add_argument(
        "--add-user",
        metavar="NAME",
        help="create user NAME (or give it a new token), print the token once, and exit",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--max-upload-mb",
        type=positive_int,
        default=512,
        metavar="MB",
        help="largest upload accepted, in MiB (default 512)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="jobs predicted at the same time (default 1: memory holds one job's volume)",
    )
    p.add_argument(
        "--max-queue",
        type=positive_int,
        default=32,
        metavar="N",
        help="jobs waiting at most; more uploads answer 503 until there is room (default 32)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.set_defaults(func=_serve)


def _serve(a: argparse.Namespace) -> int:
    from medfoundry.serve import ServeConfig, TokenStore, UploadLimits, create_app

    tokens = TokenStore(a.workdir)
    if a.add_user:
        token = tokens.add_user(a.add_user)
        print(f"token for user '{a.add_user}' (shown once; only its hash is kept):\n{token}")
        return 0
    models = dict(_model_arg(m) for m in a.model)
    if not models:
        raise MedfoundryError("give at least one --model NAME=PATH")
    import uvicorn

    limits = UploadLimits(max_upload_bytes=a.max_upload_mb * 2**20)
    config = ServeConfig(a.workdir, models, a.workers, a.max_queue, a.device, limits)
    token = tokens.ensure_admin()
    app = create_app(config)
    if token:
        print(f"first start: token for user 'admin' (shown once; only its hash is kept):\n{token}")
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without TLS: put a TLS reverse proxy in front", a.host)
    print(f"serving {', '.join(models)} on http://{a.host}:{a.port}/ (API: /docs); Ctrl-C stops")
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0


def _model_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise MedfoundryError(f"--model '{text}': expected NAME=PATH")
    if not Path(path).exists():
        raise MedfoundryError(f"--model {name}: {path} not found")
    return name, Path(path)
