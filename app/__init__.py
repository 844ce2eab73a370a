"""Model server: Flask application factory.

``create_app()`` builds the app, its blueprints and the per-process model
registry. Under uWSGI (``lazy-apps = true``) it runs in every worker after the
fork, so each worker loads and warms its own models.
"""
from __future__ import annotations

import logging
import os

from flask import Flask

__version__ = "1.0.0"

log = logging.getLogger(__name__)


def create_app(config=None, registry=None) -> Flask:
    """Build the Flask app.

    config: an :class:`app.config.Config` (default: from the environment).
    registry: a ready :class:`app.models.ModelRegistry` (tests); by default a new
    one is created and loaded according to ``MODEL_LOADING``.
    """
    from . import api, docs, errors, observability, pages, security
    from .config import Config
    from .models import ModelRegistry

    cfg = config or Config.from_env()
    observability.setup_logging(cfg.log_level)

    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=cfg.max_body_bytes,
        JSON_SORT_KEYS=False,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    app.json.sort_keys = False
    app.json.ensure_ascii = False  # Spanish text as UTF-8, not \u escapes
    app.extensions["config"] = cfg

    errors.register_error_handlers(app)
    observability.init_app(app)
    security.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(docs.bp)

    if registry is None:
        registry = ModelRegistry(cfg)
        if cfg.model_loading == "background":
            registry.start_background()
        else:  # sync (the default) or off
            registry.load_all()
    app.extensions["models"] = registry
    log.info("app created: pid=%d revision=%s models=%s", os.getpid(), cfg.revision,
             {k: v["status"] for k, v in registry.status().items()})
    return app
