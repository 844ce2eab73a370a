"""The English->Spanish translator as a servable (our Transformer, TensorFlow).

Input ``text`` BYTES [N] (UTF-8 strings; each may hold several sentences), optional
parameter ``beam`` (1 = greedy, up to ``MAX_BEAM``); outputs ``translation`` BYTES [N] and
``confidence`` FP32 [N] (per text, its lowest sentence confidence; see model.py).
Items are (text, beam); the batch key is the beam, so the dynamic batcher decodes the texts
of concurrent requests with the same beam together (``TRANSLATE_BATCH_MAX``), and repeats
are answered from the LRU cache without queueing.
"""
from __future__ import annotations

from ...config import Setting
from ...serving.errors import InvalidInput, OverLimit
from ...serving.servable import Servable, TensorSpec, group_of

G = "translator"

#: Longest text (characters) the translator takes; longer ones are refused, never truncated.
MAX_CHARS = 5000


class TranslatorServable(Servable):
    frameworks = ("tensorflow",)
    platform = "tensorflow_keras"
    description = "English to Spanish translation (our Transformer)."
    settings = (
        Setting("MAX_BATCH_TEXTS", "32", "Most texts in one translation request.", G, "int", 1),
        Setting("MAX_TOTAL_CHARS", "20000",
                "Most characters in one translation request (all texts together), so that the largest "
                "request finishes well within HARAKIRI.", G, "int", 1),
        Setting("TRANSLATE_WAIT_TIMEOUT", "60",
                "Seconds a request may wait for this worker's translator before a 503 (busy, Retry-After).",
                G, "int", 1),
        Setting("MAX_BEAM", "4", "Largest beam accepted by the translation APIs.", G, "int", 1),
        Setting("DEFAULT_BEAM", "1", "Beam used when a request gives none (and by the HTML form).", G, "int", 1),
        Setting("TRANSLATE_BATCH_MAX", "32",
                "Dynamic batching: most texts decoded together in one call, collected from concurrent "
                "translation requests of a worker (0 turns batching off: one request at a time).", G, "int", 0),
        Setting("TRANSLATE_BATCH_WAIT_MS", "2",
                "Dynamic batching: longest time (ms) the oldest queued request waits for others to join "
                "its batch (0: no waiting; batches then form only while the previous one decodes).", G, "int", 0),
        Setting("TRANSLATE_CACHE_SIZE", "4096",
                "Sentences kept per worker in the translator's LRU cache (repeats skip decoding; 0 disables).",
                G, "int", 0),
        Setting("TRANSLATE_LOW_CONFIDENCE", "",
                "Sentences whose confidence (0..1) is below this are marked low_confidence in the APIs and "
                "on the page; empty: the threshold calibrated on dev in the model's metadata.json.", G),
    )
    inputs = (TensorSpec("text", "BYTES", (-1,), "English texts (UTF-8), one or more sentences each. "
                         "Parameter 'beam': beam width (1 = greedy)."),)
    primary_artifact = "weights.npz"
    outputs = (TensorSpec("translation", "BYTES", (-1,), "Spanish translations, one per text."),
               TensorSpec("confidence", "FP32", (-1,),
                          "Per text, the lowest confidence of its sentences (0..1: the exponential of the "
                          "length-normalised log-probability of the model's output; 1 for an empty text)."))
    translation_pairs = (("en", "es"),)

    def __init__(self, context):
        super().__init__(context)
        c = self.config
        self.max_chars = MAX_CHARS
        self.max_batch_size = c["TRANSLATE_BATCH_MAX"]
        self.batch_wait_ms = c["TRANSLATE_BATCH_WAIT_MS"]
        self.wait_timeout = float(c["TRANSLATE_WAIT_TIMEOUT"])

    @classmethod
    def read_settings(cls, environ) -> dict:
        values = super().read_settings(environ)
        if values["DEFAULT_BEAM"] > values["MAX_BEAM"]:
            raise ValueError("DEFAULT_BEAM must not exceed MAX_BEAM")
        raw = values["TRANSLATE_LOW_CONFIDENCE"]
        if raw:
            try:
                values["TRANSLATE_LOW_CONFIDENCE"] = float(raw)
            except ValueError:
                raise ValueError(f"TRANSLATE_LOW_CONFIDENCE={raw!r} is not a number") from None
            if not 0.0 <= values["TRANSLATE_LOW_CONFIDENCE"] <= 1.0:
                raise ValueError("TRANSLATE_LOW_CONFIDENCE must be between 0 and 1")
        return values

    def load(self) -> None:
        from .model import Translator
        self.model = Translator.load(self.model_dir, cache_size=self.config["TRANSLATE_CACHE_SIZE"])

    def warmup(self) -> None:
        """Trace the decoders (greedy and beam 4) so the first request is not slow."""
        self.infer([("Hello.", 1), ("How are you today, my friend? I am fine.", 1)])
        self.infer([("Hello.", 4)])

    @property
    def low_confidence(self) -> float:
        """The confidence below which a sentence is marked: the setting, else the model's
        calibrated threshold, else 0 (nothing marked: a model without calibration)."""
        value = self.config["TRANSLATE_LOW_CONFIDENCE"]
        if value == "":
            value = self.model.metadata.get("confidence", {}).get("threshold", 0.0)
        return float(value)

    def sentences(self, translation) -> list[dict]:
        """The sentences of one translated text as JSON objects (source, translation,
        confidence, low_confidence)."""
        low = self.low_confidence
        return [{"source": s.source, "translation": s.translation, "confidence": s.confidence,
                 "low_confidence": s.confidence < low} for s in translation.sentences]

    def extra_metadata(self) -> dict:
        m = self.model.metadata
        out = {k: m[k] for k in ("architecture", "parameters", "weights_dtype") if k in m}
        out["low_confidence_threshold"] = self.low_confidence
        out["pass_through"] = self.model.placeholders
        return out

    # --- validation: the one place for every translation entry point ---------------------
    def beam(self, value) -> int:
        if value is None:
            return self.config["DEFAULT_BEAM"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput("field 'beam' must be an integer", code="invalid_field")
        if not 1 <= value <= self.config["MAX_BEAM"]:
            raise InvalidInput(f"field 'beam' must be between 1 and {self.config['MAX_BEAM']}", code="invalid_field")
        return value

    def prepare(self, texts: list, beam, where=lambda i: f"texts[{i}]") -> list:
        """Checked items (text, beam) of one request's texts; ``where(i)`` names text i in messages."""
        c = self.config
        if len(texts) > c["MAX_BATCH_TEXTS"]:
            raise OverLimit(f"{len(texts)} texts in one request; the limit is {c['MAX_BATCH_TEXTS']}",
                            code="too_many_texts")
        for i, t in enumerate(texts):
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput(f"{where(i)} is not valid Unicode (lone surrogate)", code="invalid_field") from None
        beam = self.beam(beam)
        for i, t in enumerate(texts):
            if len(t) > self.max_chars:
                raise OverLimit(f"{where(i)} has {len(t)} characters; the limit is {self.max_chars}",
                                code="text_too_long")
        total = sum(len(t) for t in texts)
        if total > c["MAX_TOTAL_CHARS"]:
            raise OverLimit(f"{total} characters in one request; the limit is {c['MAX_TOTAL_CHARS']} "
                            "(split the batch)", code="too_much_text")
        return [(t, beam) for t in texts]

    def translation_items(self, texts, parameters, where=None) -> list:
        """Items of plain texts for the protocol layers (the LibreTranslate API): ``prepare``."""
        return self.prepare(list(texts), parameters.get("beam"), where=where or (lambda i: f"texts[{i}]"))

    def translation_limits(self) -> dict:
        c = self.config
        return {"max_texts": c["MAX_BATCH_TEXTS"], "max_chars": self.max_chars, "max_total_chars": c["MAX_TOTAL_CHARS"]}

    def preprocess(self, inputs, parameters) -> list:
        group_of(self.inputs, list(inputs))
        texts = []
        for i, b in enumerate(inputs["text"]):
            try:
                texts.append(b.decode("utf-8") if isinstance(b, bytes) else str(b))
            except UnicodeDecodeError:
                raise InvalidInput(f"text[{i}] is not valid UTF-8") from None
        if not texts:
            raise InvalidInput("input 'text' is empty")
        return self.prepare(texts, parameters.get("beam"), where=lambda i: f"text[{i}]")

    # --- inference ---------------------------------------------------------------------
    def usage(self, items: list) -> dict:
        return {"characters": sum(len(t) for t, _ in items)}

    def batch_key(self, item):
        return item[1]

    def cached(self, items: list):
        return self.model.cached([t for t, _ in items], items[0][1]) if len({b for _, b in items}) == 1 else None

    def infer(self, items: list) -> list:
        from .model import InputTooLong
        try:
            return self.model.translate([t for t, _ in items], beam=items[0][1])
        except InputTooLong as exc:
            raise OverLimit(str(exc), code="text_too_long") from None

    def postprocess(self, results, parameters, request_items) -> dict:
        return {"translation": [str(r) for r in results], "confidence": [r.confidence for r in results]}

    @classmethod
    def blueprint(cls):
        from .routes import bp
        return bp

    @classmethod
    def openapi_paths(cls, settings) -> dict:
        from .routes import openapi_paths
        return openapi_paths(settings)
