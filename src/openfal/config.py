"""Settings: typed, frozen, read once from the environment (``OPENFAL_*``) or passed in.

This is the only module that reads the environment. Everything else receives a
``Settings`` value, so tests build exactly the server they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of an openfal deployment, read from ``OPENFAL_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="OPENFAL_", frozen=True, extra="ignore")

    # -- where things live ---------------------------------------------------------
    #: folder for the SQLite file, local media, the demo key and tiny models
    data_dir: Path = Path(".openfal")
    #: SQLAlchemy URL; default ``sqlite+aiosqlite:///{data_dir}/openfal.db``.
    #: PostgreSQL: ``postgresql+asyncpg://user@host/db``
    database_url: str | None = None
    #: ``local`` (a folder served under /files) or ``s3``
    media_backend: Literal["local", "s3"] = "local"
    #: local media folder; default ``{data_dir}/media``
    media_dir: Path | None = None
    s3_bucket: str | None = None
    s3_prefix: str = "openfal/"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    #: public base URL of the bucket (CDN); when unset, media URLs are presigned
    s3_public_url: str | None = None
    s3_presign_seconds: int = Field(7 * 86400, ge=60, le=7 * 86400)

    # -- HTTP ----------------------------------------------------------------------
    #: the URL clients reach this server at; default: taken from each request's Host
    public_base_url: str | None = None
    #: host names whose POSTs are synchronous runs (fal.run) rather than queue submits
    run_hosts: tuple[str, ...] = ()
    #: origins whose browser apps may call the API directly (fal's JS client in a web
    #: page); ``[]`` turns CORS off. Keys are sent as headers, never as cookies.
    cors_origins: tuple[str, ...] = ("*",)
    #: OpenAI Images API (``/v1/images/generations``): model names accepted besides
    #: endpoint ids, name -> endpoint id (OpenAI's own names by default, so clients that
    #: send them work unchanged)
    openai_model_aliases: dict[str, str] = Field(
        default_factory=lambda: {
            "dall-e-2": "fal-ai/flux-1/schnell", "dall-e-3": "fal-ai/flux-1/dev", "gpt-image-1": "fal-ai/flux-1/dev",
            "qwen-image": "fal-ai/qwen-image", "qwen-image-2512": "fal-ai/qwen-image-2512", "z-image-turbo": "fal-ai/z-image/turbo",
        }  # fmt: skip
    )
    #: the same for ``/v1/images/edits``: endpoints that take an image (Kontext,
    #: image-to-image); a text-to-image model's names (alias or endpoint id) lead to its
    #: family's edit endpoint, so one ``model`` serves both calls
    openai_edit_model_aliases: dict[str, str] = Field(
        default_factory=lambda: {
            "dall-e-2": "fal-ai/flux-pro/kontext", "dall-e-3": "fal-ai/flux-pro/kontext", "gpt-image-1": "fal-ai/flux-pro/kontext",
            **dict.fromkeys(("qwen-image", "qwen-image-2512", "fal-ai/qwen-image", "fal-ai/qwen-image-2512"), "fal-ai/qwen-image-edit-2511"),
            **dict.fromkeys(("z-image-turbo", "fal-ai/z-image/turbo"), "fal-ai/z-image/turbo/image-to-image"),
        }  # fmt: skip
    )
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    #: largest single upload request or multipart part accepted by the storage endpoints
    #: (fal's clients send files up to 90-100 MB in one request, then 10 MB parts)
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    #: largest file a multipart upload may assemble
    max_multipart_upload_bytes: int = Field(5 * 1024**3, ge=1024)
    sse_keepalive_seconds: float = Field(15.0, gt=0)
    #: how often SSE and sync waits re-read a request written by another process
    poll_interval_seconds: float = Field(0.25, gt=0)
    #: log every HTTP request (uvicorn's access log); off by default, since status polls
    #: at ten a second per pending request would make it most of the server's work
    access_log: bool = False
    #: FastAPI's native OpenTelemetry (spans, HTTP metrics, error logs through the global
    #: providers); off by default: asking the providers costs ~3% of a status poll
    otel: bool = False

    # -- auth ----------------------------------------------------------------------
    auth_enabled: bool = True

    # -- queue and workers ---------------------------------------------------------
    #: run workers inside ``openfal serve`` (set false when ``openfal worker`` runs them)
    in_process_workers: bool = True
    #: backends this process's workers serve (empty: all that are configured)
    worker_backends: tuple[str, ...] = ()
    #: what this process's workers serve, by model family (``flux1``, ``ltx``), model
    #: (``flux-dev``) or endpoint id; they claim only those endpoints' requests, so a
    #: pool of GPU workers per family scales on its own queue (empty: everything).
    #: ``OPENFAL_WORKER_MODELS=flux1,ltx``; see openfal/pools.py
    worker_models: Annotated[tuple[str, ...], NoDecode] = ()
    #: worker pools of the deployment, pool name -> the names its workers serve (as
    #: ``worker_models``): ``{"flux": ["flux1"], "video": ["ltx"]}``. Written to the
    #: database at start (the ``openfal_pool_queue`` view, which KEDA reads, counts per
    #: pool) and exported as per-pool gauges on ``/metrics``
    pools: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    #: concurrent requests (slots) per backend in one worker process; a relay backend
    #: not named here takes its upstream's ``concurrency``
    #: (local: two slots per engine, the second claiming only once the GPU is free, so
    #: encoding and publishing one run overlap the next run's GPU work)
    concurrency: dict[str, int] = Field(default_factory=lambda: {"local": 2, "builtin": 8})
    #: running requests allowed to an API key that has no ``max_concurrent`` of its own,
    #: so one customer's burst queues behind itself rather than ahead of everyone
    #: (None: unlimited)
    default_key_max_concurrent: int | None = Field(None, ge=1)
    #: longest one run may take on the local and builtin backends; past it the run is
    #: stopped (at the next step) and the request ends 504 request_timeout. Relays keep
    #: their upstream's own ``timeout``.
    max_run_seconds: float = Field(3600.0, gt=0)
    #: a run still inside one step this long after its cancel or time limit is given up:
    #: its requests end with their error and the slot is freed (the step's result is discarded)
    stuck_run_grace_seconds: float = Field(10.0, gt=0)
    lease_seconds: float = Field(30.0, gt=0)
    heartbeat_seconds: float = Field(5.0, gt=0)
    #: attempts before a request whose worker died is failed
    max_attempts: int = Field(3, ge=1)
    #: completed requests (input, result, logs) are kept this long
    result_ttl_seconds: int = Field(30 * 86400, ge=60)
    #: media files are kept this long (fal: at least 7 days)
    media_ttl_seconds: int = Field(7 * 86400, ge=60)
    maintenance_interval_seconds: float = Field(60.0, gt=0)
    #: on SIGTERM a worker stops claiming at once and gives its running requests this
    #: long to finish; what is still running then is handed back (lease released, back
    #: at the front of its turn, the attempt not counted) for another worker to take.
    #: Orchestrators: a pod's termination grace period must be longer
    drain_seconds: float = Field(20.0, ge=0)
    #: ``openfal worker``'s HTTP port for /health/live, /health/ready and /metrics (None: none)
    worker_port: int | None = Field(None, ge=1, le=65535)

    # -- webhooks ------------------------------------------------------------------
    webhook_max_attempts: int = Field(10, ge=1)
    #: first retry delay; doubles per attempt up to webhook_max_delay_seconds
    webhook_base_delay_seconds: float = Field(15.0, ge=0)
    webhook_max_delay_seconds: float = Field(2400.0, ge=0)
    webhook_timeout_seconds: float = Field(15.0, gt=0)
    #: allow webhooks and image fetches to private/loopback addresses (tests, LANs)
    allow_private_urls: bool = False

    # -- inputs fetched from URLs --------------------------------------------------
    fetch_max_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    fetch_timeout_seconds: float = Field(30.0, gt=0)
    max_image_pixels: int = Field(64 * 1024 * 1024, ge=1)

    # -- local backend -------------------------------------------------------------
    #: serve the tiny random-weight model set (no weights, no network)
    demo: bool = False
    #: folder holding model folders (diffusers layout) by model name
    models_dir: Path | None = None
    #: per-model overrides: model name -> local folder or Hugging Face repo id (cache only)
    model_paths: dict[str, str] = Field(default_factory=dict)
    #: ``auto`` (cuda if available, else cpu), ``cpu``, ``cuda``, ``cuda:1`` ...
    device: str = "auto"
    #: ``auto`` (bf16 on cuda, fp32 on cpu), ``float32``, ``bfloat16``, ``float16``
    dtype: str = "auto"
    #: bytes of weights kept loaded; least recently used models are evicted beyond it.
    #: None: derived from the device (a GPU's memory less what the largest batch's
    #: activations need; on CPU half the host's memory), not a fixed figure
    model_memory_budget_bytes: int | None = Field(None, ge=0)
    max_batch_size: int = Field(4, ge=1)
    #: pixels one output image may have (None: 2048x2048 on a GPU, 1024x1024 on a CPU);
    #: larger sizes are a 422 at submit, since one step of a huge image cannot be stopped
    max_output_pixels: int | None = Field(None, ge=16 * 16)
    #: pixels one request may ask for over all its images (None: 4x max_output_pixels)
    max_call_pixels: int | None = Field(None, ge=16 * 16)
    #: frames x pixels one video request may ask for (each frame also within
    #: max_output_pixels; None: 1280x720 at 81 frames on a GPU, the shape memory plans
    #: count, 768x512 at 121 frames on a CPU); more is a 422 at submit
    max_video_pixels: int | None = Field(None, ge=16 * 16)
    #: most images in one pipeline call (requests x num_images), VAE decode included:
    #: bounds activation memory and the latency a batch adds
    max_batch_images: int = Field(4, ge=1)
    #: after new work wakes an idle local worker, it waits this long before claiming, so
    #: requests that arrive together are claimed (and run) as one batch
    batch_gather_ms: float = Field(5.0, ge=0, le=1000)
    #: ``off``, ``compile``, ``fp8`` or ``auto`` (the fastest the device supports; off
    #: on CPU); see backends/local/acceleration.py
    acceleration: Literal["off", "compile", "fp8", "auto"] = "auto"
    #: diffusers attention backend; ``auto``: on CUDA the fastest of FA3 (when installed),
    #: cuDNN, flash and memory-efficient SDPA, measured at load (backends/local/attention.py)
    attention_backend: str = "auto"
    #: endpoint pattern -> the highest fal ``acceleration`` tier served there
    #: (``none``/``regular``/``high``); a request above it runs at the cap
    acceleration_caps: dict[str, Literal["none", "regular", "high"]] = Field(default_factory=dict)
    #: First Block Cache threshold of the ``high`` tier (backends/local/tiers.py)
    acceleration_high_threshold: float = Field(0.12, gt=0, le=1)
    #: requests batch into one call only when each image has at most this many pixels:
    #: past 512x512 a FLUX transformer is compute-bound at batch 1 and a batch only adds
    #: latency
    batch_max_pixels: int = Field(512 * 512, ge=0)
    #: serve only endpoints whose weights allow commercial use (the catalog's licence);
    #: the others answer 404 naming their licence
    commercial_only: bool = False
    #: models whose maker sold this operator a commercial licence (``flux-dev``,
    #: ``flux-2-dev``...): served under ``commercial_only`` despite a non-commercial licence
    licensed_models: Annotated[tuple[str, ...], NoDecode] = ()
    #: models loaded (and warmed, when compiled) at start, before /health/ready says ok
    preload_models: Annotated[tuple[str, ...], NoDecode] = ()
    #: shapes compiled at warm-up: fal image_size presets or WIDTHxHEIGHT (default:
    #: fal's six presets); other sizes run uncompiled
    warmup_sizes: Annotated[tuple[str, ...], NoDecode] = (
        "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9",
    )  # fmt: skip
    #: inductor/triton cache, so a restart's warm-up reads kernels instead of compiling;
    #: default ``{data_dir}/compile-cache``
    compile_cache_dir: Path | None = None
    #: ``""``: one engine on ``device``; ``all`` or ``0,1``: one worker process per listed
    #: GPU, supervised by this process (gpu_workers.py)
    gpus: str = ""
    #: this worker process's id in the registry and on its leases (the GPU supervisor
    #: names its children); None: ``{hostname}-{random}``
    worker_id: str | None = None
    #: the label of this process's engine (``gpu1``: set by the GPU supervisor)
    gpu_label: str = ""
    #: folder of a safety checker (diffusers StableDiffusionSafetyChecker or a
    #: transformers image classifier with an ``nsfw`` label); none: nothing is flagged
    safety_checker_path: str | None = None
    previews: bool = True
    #: LoRAs the operator installed, requested by name (``loras: [{"path": "my-style"}]``)
    loras_dir: Path | None = None
    #: downloaded LoRAs, content-addressed and shared by the workers of this machine
    #: (default ``{data_dir}/loras``)
    lora_cache_dir: Path | None = None
    #: largest LoRA file fetched (fal's trained FLUX LoRAs are 43-172 MB)
    max_lora_bytes: int = Field(512 * 1024**2, ge=1024)
    #: disk kept for downloaded LoRAs; least recently used ones are deleted past it
    lora_cache_bytes: int = Field(20 * 1024**3, ge=0)
    #: highest LoRA rank served; compiled engines pad adapters to it for hot-swapping,
    #: so a higher rank is refused rather than recompiled
    lora_max_rank: int = Field(64, ge=1)
    #: adapters unused this long are unloaded from the pipelines
    lora_idle_seconds: float = Field(900.0, gt=0)
    #: LoRA slots a compiled engine reserves on every Linear layer, each of
    #: ``lora_max_rank`` (a request's LoRAs share them while their ranks add up: one slot
    #: of 64 takes two rank-32 LoRAs). Each costs ~5.3 M x rank parameters on FLUX.1-dev
    #: and about 4% of its FLOPs at rank 64, LoRA or not; 0: compiled engines serve no LoRAs
    lora_slots: int = Field(1, ge=0)

    # -- accounting ------------------------------------------------------------------
    #: endpoint pattern -> {per_request, per_image, per_megapixel, per_video_second} in
    #: dollars, over fal's list prices (openfal.accounting.DEFAULT_PRICES)
    prices: dict[str, dict[str, float]] = Field(default_factory=dict)

    # -- relay ---------------------------------------------------------------------
    #: endpoint pattern -> backend name or upstream name (``fal-ai/*`` -> ``fal``)
    routes: dict[str, str] = Field(default_factory=dict)
    #: upstream name -> {"base_url": ..., "keys": [...]}
    upstreams: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("preload_models", "warmup_sizes", "licensed_models", "worker_models", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """``OPENFAL_PRELOAD_MODELS=flux-dev,flux-schnell`` (a JSON list works too)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return tuple(json.loads(text))
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return value

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'openfal.db'}"

    @property
    def effective_media_dir(self) -> Path:
        return (self.media_dir or self.data_dir / "media").resolve()

    @property
    def effective_compile_cache_dir(self) -> Path:
        return (self.compile_cache_dir or self.data_dir / "compile-cache").resolve()

    @property
    def effective_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()
