"""The servable interface: what every model served here implements, ours and a user's.

In the spirit of TorchServe's handler and TF Serving's servable/loader split, a servable owns
everything about one model and nothing about HTTP, locks or metrics:

* ``load()`` reads the version directory (``self.model_dir``) and builds the model;
* ``warmup()`` runs a few inferences so the first request is not slow;
* ``preprocess(inputs, parameters)`` validates one request's named input tensors and turns
  them into *items* (one per batch row). It runs outside any lock, and raises
  :class:`~app.serving.errors.InvalidInput` (400), :class:`~app.serving.errors.TooLarge` (413)
  or :class:`~app.serving.errors.OverLimit` (422) for bad input;
* ``infer(items)`` runs the model on items that share one :meth:`batch_key`. It is the only
  part the registry serialises (one lock, or one dynamic batcher when ``max_batch_size`` > 0)
  and the only part the ``model_inference_seconds`` histogram times;
* ``postprocess(results, parameters, request)`` turns the item results of one request back
  into named output tensors.

The registry (``app/serving/registry.py``) creates one instance per worker and model, calls
``load``/``warmup``, applies the thread pools of every framework in :attr:`frameworks`, and
serves the instance through the Open Inference Protocol (``/v2/...``), ``/metrics``,
``/readyz``, ``/version``, the dashboard and ``/openapi.json`` without any edit elsewhere.
A servable may also bring a Flask blueprint of its own routes (:meth:`blueprint`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

from ..config import Setting, parse_setting

#: Open Inference Protocol data types and the NumPy dtype of each (BYTES: Python bytes/str).
DATATYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "object",
}


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output tensor. ``shape``: -1 for a variable dimension (the first
    is the batch). ``group``: inputs of one group are given together; a request gives the
    inputs of exactly one group (e.g. an encoded ``image`` or a raw ``input`` tensor)."""
    name: str
    datatype: str
    shape: tuple
    description: str = ""
    group: str = "default"
    optional: bool = False

    def __post_init__(self):
        if self.datatype not in DATATYPES:
            raise ValueError(f"tensor {self.name}: unknown datatype {self.datatype!r}")

    def as_metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class ServableContext:
    """What a servable is given: who it is, where its files are and its settings' values."""
    name: str
    version: str
    model_dir: Path
    settings: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    core: Any = None  # the core Config (MAX_IMAGE_PIXELS, thread counts...)
    #: the worker's ModelRegistry, for a pipeline servable that runs other models (each under
    #: its own lock or batcher, with its own metrics): ``registry.run(name, items=...)``.
    #: None outside a server (the harness).
    registry: Any = None

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"app.model.{self.name}")


