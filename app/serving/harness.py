"""Run a servable without a server (like TorchServe's MockContext): for a model's own tests,
notebooks and tools.

    from app.serving.harness import load_servable, predict, v2_infer
    sv = load_servable("models/digits")               # a model folder (highest version)
    out = predict(sv, {"image": pixels}, {})          # preprocess -> infer -> postprocess
    body = v2_infer(sv, {"inputs": [...]})            # an Open Inference Protocol request body

``load_servable`` goes through the same steps as the registry (manifest, version policy,
settings from ``env``, thread pools, load, warm-up), and ``v2_infer`` through the same tensor
decoding and encoding as ``POST /v2/models/{name}/infer``, so what passes here passes there.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..config import Config
from . import threads
from .repository import read_entry, select_version, servable_class
from .servable import Servable, ServableContext


def load_servable(model_path: str | os.PathLike, env: Mapping[str, str] | None = None,
                  version: str | None = None, warmup: bool = True) -> Servable:
    """A loaded servable from a model folder (``<name>/model.json`` + version folders).
    ``env`` gives settings and pins (default: none, so the defaults apply)."""
    path = Path(model_path).resolve()
    env = dict(env or {})
    entry = read_entry(path.parent, path.name)
    if version is None:
        version = select_version(entry, env)
    cls = servable_class(entry)
    core = Config.from_env({**env, "MODEL_REPOSITORY": str(path.parent), "ENABLED_MODELS": path.name})
    ctx = ServableContext(name=path.name, version=version, model_dir=entry.version_dir(version),
                          settings=cls.read_settings(env), manifest=entry.manifest, core=core)
    sv = cls(ctx)
    threads.configure(core, sv.frameworks)
    sv.load()
    if warmup:
        sv.warmup()
    return sv


def predict(sv: Servable, inputs: Mapping[str, Any], parameters: Mapping[str, Any] | None = None) -> dict:
    """preprocess -> infer (per batch key, as the registry groups) -> postprocess."""
    parameters = parameters or {}
    items = sv.preprocess(inputs, parameters)
    results: list = [None] * len(items)
    groups: dict = {}
    for i, it in enumerate(items):
        groups.setdefault(sv.batch_key(it), []).append(i)
    for idx in groups.values():
        for i, r in zip(idx, sv.infer([items[i] for i in idx])):
            results[i] = r
    return sv.postprocess(results, parameters, items)


def v2_infer(sv: Servable, body: Mapping[str, Any]) -> dict:
    """The response body ``POST /v2/models/{name}/infer`` would give for ``body`` (raises the
    same ApiError subclasses for bad input)."""
    from ..web.v2 import decode_inputs, encode_output
    inputs = decode_inputs(body.get("inputs"), sv.inputs)
    outputs = predict(sv, inputs, body.get("parameters") or {})
    specs = {t.name: t for t in sv.outputs}
    return {"model_name": sv.name, "model_version": sv.version,
            "outputs": [encode_output(n, v, specs[n]) for n, v in outputs.items()]}
