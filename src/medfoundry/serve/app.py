"""The FastAPI app: :func:`create_app` over a :class:`ServeConfig`.

Every ``/api`` route but ``/api/health`` needs ``Authorization: Bearer <token>`` (401 otherwise);
a user sees only their own jobs (another user's job id answers 404, as an unknown one). An upload
is the raw request body (``POST /api/jobs?model=NAME&filename=case.nii.gz``), streamed to the job
folder with a size cap, then sniffed and, for a zip, checked and extracted (:mod:`.uploads`);
refusals answer 400/413/415 and leave nothing behind. ``/`` serves the viewer page, ``/docs`` and
``/openapi.json`` the API description.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from medfoundry import MedfoundryError
from medfoundry.serve.auth import TokenStore
from medfoundry.serve.jobs import JOB_ID, Job, JobQueue, QueueFullError, new_job_id
from medfoundry.serve.runner import ModelSet, apply_clicks, apply_correction, run_job
from medfoundry.serve.uploads import (
    UploadError,
    UploadLimits,
    extract_zip_safely,
    save_stream,
    sniff_upload,
    upload_kind,
)

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
VIEWER_JS = STATIC / "vendor" / "niivue.umd.js"
VIEWER_MISSING = (
    f"the NiiVue viewer is not installed ({VIEWER_JS} missing): run scripts/setup.sh, "
    "which fetches it from the npm registry"
)
RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
MEDIA_TYPES = {
    ".nii.gz": "application/gzip",
    ".nii": "application/octet-stream",
    ".json": "application/json",
    ".html": "text/html",
    ".dcm": "application/dicom",
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; connect-src 'self' blob: data:; worker-src 'self' blob:; "
    "object-src 'none'; frame-ancestors 'none'",
}


_bearer = HTTPBearer(auto_error=False)


def current_user(
    request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The user whose bearer token came with the request (401 otherwise)."""
    user = request.app.state.tokens.user_for(cred.credentials if cred else None)
    if user is None:
        raise HTTPException(401, "missing or invalid token", {"WWW-Authenticate": "Bearer"})
    return user


User = Annotated[str, Depends(current_user)]


def own_job(request: Request, job_id: str, user: User) -> Job:
    """The caller's job ``job_id`` (404 for an unknown id and for another user's job alike)."""
    job = request.app.state.jobs.get(user, job_id) if JOB_ID.match(job_id) else None
    if job is None:
        raise HTTPException(404, "no such job")
    return job


OwnJob = Annotated[Job, Depends(own_job)]


class Click(BaseModel):
    zyx: list[int] | None = Field(None, min_length=3, max_length=3, description="voxel (z, y, x)")
    mm_ras: list[float] | None = Field(
        None, min_length=3, max_length=3, description="world RAS mm (x, y, z), as viewers report"
    )
    positive: bool = True


class Clicks(BaseModel):
    points: list[Click] = Field(min_length=1, max_length=64)
    label: int = Field(description="the class id the clicked object becomes")
    model: str | None = Field(None, description="a promptable model (default: the job's)")


@dataclass
class ServeConfig:
    workdir: Path
    """Holds ``tokens.json`` (token hashes) and ``jobs/<user>/<job id>/``."""
    models: dict[str, Path] = field(default_factory=dict)
    """Model name shown to users -> model file, checkpoint or run folder."""
    workers: int = 1
    """Jobs predicted at the same time (each holds one volume and its logits in memory)."""
    max_queue: int = 32
    """Jobs waiting at most; a new upload beyond that answers 503."""
    device: str = "auto"
    limits: UploadLimits = field(default_factory=UploadLimits)