class Servable:
    """Base class of every servable. Subclasses set the class attributes and override
    ``load``, ``preprocess``, ``infer`` and ``postprocess`` (``warmup`` is optional)."""

    #: Frameworks whose thread pools the registry configures before ``load`` (TF_INTRA_OP_THREADS,
    #: CV2_THREADS, NUMPY_THREADS): any of "tensorflow", "opencv", "numpy".
    frameworks: tuple = ()
    #: Shown in metadata (the V2 ``platform``).
    platform: str = "python"
    #: Settings this servable reads (environment variables), validated like the core ones.
    settings: tuple = ()
    inputs: tuple = ()
    outputs: tuple = ()
    #: 0: one ``infer`` at a time under a lock. > 0: a dynamic batcher collects up to this many
    #: items of concurrent requests (same batch key) into one ``infer`` call.
    max_batch_size: int = 0
    batch_wait_ms: float = 2.0
    #: Seconds a request may wait for the model (lock or queue) before 503 busy.
    wait_timeout: float = 60.0
    description: str = ""
    #: The file whose sha256 identifies the version (model_info, /version); None: a digest of
    #: every artifact's sha256.
    primary_artifact: str | None = None
    #: Translation capability: the (source, target) language pairs this servable translates,
    #: as ISO 639-1 codes, e.g. ``(("en", "es"),)``; ``()``: not a translator. A servable that
    #: declares pairs implements :meth:`translation_items`, and its ``infer`` returns one
    #: translated string per item. Protocol layers find it by pair (the LibreTranslate API,
    #: ``app/web/libretranslate.py``: ``/translate``, ``/languages``, ``/translate_file``).
    translation_pairs: tuple = ()

    def __init__(self, context: ServableContext):
        self.context = context
        self.name = context.name
        self.version = context.version
        self.model_dir = Path(context.model_dir)
        self.config = context.settings
        self.log = context.log

    # --- lifecycle -------------------------------------------------------------------
    def load(self) -> None:
        raise NotImplementedError

    def warmup(self) -> None:
        """Optional: a few inferences through ``infer`` so the first request is fast."""

    def close(self) -> None:
        """Optional: release what ``load`` acquired."""

    # --- request path --------------------------------------------------------------------
    def preprocess(self, inputs: Mapping[str, Any], parameters: Mapping[str, Any]) -> list:
        """Items (one per batch row) of one request's inputs: name -> NumPy array (numeric)
        or list of bytes (BYTES). Raise InvalidInput / TooLarge / OverLimit for bad input."""
        raise NotImplementedError

    def batch_key(self, item) -> Hashable:
        """Items with different keys never share an ``infer`` call (e.g. the beam width)."""
        return None

    def infer(self, items: list) -> list:
        """One result per item. The only locked/batched, timed part."""
        raise NotImplementedError

    def usage(self, items: list) -> dict:
        """Optional: what one request consumes, for quotas (e.g. ``{"characters": 120}``)."""
        return {}

    def cached(self, items: list) -> list | None:
        """Optional: the results of all ``items`` without running the model (a cache), else None."""
        return None

    def postprocess(self, results: list, parameters: Mapping[str, Any], request_items: list) -> dict:
        """Named outputs of one request: name -> array (or list of str/bytes for BYTES)."""
        raise NotImplementedError

    # --- translation (servables that declare translation_pairs) -------------------------
    def translation_items(self, texts: list, parameters: Mapping[str, Any], where=None) -> list:
        """Checked items of plain texts to translate, by the servable's own validation (the same
        as its other entry points). ``parameters`` has the pair (``source``, ``target``);
        ``where(i)`` names text i in error messages. Raise InvalidInput / OverLimit."""
        raise NotImplementedError(f"{type(self).__name__} declares no translation")

    def translation_limits(self) -> dict:
        """What one :meth:`translation_items` call takes: ``max_texts``, ``max_chars`` (one text)
        and ``max_total_chars`` (all texts); None: no limit. Protocol layers split bigger work
        (HTML segments, the lines of a file) into calls within these."""
        return {"max_texts": None, "max_chars": None, "max_total_chars": None}

    # --- description ---------------------------------------------------------------------
    def artifacts(self) -> list[Path]:
        """The files whose sha256 the metadata lists (default: every file of the version dir)."""
        return sorted(p for p in self.model_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)

    def extra_metadata(self) -> dict:
        """Anything else worth showing in /version and /v2/models/{name} (e.g. metadata.json)."""
        return {}

    @classmethod
    def blueprint(cls):
        """Optional Flask blueprint with this model's own routes (None: only /v2/...)."""
        return None

    @classmethod
    def openapi_paths(cls, settings: Mapping[str, Any]) -> dict:
        """OpenAPI path items of the blueprint's routes (merged into /openapi.json)."""
        return {}

    @classmethod
    def read_settings(cls, environ: Mapping[str, str]) -> dict:
        """This servable's settings from the environment (defaults applied, values checked)."""
        return {s.name: parse_setting(s, environ) for s in cls.settings}


def group_of(specs: Sequence[TensorSpec], names) -> str:
    """The one input group that the given input names belong to (InvalidInput otherwise)."""
    from .errors import InvalidInput
    groups = {s.group for s in specs if s.name in names}
    unknown = sorted(set(names) - {s.name for s in specs})
    if unknown:
        raise InvalidInput(f"unknown input(s) {unknown}; expected {[s.name for s in specs]}")
    if len(groups) != 1:
        raise InvalidInput("give the inputs of exactly one kind: " + " or ".join(
            "+".join(s.name for s in specs if s.group == g and not s.optional)
            for g in dict.fromkeys(s.group for s in specs)))
    g = groups.pop()
    missing = [s.name for s in specs if s.group == g and not s.optional and s.name not in names]
    if missing:
        raise InvalidInput(f"missing input(s) {missing}")
    return g
