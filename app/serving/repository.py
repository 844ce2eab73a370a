"""The versioned model repository (``MODEL_REPOSITORY``, default ``models/``).

Layout, as in TF Serving and Triton::

    models/
      <name>/
        model.json          {"servable": "<built-in name> | <module>:<Class>", "description": "..."}
        <version>/          the artifacts of one version (any files the servable reads)
        <module>.py         optional: a user's servable code, imported from this folder

``servable`` names a built-in servable (``nose_tracker``, ``translator``) or a class in code
inside the model's own folder (``servable:DigitsServable`` is ``<name>/servable.py``), so a
user's model brings its own pre- and post-processing and needs no edit under ``app/``.

Version policy: the highest version (compared part by part, numbers as numbers:
``1.10.0`` > ``1.9.2``, ``2026.11.22-step4076`` > ``2026.11.3``), unless a pin names one:
``<NAME>_VERSION`` in the environment (``NOSE_TRACKER_VERSION=1.4.0``), else ``"version"``
in model.json. The manifest pin is read by every (re)started worker, so a rollback on a
running server is: set it, then chain-reload (``./start.sh reload``).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..config import model_env_prefix

MANIFEST = "model.json"
_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class RepositoryError(Exception):
    """A model that cannot be served as configured (not found, bad manifest, bad pin...)."""


def version_key(version: str) -> tuple:
    """Sort key: numbers compare as numbers, text as text, numbers before text."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.findall(r"\d+|[A-Za-z]+", version))


@dataclass
class ModelEntry:
    name: str
    path: Path
    manifest: dict = field(default_factory=dict)
    versions: list = field(default_factory=list)  # ascending

    def version_dir(self, version: str) -> Path:
        return self.path / version


def read_entry(root: Path, name: str) -> ModelEntry:
    """The repository entry of model ``name``; RepositoryError when it cannot be used."""
    path = Path(root) / name
    if not path.is_dir():
        raise RepositoryError(f"model {name!r} is not in the model repository {root}")
    mf = path / MANIFEST
    if not mf.is_file():
        raise RepositoryError(f"{mf} is missing (it names the model's servable)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"{mf} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("servable"), str):
        raise RepositoryError(f"{mf} must be a JSON object with a string field 'servable'")
    versions = sorted((p.name for p in path.iterdir() if p.is_dir() and _VERSION_NAME.match(p.name)
                       and p.name != "__pycache__" and not p.name.startswith(".") and _is_version(p)),
                      key=version_key)
    return ModelEntry(name=name, path=path, manifest=manifest, versions=versions)


def _is_version(p: Path) -> bool:
    """A version folder holds files and is not a Python package of the model's code."""
    return not (p / "__init__.py").exists()


def list_models(root: Path) -> list[str]:
    """Every folder of the repository with a manifest."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())


def select_version(entry: ModelEntry, environ: Mapping[str, str]) -> str:
    """The version to serve: ``<NAME>_VERSION`` if set, else model.json's ``version``, else the highest."""
    var = f"{model_env_prefix(entry.name)}_VERSION"
    pin, where = (environ.get(var) or "").strip(), var
    if not pin and entry.manifest.get("version") is not None:
        pin, where = str(entry.manifest["version"]).strip(), f"{entry.path / MANIFEST} 'version'"
    if pin:
        if pin not in entry.versions:
            raise RepositoryError(f"{where} pins {pin!r} but model {entry.name} has versions {entry.versions}")
        return pin
    if not entry.versions:
        raise RepositoryError(f"model {entry.name} has no version folder in {entry.path}")
    return entry.versions[-1]


def servable_class(entry: ModelEntry):
    """The Servable subclass the manifest names (built-in, or code in the model's folder)."""
    from ..servables import BUILTIN
    from .servable import Servable

    ref = entry.manifest["servable"]
    if ref in BUILTIN:
        return BUILTIN[ref]
    module_name, sep, cls_name = ref.partition(":")
    if not sep or not module_name or not cls_name:
        raise RepositoryError(f"servable {ref!r}: expected a built-in ({', '.join(BUILTIN)}) or 'module:Class'")
    package = _model_package(entry)
    try:
        module = importlib.import_module(f"{package}.{module_name}")
    except ModuleNotFoundError as exc:
        raise RepositoryError(f"servable {ref!r}: no module {module_name!r} in {entry.path} ({exc})") from None
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Servable)):
        raise RepositoryError(f"servable {ref!r}: {cls_name} is not a Servable subclass in {module.__file__}")
    return cls


def _model_package(entry: ModelEntry) -> str:
    """A package (``modelrepo.<name>``) whose path is the model's folder, so its code can
    import its own modules relatively."""
    root = "modelrepo"
    if root not in sys.modules:
        pkg = types.ModuleType(root)
        pkg.__path__ = []
        sys.modules[root] = pkg
    safe = re.sub(r"\W", "_", entry.name)
    full = f"{root}.{safe}"
    if full not in sys.modules:
        spec = importlib.util.spec_from_loader(full, loader=None, is_package=True)
        pkg = importlib.util.module_from_spec(spec)
        pkg.__path__ = [str(entry.path)]
        sys.modules[full] = pkg
    return full


def version_dir(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """The directory of the version of ``name`` that the server would serve (for tools)."""
    import os
    from ..config import effective_env
    env = effective_env(os.environ if environ is None else environ)
    entry = read_entry(Path(env["MODEL_REPOSITORY"]), name)
    return entry.version_dir(select_version(entry, {**os.environ, **env}))
