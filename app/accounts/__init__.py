"""Accounts: users, API keys and JWT access tokens in a real database (SQLAlchemy 2, Alembic).

``ACCOUNTS=1`` turns it on for the server: API keys created with ``python -m app keys create``
and ``Authorization: Bearer <jwt>`` tokens from ``POST /auth/token`` (OAuth2 password flow) are
accepted besides the environment's ``API_KEYS``, and every non-public JSON endpoint needs one
of them. The database is ``DATABASE_URL`` (default: a SQLite file in ``RUN_DIR``, WAL mode),
created and migrated on first use; a schema newer than the code knows is refused.

- :mod:`.db`: engine and sessions; :mod:`.models`: the tables; :mod:`.schema`: migrations;
- :mod:`.passwords` (argon2), :mod:`.tokens` (JWT), :mod:`.keys` (API keys);
- :mod:`.cli`: ``python -m app {db,users,keys} ...``.
"""
