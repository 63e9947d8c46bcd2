"""uninlu model server: SiameseUniNLU behind FastAPI (the model layer never imports FastAPI)."""

__version__ = "0.1.0"
