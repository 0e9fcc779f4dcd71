"""Views of the engine's records: each consumes the same records, so they cannot disagree."""

from __future__ import annotations

from gdfit import records


class Tee:
    """Several renderers fed the same records, in order."""

    def __init__(self, renderers: list[records.Renderer]) -> None:
        self.renderers = renderers

    def start(self, rec: records.StartRecord) -> None:
        for renderer in self.renderers:
            renderer.start(rec)

    def step(self, rec: records.StepRecord) -> None:
        for renderer in self.renderers:
            renderer.step(rec)

    def end(self, result: records.FitResult) -> None:
        for renderer in self.renderers:
            renderer.end(result)

    def abort(self) -> None:
        for renderer in self.renderers:
            renderer.abort()
