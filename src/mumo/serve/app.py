"""The HTTP server: embeddings, zero-shot labels, captions and text-to-image search over an index, plus the
web page at ``/``. FastAPI documents every endpoint at ``/docs`` (OpenAPI schema at ``/openapi.json``), with
the Swagger UI files this package ships (``static/swagger-ui/``): the page works without internet.

    POST /embed/text   {"texts": [...]}                      -> {"embeddings": [[...], ...]}
    POST /embed/image  multipart: image                      -> {"embedding": [...]}
    POST /zero-shot    multipart: image, labels (one a line)  -> {"labels": [{"label", "probability"}]}
    POST /caption      multipart: image                      -> {"caption": "..."}   (captioners only)
    GET  /search?q=...&k=10                                  -> {"results": [{"path", "score", "url"}]}
    GET  /images/{row}                                       -> the indexed image file of that row
    GET  /healthz                                            -> {"status": "ok", "capabilities", ...}

Bad input is never a 500: a body over the size limit is 413 (counted while it streams in, so a request
without Content-Length cannot get round it), an image Pillow cannot identify is 415, an image of more pixels
than the limit is 413 (checked from its header, before decoding: decompression bombs never expand), other
bad values are 422; each with ``{"detail": reason}``. Strangers are refused before the app sees a byte (see
:mod:`mumo.serve.guards`): a ``Host`` this server does not answer to is 421, a cross-site POST 403. Decoded
pixels in flight are bounded by one budget shared by all requests (:mod:`mumo.serve.budget`): an upload that
finds it full for ``pixel_wait_s`` is 503 with ``Retry-After``.
"""

import io
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from types import ModuleType
from typing import Any

from PIL import Image, UnidentifiedImageError

from mumo._extras import require
from mumo.data.pairs import MAX_PIXELS, TooManyPixels, decode_image
from mumo.errors import ConfigError, DataError
from mumo.inference import image_transform
from mumo.models import capabilities
from mumo.serve.budget import BudgetFull, PixelBudget
from mumo.serve.engine import Engine
from mumo.serve.guards import BodyLimit, HostGuard
from mumo.serve.index import ImageIndex
from mumo.version import __version__

# fastapi (with its pydantic and starlette), python-multipart and uvicorn come with the [serve] extra: they
# are imported where a server is built or run, so this module imports without them and a missing one is
# the one-line MissingExtraError naming the extra, not a traceback.
_PURPOSE = "mumo serve"
# The files under /static/ and their types: only these are served, nothing else in the package is reachable.
_STATIC = {
    "docs.js": "text/javascript",
    "swagger-ui/swagger-ui-bundle.js": "text/javascript",
    "swagger-ui/swagger-ui.css": "text/css",
}


