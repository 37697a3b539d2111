"""``python -m xcloudfree`` runs the command line."""

from .cli import app

app()
