"""Training, export, evaluation and speed measurement of the nose tracker (see train.py).

Its modules import each other as ``training.nose_tracker.<module>``; the files are run as
scripts from the repository root (``.venv/bin/python training/nose_tracker/train.py``), with
the project installed into .venv in editable mode (``pip install -e .``).
"""
