"""Backend wrappers for the pipeline tests: record the steps, or run every input alone."""

from app.model.pipeline import PromptRow


class Recorder:
    """Wraps a backend and records every step it executes."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.windows: list[list[list[int]]] = []
        self.rows: list[list[PromptRow]] = []

    def encode(self, windows):
        self.windows.append(windows)
        return self.inner.encode(windows)

    def score(self, rows):
        self.rows.append(rows)
        return self.inner.score(rows)


class OneByOne:
    """Executes every window and every row alone: no batching at all."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def encode(self, windows):
        return [self.inner.encode([w])[0] for w in windows]

    def score(self, rows):
        return [self.inner.score([r])[0] for r in rows]