def create_app(config: ServeConfig, models: ModelSet | None = None) -> FastAPI:
    """The app; ``models``: already loaded models (default: load ``config.models``)."""
    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    models = models or ModelSet(config.models, config.device)
    tokens = TokenStore(workdir)
    limits = config.limits
    jobs = JobQueue(
        workdir / "jobs",
        lambda job, folder: run_job(job, folder, models, jobs),
        config.workers,
        config.max_queue,
    )
    if not VIEWER_JS.is_file():
        log.warning(VIEWER_MISSING)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.stop()

    app = FastAPI(
        title="medfoundry serve",
        description="Upload a NIfTI or a zipped DICOM series, segment it with a model, download the "
        "label map, DICOM SEG and findings. Authenticate with `Authorization: Bearer <token>`.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own /docs loads Swagger UI from a CDN; ours is vendored
        redoc_url=None,
    )
    app.state.jobs, app.state.tokens, app.state.models = jobs, tokens, models

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.exception_handler(UploadError)
    async def upload_refused(request: Request, exc: UploadError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(QueueFullError)
    async def queue_full(request: Request, exc: QueueFullError):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "10"})

    @app.exception_handler(MedfoundryError)
    async def user_error(request: Request, exc: MedfoundryError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/api/health", tags=["server"])
    def health() -> dict:
        """Liveness, queue counts and whether the viewer is installed (no token needed)."""
        return {"ok": True, "viewer_installed": VIEWER_JS.is_file(), "jobs": jobs.counts()}

    @app.get("/api/me", tags=["server"])
    def me(user: User) -> dict:
        return {"user": user}

    @app.get("/api/models", tags=["models"])
    def list_models(user: User) -> list[dict]:
        """The models offered: name, class ids -> names, whether it takes prompts."""
        return [m.describe() for m in models.models.values()]

    @app.post("/api/jobs", status_code=202, tags=["jobs"], openapi_extra=RAW_BODY)
    async def create_job(
        request: Request,
        user: User,
        model: Annotated[str, Query(description="a name from /api/models")],
        filename: Annotated[str, Query(description="case.nii.gz, case.nii or series.zip")],
    ) -> dict:
        """Upload an image as the raw body and queue its segmentation (202: the job record)."""
        kind = upload_kind(filename)
        models.get(model)
        jobs.check_room()
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_upload_bytes:
            raise UploadError(
                f"upload larger than the limit of {limits.max_upload_bytes / 2**20:.0f} MiB", 413
            )
        job = Job(new_job_id(), user, model, "dicom" if kind == "zip" else "nifti", filename[:200])
        folder = jobs.new_folder(user, job.id)
        try:
            part = folder / "upload.part"
            await save_stream(request.stream(), part, limits.max_upload_bytes)
            await run_in_threadpool(_unpack_upload, part, kind, folder, limits)
            jobs.submit(job)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return job.to_json()

    @app.get("/api/jobs", tags=["jobs"])
    def list_jobs(user: User) -> list[dict]:
        """The caller's jobs, newest first."""
        return [j.to_json() for j in jobs.list(user)]

    @app.get("/api/jobs/{job_id}", tags=["jobs"])
    def job_status(job: OwnJob) -> dict:
        """State (queued, running, done, failed), progress 0..1, error, files, findings."""
        return job.to_json()

    @app.get("/api/jobs/{job_id}/files/{key}", tags=["jobs"])
    def download(job: OwnJob, key: str) -> FileResponse:
        """A job file by key: image, labels, labels_model, seg, findings_json, findings_html."""
        name = job.files.get(key)
        if name is None:
            raise HTTPException(404, f"job has no '{key}' file (has: {', '.join(job.files)})")
        path = jobs.folder(job) / name
        media = next((m for s, m in MEDIA_TYPES.items() if name.endswith(s)), None)
        return FileResponse(
            path,
            media_type=media or "application/octet-stream",
            filename=f"{Path(job.filename).name.split('.')[0] or 'case'}_{name}",
            content_disposition_type="attachment",
            headers={"Cache-Control": "no-store"},  # a correction replaces the labels
        )

    @app.post("/api/jobs/{job_id}/labels", tags=["jobs"], openapi_extra=RAW_BODY)
    async def correct_labels(request: Request, job: OwnJob) -> dict:
        """Replace a done job's labels by a corrected label map (a NIfTI in the image's geometry,
        e.g. the viewer's brush edits); findings and DICOM SEG are made again."""
        if job.state != "done":
            raise HTTPException(409, f"job is {job.state}; correct it once done")
        folder = jobs.folder(job)
        part = folder / "correction.part"
        try:
            await save_stream(request.stream(), part, limits.max_upload_bytes)
            await run_in_threadpool(sniff_upload, part, "nifti", limits)
            name = "correction.nii.gz" if _is_gzip(part) else "correction.nii"
            upload = part.rename(folder / name)
            await run_in_threadpool(apply_correction, job, folder, upload)
            upload.unlink()
        finally:
            part.unlink(missing_ok=True)
        jobs.save(job)
        return job.to_json()

    @app.post("/api/jobs/{job_id}/clicks", tags=["jobs"])
    def prompt_clicks(job: OwnJob, clicks: Clicks) -> dict:
        """With a promptable model: segment one object of class ``label`` from clicks (all of
        them, in order) and make it that class's extent in the job's labels."""
        if job.state != "done":
            raise HTTPException(409, f"job is {job.state}; prompt it once done")
        points = [c.model_dump(exclude_none=True) for c in clicks.points]
        served = models.get(clicks.model or job.model)
        voxels = apply_clicks(job, jobs.folder(job), served, points, clicks.label)
        jobs.save(job)
        return {**job.to_json(), "object_voxels": voxels}

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _unpack_upload(part: Path, kind: str, folder: Path, limits: UploadLimits) -> None:
    """Sniff the streamed upload and move it into place: ``image.nii(.gz)``, or the zip extracted
    under ``dicom/`` (the series folder's path written to ``dicom_series.txt``)."""
    sniff_upload(part, kind, limits)
    if kind == "nifti":
        part.rename(folder / ("image.nii.gz" if _is_gzip(part) else "image.nii"))
        return
    series = extract_zip_safely(part, folder / "dicom", limits)
    part.unlink()
    (folder / "dicom_series.txt").write_text(str(series.relative_to(folder.resolve())) + "\n")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"
