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
    registry: a :class:`app.serving.registry.ModelRegistry` (tests; loaded by the caller); by
    default a new one is created and loaded according to ``MODEL_LOADING``.
    """
    from .config import Config
    from .serving.registry import ModelRegistry
    from .web import api, auth, docs, errors, inference_history, libretranslate, observability, pages, security, v2

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
    v2.init_app(app)

    created = registry is None
    if created:
        registry = ModelRegistry(cfg)
    # each served model's own routes (its servable's blueprint), then a start page if none has "/"
    for bp in dict.fromkeys(h.cls.blueprint() for h in registry.handles.values() if h.cls is not None):
        if bp is not None:
            app.register_blueprint(bp)
    pages.register_start_page(app)
    libretranslate.init_app(app, registry)  # LibreTranslate's API over the translation servables
    auth.init_app(app, registry)  # ACCOUNTS=1: the accounts database, POST /auth/token, quotas, /login
    inference_history.init_app(app, registry)  # ACCOUNTS=1, HISTORY=meta|full: /history, /api/history

    if created:
        if cfg.model_loading == "background":
            registry.start_background()
        else:  # sync (the default) or off
            registry.load_all()
    app.extensions["models"] = registry
    log.info("app created: pid=%d revision=%s models=%s", os.getpid(), cfg.revision,
             {k: v["status"] for k, v in registry.status().items()})
    return app
