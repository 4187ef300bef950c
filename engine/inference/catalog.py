"""What a model has learned from: its styles and instrument classes, with the training data behind each.

A model file carries the summary of its training data (export/train.py `data_summary`, kept in the ONNX
metadata): pieces per style and, for models trained since it was recorded, note-ons per instrument class. The
catalog reads it so that every front-end (generate, play, ctl through the server, `musebridge styles`) treats
names the same way:
- names are case-insensitive ("Bach", "BACH" and "bach" are one style);
- "unknown" (no style token's meaning: the model chooses) is always accepted;
- a style with no training pieces is refused, with the list of the styles that have data; a model that does not
  record its data accepts every style of the vocabulary.
Instrument classes with little or no data are not refused: their parts still play (engine/sessions/follow.py brings
in silent instruments), and the docs say how well (docs/engine.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import EngineError
from ..tokens import vocab as V
from ..tokens.instruments import INSTRUMENT_NAMES

NO_STYLE = "unknown"


@dataclass(frozen=True)
class Catalog:
    """Training data per style (pieces) and per instrument class (note-ons); None where the model does not say."""

    styles: dict[str, int] | None
    instruments: dict[str, int] | None

    @classmethod
    def from_data(cls, data: dict | None) -> Catalog:
        """From a model's data summary (ModelInfo.data); unrecorded parts become None."""
        data = data or {}
        styles = data.get("styles")
        instruments = data.get("instruments")
        return cls(
            styles={s: int(styles.get(s, 0)) for s in V.STYLES} if isinstance(styles, dict) else None,
            instruments=({n: int(instruments.get(n, 0)) for n in INSTRUMENT_NAMES}
                         if isinstance(instruments, dict) else None),
        )

    def styles_with_data(self) -> list[str]:
        """Styles the model can be asked for, most trained first; "unknown" last."""
        if self.styles is None:
            return list(V.STYLES[1:]) + [NO_STYLE]
        trained = sorted((s for s, n in self.styles.items() if n > 0 and s != NO_STYLE),
                         key=lambda s: (-self.styles[s], s))
        return trained + [NO_STYLE]

    def style(self, name: str) -> str:
        """The vocabulary's name for `name` (any case); raises EngineError naming the styles with data."""
        key = str(name).strip().lower()
        choices = ", ".join(self.styles_with_data())
        if key not in V.STYLES:
            raise EngineError(f"unknown style {name!r}; choose from: {choices}")
        if key != NO_STYLE and self.styles is not None and self.styles[key] == 0:
            raise EngineError(f"style {key!r} has no training data in this model; choose from: {choices}")
        return key


def style_of(name: str, data: dict | None) -> str:
    """Shorthand: Catalog.from_data(data).style(name)."""
    return Catalog.from_data(data).style(name)

