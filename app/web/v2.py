"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST API) with JSON tensors, for
every model of the registry:

* ``GET /v2`` server metadata; ``GET /v2/health/live``, ``GET /v2/health/ready``;
* ``GET /v2/models/{m}[/versions/{v}]`` model metadata (inputs and outputs with data types and
  shapes), ``GET .../ready``, ``POST .../infer``;
* ``POST /v2/repository/index`` (Triton's model repository extension): every model and
  version of the repository and its state in this worker.

Errors answer ``{"error": "<message>"}``: 400 for a bad tensor, shape, data type or input,
404 for an unknown model or version, 503 when the model is not ready or busy (with
Retry-After), 413/422 for input over a limit.
"""
from __future__ import annotations

import json
import math

import numpy as np
from flask import Blueprint, jsonify, request

from .. import __version__
from ..serving.errors import ApiError, InvalidInput
from ..serving.servable import DATATYPES
from .errors import register_error_shape
from .helpers import endpoint, registry

bp = Blueprint("v2", __name__, url_prefix="/v2")
PREFIX = "/v2"


def v2_error_body(status: int, code: str, message: str, **extra) -> dict:
    return {"error": message}


@bp.get("")
@endpoint("v2_server", public=True)
def server_metadata():
    return jsonify({"name": "modelserver", "version": __version__, "extensions": ["model_repository"]})


@bp.get("/health/live")
@endpoint("v2_health", public=True)
def live():
    return jsonify({"live": True})


@bp.get("/health/ready")
@endpoint("v2_health", public=True)
def ready():
    reg = registry()
    if reg.ready:
        return jsonify({"ready": True})
    resp = jsonify({"ready": False, "error": "models not ready: " + ", ".join(reg.not_ready() or ["(none enabled)"])})
    resp.status_code = 503
    resp.headers["Retry-After"] = "5"
    return resp


@bp.get("/models/<model>")
@bp.get("/models/<model>/versions/<version>")
@endpoint("v2_metadata")
def model_metadata(model: str, version: str | None = None):
    return jsonify(registry().metadata(model, version))


@bp.get("/models/<model>/ready")
@bp.get("/models/<model>/versions/<version>/ready")
@endpoint("v2_metadata")
def model_ready(model: str, version: str | None = None):
    h = registry().handle(model, version)
    if h.status == "ready":
        return jsonify({"name": model, "version": h.version, "ready": True})
    resp = jsonify({"name": model, "version": h.version, "ready": False,
                    "error": f"model {model} is not ready ({h.status})" + (f": {h.error}" if h.error else "")})
    resp.status_code = 503
    resp.headers["Retry-After"] = "5"
    return resp


@bp.post("/repository/index")
@endpoint("v2_repository")
def repository_index():
    body = _json_body(optional=True) or {}
    rows = registry().repository_index()
    if body.get("ready") is True:
        rows = [r for r in rows if r["state"] == "READY"]
    return jsonify(rows)


@bp.post("/models/<model>/infer")
@bp.post("/models/<model>/versions/<version>/infer")
@endpoint("v2_infer", "Open Inference Protocol (POST /v2/models/{model}/infer)")
def infer(model: str, version: str | None = None):
    reg = registry()
    h = reg.handle(model, version)
    body = _json_body()
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object with 'inputs'")
    _known_fields(body, ("id", "parameters", "inputs", "outputs"), "the request")
    if "id" in body and not isinstance(body["id"], str):
        raise InvalidInput("'id' must be a string")
    parameters = _parameters(body, "the request")
    reg.ready_handle(model, version)
    inputs = decode_inputs(body.get("inputs"), h.cls.inputs)
    wanted = _requested_outputs(body.get("outputs"), h.cls.outputs)
    pred = reg.run(model, inputs, parameters, version)
    specs = {t.name: t for t in h.cls.outputs}
    outputs = [encode_output(name, value, specs[name]) for name, value in pred.outputs.items()
               if wanted is None or name in wanted]
    if wanted is not None:
        missing = sorted(wanted - {o["name"] for o in outputs})
        if missing:
            raise InvalidInput(f"output(s) {missing} are not produced for these inputs")
    out = {"model_name": model, "model_version": h.version, "outputs": outputs}
    if "id" in body:
        out["id"] = body["id"]
    return jsonify(out)


# --- tensors -------------------------------------------------------------------------------

def _json_body(optional: bool = False):
    raw = request.get_data(cache=True)
    if not raw.strip():
        if optional:
            return None
        raise InvalidInput("the request body is empty; expected a JSON inference request")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("the request body is nested too deeply") from None


def _known_fields(obj: dict, known: tuple, what: str) -> None:
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise InvalidInput(f"{what} has unknown field(s) {unknown[:5]}; expected {list(known)}")


def _parameters(obj: dict, what: str) -> dict:
    p = obj.get("parameters", {})
    if not isinstance(p, dict) or not all(isinstance(v, (int, float, str, bool)) for v in p.values()):
        raise InvalidInput(f"'parameters' of {what} must be an object of numbers, strings or booleans")
    return p


def _flatten(data, depth: int = 0) -> list:
    if depth > 16:
        raise InvalidInput("tensor data is nested too deeply")
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [x for part in data for x in _flatten(part if isinstance(part, list) else [part], depth + 1)]
    if not isinstance(data, list):
        return [data]
    return data


def decode_inputs(raw, specs) -> dict:
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    by_name = {s.name: s for s in specs}
    out: dict = {}
    for t in raw:
        if not isinstance(t, dict):
            raise InvalidInput("each input must be an object with name, shape, datatype and data")
        name, shape, dtype = t.get("name"), t.get("shape"), t.get("datatype")
        if not isinstance(name, str):
            raise InvalidInput("an input has no string 'name'")
        _known_fields(t, ("name", "shape", "datatype", "parameters", "data"), f"input {name!r}")
        _parameters(t, f"input {name!r}")
        spec = by_name.get(name)
        if spec is None:
            raise InvalidInput(f"unknown input {name!r}; expected {sorted(by_name)}")
        if name in out:
            raise InvalidInput(f"input {name!r} is given twice")
        if dtype != spec.datatype:
            raise InvalidInput(f"input {name!r} has datatype {dtype!r}; expected {spec.datatype}")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                   for d in shape)):
            raise InvalidInput(f"input {name!r}: 'shape' must be a list of non-negative integers")
        if len(shape) != len(spec.shape) or any(want not in (-1, got) for want, got in zip(spec.shape, shape)):
            raise InvalidInput(f"input {name!r} has shape {shape}; expected {list(spec.shape)} (-1: any)")
        if "data" not in t:
            raise InvalidInput(f"input {name!r} has no 'data' (the binary tensor extension is not supported)")
        flat = _flatten(t["data"])
        if len(flat) != math.prod(shape):
            raise InvalidInput(f"input {name!r}: shape {shape} needs {math.prod(shape)} elements, got {len(flat)}")
        out[name] = _typed(name, flat, shape, dtype)
    return out


def _typed(name: str, flat: list, shape: list, dtype: str):
    if dtype == "BYTES":
        if not all(isinstance(x, str) for x in flat):
            raise InvalidInput(f"input {name!r}: BYTES elements must be strings in JSON")
        return flat  # a list of str; shape [N] for every BYTES input we serve
    if any(isinstance(x, (list, dict, str)) or x is None for x in flat) or \
            (dtype != "BOOL" and any(isinstance(x, bool) for x in flat)):
        raise InvalidInput(f"input {name!r}: {dtype} elements must be numbers")
    try:
        arr = np.asarray(flat, dtype=np.dtype(DATATYPES[dtype]))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"input {name!r}: data is not {dtype}: {exc}") from None
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InvalidInput(f"input {name!r}: data must be finite numbers")
    return arr.reshape(shape)


def _requested_outputs(raw, specs):
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    for o in raw:
        _known_fields(o, ("name", "parameters"), f"output {o['name']!r}")
        _parameters(o, f"output {o['name']!r}")
    names = {o["name"] for o in raw}
    unknown = sorted(names - {s.name for s in specs})
    if unknown:
        raise InvalidInput(f"unknown output(s) {unknown}; expected {[s.name for s in specs]}")
    return names


def encode_output(name: str, value, spec) -> dict:
    if spec.datatype == "BYTES":
        data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value]
        return {"name": name, "datatype": "BYTES", "shape": [len(data)], "data": data}
    arr = np.asarray(value, dtype=np.dtype(DATATYPES[spec.datatype]))
    return {"name": name, "datatype": spec.datatype, "shape": list(arr.shape), "data": arr.ravel().tolist()}


def init_app(app) -> None:
    register_error_shape(PREFIX, v2_error_body)
    app.register_blueprint(bp)
