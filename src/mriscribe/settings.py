"""Every setting in one place: defaults, then an optional TOML file, then MRISCRIBE_* variables.

Precedence (highest first): values passed in code, environment variables ``MRISCRIBE_*``, the
TOML file named by ``MRISCRIBE_CONFIG`` (or ``--config``), the defaults below.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import (
    SettingsError as SourceError,
)

from mriscribe.errors import MriscribeError
from mriscribe.imaging.limits import Limits

MiB = 1024 * 1024
# Working memory of one analysis besides its data: detector batches, annotation, the PDF.
ANALYSIS_MARGIN_MB = 64.0
# The rate-limit notation of the `limits` library ("120/minute", "10 per second; 1000/day"),
# checked here without importing it (it is slow to import and only the service needs it).
_RATE = r"\s*[0-9]+\s*(?:/|\s+per\s+)\s*(?:[0-9]+\s*)?(?:second|minute|hour|day|month|year)s?\s*"
RATE_LIMIT = re.compile(rf"{_RATE}(?:[,;|]{_RATE})*", re.IGNORECASE)
# Where rate-limit counters may live: this process, or a Redis server shared by replicas.
RATE_LIMIT_STORES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel")


def check_ae_title(value: str) -> str:
    """An AE title as DICOM allows it: 1 to 16 printable ASCII characters, no backslash."""
    title = value.strip()
    if not 1 <= len(title) <= 16 or not all(32 <= ord(c) < 127 for c in title) or "\\" in title:
        raise ValueError(f"{value!r} is not an AE title (1-16 printable ASCII, no backslash)")
    return title


def parse_peer(value: str) -> tuple[str, str, int]:
    """AE@HOST:PORT as (AE title, host, port); ValueError naming the problem."""
    match = re.fullmatch(r"([^@]+)@(\[[0-9A-Fa-f:.]+\]|[^:@\[\]]+):([0-9]{1,5})", value.strip())
    if match is None or not 1 <= int(match.group(3)) <= 65535:
        raise ValueError(f"{value!r} is not AE@HOST:PORT")
    return check_ae_title(match.group(1)), match.group(2).strip("[]"), int(match.group(3))


class SettingsError(MriscribeError):
    """A setting has a bad value, or the config file cannot be read."""


class LanguageModel(BaseModel):
    """One link of the report writer's chain: an engine and its model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["llama-cpp", "transformers", "openai"]
    model: str = Field(
        default="default",
        description="llama-cpp: a GGUF file, or 'default' (Gemma 3 270M from PyPI); "
        "transformers: a local folder or a hub id already in the local cache; "
        "openai: the model name the server knows",
    )
    base_url: str | None = Field(
        default=None, description="openai: the server's URL, e.g. http://gpu-host:8000/v1"
    )
    api_key_env: str = Field(
        default="MRISCRIBE_LLM_API_KEY",
        description="openai: the environment variable holding the API key (keys never go in "
        "config files)",
    )
    api: Literal["completions", "chat"] = Field(
        default="completions", description="openai: /v1/completions or /v1/chat/completions"
    )
    grammar_field: str | None = Field(
        default="grammar",
        description="openai: the request-body field that carries the report grammar as GBNF: "
        "'grammar' for llama.cpp's server, 'guided_grammar' for vLLM; None sends none and "
        "leaves checking to the verifier (\"\" in a TOML file, which has no null)",
    )
    device: str = Field(default="auto", description="transformers: auto, cpu, cuda, cuda:1, mps")
    allow_download: bool = Field(
        default=False, description="transformers: fetch from the hub if not in the local cache"
    )
    threads: int = Field(default=0, ge=0, description="llama-cpp: threads; 0 = all cores")
    context_tokens: int = Field(default=4096, ge=512, description="llama-cpp: context size")

    @field_validator("grammar_field")
    @classmethod
    def _no_empty_field(cls, value: str | None) -> str | None:
        return value or None

    @property
    def label(self) -> str:
        """engine:model, with a file's name rather than its server folder."""
        model = self.model
        if "/" in model and (model.startswith(("/", ".", "~")) or model.endswith(".gguf")):
            model = Path(model).name
        return f"{self.engine}:{model}"


def _default_chain() -> list[LanguageModel]:
    return [LanguageModel(engine="llama-cpp", model="default")]