def _fastapi() -> ModuleType:
    """fastapi, or the one-line :class:`~mumo.errors.MissingExtraError` naming ``mumo[serve]``."""
    return require("fastapi", "serve", _PURPOSE)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many pixels all of them together may decode at once."""

    max_body_bytes: int = 16 * 2**20  # whole request body
    max_pixels: int = MAX_PIXELS  # width x height of an uploaded image (the data layer's limit, 40 M)
    max_pixels_in_flight: int = 2 * MAX_PIXELS  # decoded by all requests at once (~160 MB per 40 M as RGB)
    pixel_wait_s: float = 1.0  # how long an upload waits for room in that budget before it is 503
    max_text_chars: int = 2000  # characters per text
    max_texts: int = 64  # texts per /embed/text request
    max_labels: int = 100  # labels per /zero-shot request
    max_k: int = 100  # results per search

    def __post_init__(self) -> None:
        if self.max_pixels_in_flight < self.max_pixels:
            raise ConfigError(
                f"max_pixels_in_flight ({self.max_pixels_in_flight:,}) must be at least max_pixels "
                f"({self.max_pixels:,}), or an image within the limit could never be decoded"
            )


def decode_upload(
    data: bytes, limits: Limits, budget: PixelBudget, min_side: int | None = None
) -> Image.Image:
    """An uploaded image as RGB, or an HTTPException: 422 empty or damaged, 415 not an image, 413 too many
    pixels (read from the header before any pixel is decoded), 503 when ``budget`` stays full.

    Args:
        data: the uploaded file.
        limits: its ``max_pixels``.
        budget: the pixels all requests may decode at once; this one holds its own while it decodes.
        min_side: the image may come out smaller while its shorter side stays at least this (see
            :func:`mumo.data.pairs.decode_image`): large uploads cost less memory and time.
    """
    HTTPException = _fastapi().HTTPException  # imported here: only a server, with fastapi, calls this
    if not data:
        raise HTTPException(422, "the image is empty")
    try:
        return decode_image(io.BytesIO(data), limits.max_pixels, min_side, budget.hold)
    except TooManyPixels as e:
        size = f"{e.width} x {e.height} = {e.width * e.height:,} pixels"
        raise HTTPException(413, f"the image is {size}; the limit is {e.limit:,}") from None
    except BudgetFull as e:
        busy = f"the server is busy decoding other images ({e}); try again in a second"
        raise HTTPException(503, busy, {"Retry-After": "1"}) from None
    except Image.DecompressionBombError as e:
        raise HTTPException(413, f"the image has too many pixels ({e})") from None
    except UnidentifiedImageError:
        raise HTTPException(
            415, "not an image this server can read (send PNG, JPEG, WebP, GIF, BMP or TIFF)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise HTTPException(422, f"damaged image data ({type(e).__name__}: {str(e)[:100]})") from None


def clean_text(text: str, limit: int) -> str:
    """A text safe for the tokenizer: lone surrogates (valid JSON, invalid Unicode) become U+FFFD."""
    if len(text) > limit:
        raise _fastapi().HTTPException(422, f"a text has {len(text):,} characters; the limit is {limit:,}")
    return text.encode("utf-8", "replace").decode("utf-8")


def create_app(
    engine: Engine,
    index: ImageIndex | None = None,
    limits: Limits | None = None,
    allowed_hosts: Iterable[str] = (),
) -> Any:
    """The ASGI app serving ``engine`` and, for /search, ``index``: FastAPI inside a :class:`BodyLimit`
    inside a :class:`HostGuard`.

    Args:
        engine: runs the model.
        index: the image index that /search and /images use; None: no search.
        limits: what one request may ask for.
        allowed_hosts: names this server answers to besides 127.0.0.1, localhost and ::1 (in the Host
            header, any port; and in the Origin of a POST): the address it listens on, a proxy's name.
    """
    _fastapi()  # a missing extra is one line naming it, before anything below imports fastapi
    # FastAPI checks for python-multipart only when a route takes a form, with a RuntimeError of many lines
    require("python_multipart", "serve", f"{_PURPOSE} (image uploads)")
    from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from pydantic import BaseModel
    from starlette.exceptions import HTTPException as StarletteHTTPException

    class Texts(BaseModel):
        """The body of POST /embed/text."""

        texts: list[str]

    limits = limits or Limits()
    # FastAPI's own /docs and /redoc load their scripts from a CDN: blank without internet. /docs is served
    # below from the files this package ships; ReDoc is not shipped, so there is no /redoc.
    app = FastAPI(
        title="mumo",
        version=__version__,
        description="Vision-language models over HTTP.",
        docs_url=None,
        redoc_url=None,
    )
    transform = image_transform(engine.model) if engine.image_size else None
    budget = PixelBudget(limits.max_pixels_in_flight, limits.pixel_wait_s)
    # decode large uploads at >= 2x the model's input size: the transform's resize then still antialiases
    min_side = 2 * engine.image_size if engine.image_size else None

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # a body FastAPI cannot parse (not UTF-8, not JSON) is bad input like any other: 422, not 400
        status = 422 if exc.status_code == 400 else exc.status_code
        return JSONResponse({"detail": exc.detail}, status_code=status, headers=getattr(exc, "headers", None))

    def image_tensor(data: bytes) -> Any:
        if transform is None:
            raise HTTPException(422, "this model has no image tower")
        return transform(decode_upload(data, limits, budget, min_side))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("mumo.serve").joinpath("static/index.html").read_text("utf-8"))

    @app.get("/app.js", include_in_schema=False)
    def script() -> Response:
        js = resources.files("mumo.serve").joinpath("static/app.js").read_text("utf-8")
        return Response(js, media_type="text/javascript")

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(resources.files("mumo.serve").joinpath("static/docs.html").read_text("utf-8"))

    @app.get("/static/{name:path}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, "no such file")
        data = resources.files("mumo.serve").joinpath("static", *name.split("/")).read_bytes()
        return Response(data, media_type=_STATIC[name], headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/healthz")
    def healthz() -> dict:
        """Liveness, and what this server can do: the page asks only for what is here. ``capabilities``
        are the model's (:func:`mumo.models.capabilities`); ``embed`` serves /embed, /zero-shot and, with an
        index (``search``), /search; ``caption`` serves /caption."""
        return {
            "status": "ok",
            "model": type(engine.model).__name__,
            "capabilities": sorted(capabilities(engine.model)),
            "embed": engine.can_embed,
            "caption": engine.can_caption,
            "search": index is not None and engine.can_embed,
            "indexed": len(index) if index is not None else 0,
        }

    @app.post("/embed/text")
    def embed_text(body: Texts) -> dict:
        """Unit embeddings of up to ``max_texts`` texts."""
        if not body.texts or len(body.texts) > limits.max_texts:
            raise HTTPException(422, f"send 1 to {limits.max_texts} texts, got {len(body.texts)}")
        texts = [clean_text(t, limits.max_text_chars) for t in body.texts]
        return {"embeddings": engine.embed_texts(texts).tolist()}

    @app.post("/embed/image")
    def embed_image(image: UploadFile = File(...)) -> dict:  # noqa: B008 - FastAPI's parameter style
        """The unit embedding of one uploaded image."""
        return {"embedding": engine.embed_images(image_tensor(image.file.read())[None])[0].tolist()}

    @app.post("/zero-shot")
    def zero_shot(image: UploadFile = File(...), labels: str = Form(...)) -> dict:  # noqa: B008
        """Probabilities of the given labels (one per line, or comma-separated) for one image: the labels
        as typed, scored at the model's own temperature, the same numbers as `mumo zero-shot`."""
        names = [clean_text(x.strip(), limits.max_text_chars) for x in labels.replace(",", "\n").splitlines()]
        names = [x for x in names if x]
        if not 1 <= len(names) <= limits.max_labels:
            raise HTTPException(422, f"send 1 to {limits.max_labels} labels, got {len(names)}")
        probabilities = engine.zero_shot(image_tensor(image.file.read()), names)
        ranked = sorted(zip(names, probabilities, strict=True), key=lambda x: -x[1])
        return {"labels": [{"label": n, "probability": p} for n, p in ranked]}

    @app.post("/caption")
    def caption(image: UploadFile = File(...)) -> dict:  # noqa: B008
        """A generated caption of one image (models with a text decoder)."""
        if not engine.can_caption:
            raise HTTPException(422, f"this model ({type(engine.model).__name__}) does not generate captions")
        return {"caption": engine.caption(image_tensor(image.file.read())[None])[0]}

    @app.get("/search")
    def search(q: str = Query(..., min_length=1), k: int = Query(10, ge=1)) -> dict:
        """The ``k`` indexed images closest to a text, best first."""
        if index is None:
            raise HTTPException(422, "this server has no index; start it with --index INDEX")
        k = min(k, limits.max_k)
        hits = index.search_vectors(engine.embed_texts([clean_text(q, limits.max_text_chars)]), k)[0]
        return {
            "results": [{"path": h.path, "score": h.score, "url": f"/images/{h.row}"} for h in hits],
        }

    @app.get("/images/{row}")
    def image_file(row: int) -> FileResponse:
        """The indexed image of row ``row``: only image files under the indexed folder are ever served."""
        path = index.file(row) if index is not None else None
        if path is None:
            raise HTTPException(404, "no such indexed image")
        return FileResponse(path, headers={"X-Content-Type-Options": "nosniff"})

    # the host guard outside: a stranger's request is refused before its body is read
    return HostGuard(BodyLimit(app, limits.max_body_bytes), allowed_hosts)


def run_server(asgi: Any, host: str, port: int) -> None:
    """Serve ``asgi`` (from :func:`create_app`) with uvicorn on ``host:port`` until interrupted.

    Raises:
        MissingExtraError: uvicorn is not installed (``pip install 'mumo[serve]'``).
    """
    uvicorn = require("uvicorn", "serve", _PURPOSE)
    uvicorn.run(asgi, host=host, port=port, log_level="warning")