class Settings(BaseSettings):
    """The settings of the service and the CLI."""

    model_config = SettingsConfigDict(
        env_prefix="MRISCRIBE_", extra="forbid", frozen=True, allow_inf_nan=False
    )

    # Detector
    model_path: Path | None = Field(
        default=None, description="YOLO model (.onnx, or .pt with the 'train' extra)"
    )
    conf_threshold: float = Field(default=0.25, ge=0.0, le=1.0)
    iou_threshold: float = Field(default=0.45, ge=0.0, le=1.0)
    threads: int = Field(default=0, ge=0, description="inference threads; 0 = all cores")
    batch_size: int = Field(default=8, ge=1, le=64)

    # Measurement
    default_spacing_mm: float = Field(
        default=0.5, gt=0.0, le=10.0, description="mm per pixel when a file states none (estimate)"
    )
    side_threshold_mm: float = Field(
        default=10.0,
        ge=5.0,
        le=50.0,
        description="a lesion is given a side (left, right) only when its centre lies at least "
        "this far from the head's midline",
    )

    # NIfTI volumes: every Nth axial slice through the brain, or 0 = at most nifti_max_slices
    nifti_step: int = Field(default=0, ge=0)
    nifti_max_slices: int = Field(default=24, ge=1)

    # Limits
    max_file_mb: float = Field(default=100.0, gt=0)
    max_request_mb: float = Field(default=300.0, gt=0)
    max_images: int = Field(default=200, ge=1)
    max_pixels: int = Field(default=40_000_000, ge=1)
    max_total_pixels: int = Field(default=50_000_000, ge=1)
    max_decoded_mb: float = Field(
        default=256.0,
        gt=0,
        description="decoded image data one request may hold, all files together (voxels, "
        "pixels, inflated DICOM), checked from each file's header before anything is inflated",
    )
    name_images_by_number: bool = Field(
        default=False,
        description="outputs and errors name images 'file 3', never by their file names",
    )

    # Service: admission and slow clients
    max_concurrent_analyses: int = Field(default=2, ge=1, description="service: at once")
    max_active_requests: int = Field(
        default=4, ge=1, description="service: request bodies being received or analysed at once"
    )
    admission_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="service: a request not admitted by then gets 503"
    )
    spool_dir: Path | None = Field(
        default=None, description="service: where upload bodies are spooled (default: temp dir)"
    )
    spool_memory_mb: float = Field(
        default=1.0, ge=0, description="service: upload bytes a request keeps in memory"
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="service: a request's headers must arrive by then"
    )
    idle_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="service: longest pause while a body arrives"
    )
    body_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="service: a request's body must have arrived by then (from its arrival)",
    )

    # Report writer: "chain" (the language models below, fastest first, with the template as
    # the fallback) or "template"; unset = chain when an LLM engine is installed.
    report_engine: Literal["chain", "template"] | None = None
    llm_chain: list[LanguageModel] = Field(default_factory=_default_chain)
    report_deadline_s: float = Field(
        default=3.0, gt=0, le=600, description="a report not written by then is the template"
    )
    llm_max_prompt_tokens: int = Field(default=2048, ge=256, description="input truncated to")
    llm_max_new_tokens: int = Field(default=64, ge=8, le=1024, description="per answer line")
    llm_writes_impression: bool = Field(
        default=False,
        description="the model writes the IMPRESSION too (else the template's, exact and "
        "instant: about 0.35 s less a report on 2 cores)",
    )

    # Service
    host: str = "127.0.0.1"
    port: int = Field(default=5000, ge=1, le=65535)
    cors_origins: list[str] | None = Field(
        default=None,
        description="origins whose pages may call the API; unset: any ('*') without API keys, "
        "none with them",
    )
    log_level: str = "INFO"
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="proxies whose X-Forwarded-For names the client (for per-address limits)",
    )

    # Access: API keys, rate limits, metrics (docs/DEPLOYMENT.md)
    api_keys_file: Path | None = Field(
        default=None,
        description="the key file (made by `mriscribe keys create`); set: every analysis "
        "needs an X-API-Key",
    )
    api_key_secret_file: Path | None = Field(
        default=None,
        description="a file holding the server secret that keys are hashed with "
        "(`mriscribe keys secret` makes one); else the variable api_key_secret_env names",
    )
    api_key_secret_env: str = Field(
        default="MRISCRIBE_API_KEY_SECRET",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the environment variable holding the server secret when no "
        "api_key_secret_file is set (secrets never go in config files)",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="serve beyond loopback without API keys (refused otherwise)",
    )
    rate_limit_enabled: bool | None = Field(
        default=None,
        description="unset: rate limits apply unless the service runs open on loopback",
    )
    rate_limit_per_key: str = Field(
        default="120/minute", description="analysis requests per API key; '' for none"
    )
    rate_limit_per_address: str = Field(
        default="600/minute", description="analysis requests per client address; '' for none"
    )
    rate_limit_storage_uri: SecretStr | None = Field(
        default=None,
        description="where the counters live: unset for this process's memory, or "
        "redis://host:6379/0 shared by every replica (needs the 'redis' extra)",
    )
    metrics_enabled: bool = Field(default=True, description="serve /metrics for Prometheus")
    metrics_public: bool = Field(
        default=False,
        description="/metrics without a key even when API keys are on (else an admin key)",
    )

    # DICOM node (`mriscribe dicom-node`, or beside `serve` with node_enabled; docs/DICOM_NODE.md)
    node_enabled: bool = Field(default=False, description="serve: also run the DICOM node")
    node_ae_title: str = Field(default="MRISCRIBE", description="the node's own AE title")
    node_host: str = Field(default="127.0.0.1", description="address the node listens on")
    node_port: int = Field(default=11112, ge=1, le=65535, description="the node's DICOM port")
    node_allowed_calling_aets: list[str] = Field(
        default_factory=list,
        description="calling AE titles whose associations are accepted; empty: any, which is "
        "refused beyond loopback unless node_allow_any_calling_ae",
    )
    node_allow_any_calling_ae: bool = Field(
        default=False, description="listen beyond loopback with no list of calling AE titles"
    )
    node_sop_classes: list[str] | None = Field(
        default=None,
        description="image storage SOP classes accepted (keywords or UIDs); unset: MR, "
        "enhanced MR, CT, enhanced CT and secondary capture images",
    )
    node_transfer_syntaxes: list[str] | None = Field(
        default=None,
        description="transfer syntaxes accepted (keywords or UIDs); unset: the uncompressed "
        "ones and every compressed one whose decoder is installed",
    )
    node_send_to: list[str] = Field(
        default_factory=list,
        description="where results go by C-STORE, each AE@HOST:PORT",
    )
    node_stow_url: str | None = Field(
        default=None,
        description="where results go by STOW-RS: a DICOMweb base URL "
        "(e.g. http://pacs:8042/dicom-web)",
    )
    node_outputs: list[str] = Field(
        default_factory=lambda: ["dicom-sr", "dicom-pr", "dicom-pdf"],
        description="the results sent back (outputs that make DICOM)",
    )
    node_stable_s: float = Field(
        default=10.0, gt=0, le=3600, description="a study is analysed once no instance of it "
        "has arrived for this long",
    )
    node_resume_grace_s: float = Field(
        default=60.0, ge=0, le=86400, description="after a restart, studies found half "
        "received wait this long for their senders to resend (or node_stable_s if longer)",
    )
    node_spool_dir: Path = Field(
        default=Path("mriscribe-spool"),
        description="where received instances and undelivered results wait (0700, files 0600)",
    )
    node_retention_h: float = Field(
        default=0.0, ge=0, description="hours a study's files stay in the spool after its "
        "results are delivered (0: removed at once)",
    )
    node_guard_days: float = Field(
        default=7.0, gt=0, description="days the loop guard remembers which instances were "
        "analysed (hashes of their UIDs only)",
    )
    node_retry_base_s: float = Field(default=1.0, gt=0, le=600, description="first retry delay")
    node_retry_max_s: float = Field(
        default=300.0, gt=0, le=86400, description="longest delay between delivery retries"
    )
    node_report_engine: Literal["chain", "template"] | None = Field(
        default=None, description="the node's report writer; unset: as report_engine"
    )

    @field_validator("node_ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return check_ae_title(value)

    @field_validator("node_allowed_calling_aets")
    @classmethod
    def _ae_titles(cls, value: list[str]) -> list[str]:
        return [check_ae_title(item) for item in value]

    @field_validator("node_send_to")
    @classmethod
    def _destinations(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_peer(item)
        return value

    @field_validator("node_stow_url")
    @classmethod
    def _stow_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        if "?" in value or "#" in value:
            raise ValueError("must be a base URL, without a query or fragment")
        return value.rstrip("/")

    @field_validator("rate_limit_per_key", "rate_limit_per_address")
    @classmethod
    def _rate_notation(cls, value: str) -> str:
        value = value.strip()
        if value and not RATE_LIMIT.fullmatch(value):
            raise ValueError(
                "must be a rate like '120/minute' or '10 per second; 1000/day' ('' for none)"
            )
        return value

    @field_validator("rate_limit_storage_uri")
    @classmethod
    def _known_store(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        scheme = value.get_secret_value().split("://", 1)[0].lower().removeprefix("async+")
        if "://" not in value.get_secret_value() or scheme not in RATE_LIMIT_STORES:
            # The value itself is never repeated: it may hold a password.
            raise ValueError(
                f"must be a URI with one of the schemes {', '.join(RATE_LIMIT_STORES)}"
            )
        return value

    @property
    def keys_required(self) -> bool:
        """Whether requests need an API key: a key file is configured."""
        return self.api_keys_file is not None

    @property
    def loopback_only(self) -> bool:
        """Whether the service listens on this machine's loopback interface only."""
        host = self.host.strip("[]")
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def rate_limited(self) -> bool:
        """Whether rate limits apply: as set, else unless the service runs open on loopback
        (the prototype's local use, which never had them)."""
        if self.rate_limit_enabled is not None:
            return self.rate_limit_enabled
        return self.keys_required or not self.loopback_only

    @property
    def allowed_origins(self) -> list[str]:
        """The CORS origins: as set, else any without keys and none with them."""
        if self.cors_origins is not None:
            return self.cors_origins
        return [] if self.keys_required else ["*"]

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    @property
    def limits(self) -> Limits:
        return Limits(
            max_file_bytes=int(self.max_file_mb * MiB),
            max_request_bytes=int(self.max_request_mb * MiB),
            max_images=self.max_images,
            max_pixels=self.max_pixels,
            max_total_pixels=self.max_total_pixels,
            max_decoded_bytes=int(self.max_decoded_mb * MiB),
        )

    def memory_bound_mb(self) -> float:
        """The most memory (MB) the service holds above its idle size, whatever is uploaded.

        Bodies beyond ``spool_memory_mb`` wait on disk, so receiving costs little; each
        analysis in flight holds at most one file's bytes and a parsed copy of them (2 x
        max_file_mb), the decoded data of the file being decoded (max_decoded_mb), the RGB
        slices of its study (3 bytes a pixel, max_total_pixels) and a fixed working margin
        (detector batches, annotation, the PDF); the DICOM node, when it runs beside the
        service, is one more analysis (its instances arrive into files, never into memory).
        """
        per_analysis = (
            2 * self.max_file_mb
            + self.max_decoded_mb
            + 3 * self.max_total_pixels / MiB
            + ANALYSIS_MARGIN_MB
        )
        # The DICOM node beside the service analyses one study at a time, besides those.
        analyses = self.max_concurrent_analyses + (1 if self.node_enabled else 0)
        return self.max_active_requests * self.spool_memory_mb + analyses * per_analysis

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = os.environ.get("MRISCRIBE_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment and ``config`` (or ``MRISCRIBE_CONFIG``), plus overrides.

    Raises SettingsError with a readable message on a bad value or an unreadable file.
    """
    previous = os.environ.get("MRISCRIBE_CONFIG")
    path = config or (Path(previous) if previous else None)
    if path is not None:
        if not path.is_file():
            raise SettingsError(f"{path}: config file not found")
        os.environ["MRISCRIBE_CONFIG"] = str(path)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        where = f" (config {path})" if path else ""
        raise SettingsError(f"invalid settings{where}: {problems}") from None
    except SourceError as exc:  # a MRISCRIBE_* variable that cannot be parsed
        raise SettingsError(f"invalid settings: {_unparseable(exc)}") from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        problem = _toml_problem(exc, path)
        raise SettingsError(f"{path}: cannot read config file ({problem})") from None
    finally:
        if config is not None:
            if previous is None:
                os.environ.pop("MRISCRIBE_CONFIG", None)
            else:
                os.environ["MRISCRIBE_CONFIG"] = previous


def _unparseable(exc: SourceError) -> str:
    """Which setting's variable could not be parsed, and why (pydantic-settings says which
    field in its own message and why in the cause)."""
    field = re.search(r'field "(\w+)"', str(exc))
    why = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
    if field is None:
        return f"{exc}{why}"
    name = field.group(1)
    return f"{name} (MRISCRIBE_{name.upper()}): not the JSON a list or table setting takes{why}"


def _toml_problem(exc: Exception, path: Path | None) -> str:
    """A TOML error, with the setting on the line it points at when there is one."""
    text = str(exc)
    where = re.search(r"at line (\d+)", text)
    if path is None or where is None:
        return text
    line = int(where.group(1))
    try:
        source = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return text
    if 1 <= line <= len(source):
        key = re.match(r"\s*([A-Za-z0-9_.-]+)\s*=", source[line - 1])
        if key:
            return f"{text}; setting {key.group(1)}"
    return text
