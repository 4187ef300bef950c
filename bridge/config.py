"""Bridge settings: frozen dataclasses, built from defaults, an optional TOML file and the command line.

TOML layout (every key optional; docs/live.md has a full example):

    mode = "accompany"            # respond, accompany, harmonize, generate, thru
    in = "Keystation"             # existing port names (substring); omit for virtual ports
    out = "FluidSynth"
    api = "jack"
    channel = 1                   # only listen to MIDI channel 1 (1-16); omit for all
    thru = true
    [engine]   style = "bach", instruments = ["strings", "bass"], player_instrument = "piano", temperature = 0.9
    [modes]    pause_ms = 600, answer_beats = 8, voices = 3, horizon_ms = 300
    [clock]    bpm = 100, quantize = "1/16"
    [cc]       respond = 102, trigger = 107, channel = 16
    [channels] strings = 3        # instrument -> MIDI channel 1-16
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from musebridge.engine.server.protocol import MODES
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES, INSTRUMENTS

from .errors import ConfigError
from .midiclock import ClockConfig
from .scheduler import SchedulerConfig

CC_ACTIONS = ("respond", "accompany", "harmonize", "generate", "thru", "trigger", "stop", "temperature")


@dataclass(frozen=True)
class CCMap:
    """MIDI CC numbers (0-127) that control the bridge; None disables one. channel: 0-15, or None for any.
    Mode CCs select their mode at value >= 64; trigger answers now (respond); stop silences and pauses;
    temperature maps 0-127 to 0.1-2.0. CC123 (all notes off) always silences."""

    respond: int | None = 102
    accompany: int | None = 103
    harmonize: int | None = 104
    generate: int | None = 105
    thru: int | None = 106
    trigger: int | None = 107
    stop: int | None = 108
    temperature: int | None = 109
    channel: int | None = None

    def __post_init__(self):
        for name in CC_ACTIONS:
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 127 or value in (64, 120, 123):
                raise ConfigError(f"CC for {name} must be 0-127 and not 64/120/123, got {value}")

    def action(self, channel: int, control: int) -> str | None:
        """The action mapped to a CC on a channel, or None."""
        if self.channel is not None and channel != self.channel:
            return None
        for name in CC_ACTIONS:
            if getattr(self, name) == control:
                return name
        return None


@dataclass(frozen=True)
class ModeConfig:
    """Turn-taking and planning. pause_s: respond waits this long after the player's last note (or pause_beats
    at the current tempo when set). answer_s / answer_beats: length of an answer. horizon_s: how far ahead
    accompany/generate plan; chunk_s: seconds generated per engine call. voices: harmonize voices per note.
    anticipate_s: harmonize asks the engine to prepare the time shift to each coming 10 ms step (the `anticipate`
    command: one model step per 10 ms on the server) while the player played within this many seconds; 0: off."""

    pause_s: float = 0.6
    pause_beats: float | None = None
    answer_s: float = 4.0
    answer_beats: float | None = None
    horizon_s: float = 0.3
    chunk_s: float = 0.25
    voices: int = 3
    anticipate_s: float = 10.0

    def __post_init__(self):
        if not 1 <= self.voices <= 16:
            raise ConfigError(f"voices must be 1-16, got {self.voices}")
        if min(self.pause_s, self.answer_s, self.horizon_s, self.chunk_s) <= 0:
            raise ConfigError("pause, answer, horizon and chunk lengths must be positive")
        if self.anticipate_s < 0:
            raise ConfigError(f"anticipate_s must be >= 0 (0: off), got {self.anticipate_s}")


@dataclass(frozen=True)
class BridgeConfig:
    """Everything the live bridge needs. in_port/out_port: existing port names (None: virtual ports named
    in_name/out_name). channel: listen only to this MIDI channel (0-15). engine: session parameters for the
    engine (protocol names). channels: instrument name -> output channel 0-15 (default: the engine's)."""

    mode: str = "respond"
    in_port: str | None = None
    out_port: str | None = None
    in_name: str = "MuseBridge In"
    out_name: str = "MuseBridge Out"
    api: str | None = None
    channel: int | None = None
    thru: bool = False
    suppress_feedback: bool = True
    program_changes: bool = True
    engine: dict = field(default_factory=lambda: {"instruments": ["strings"], "player_instrument": "piano"})
    channels: dict = field(default_factory=dict)
    modes: ModeConfig = field(default_factory=ModeConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    cc: CCMap = field(default_factory=CCMap)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    record: str | None = None
    tick_s: float = 0.005

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; choose from: {', '.join(MODES)}")
        if self.channel is not None and not 0 <= self.channel <= 15:
            raise ConfigError(f"channel must be 1-16, got {self.channel + 1}")
        for name, ch in self.channels.items():
            if name not in INSTRUMENT_NAMES or not 0 <= ch <= 15:
                raise ConfigError(f"channels: {name!r} -> {ch + 1}: instrument must be one of "
                                  f"{', '.join(INSTRUMENT_NAMES)} and channel 1-16")

    def channel_map(self) -> dict[int, int]:
        """Engine output channel -> channel to send on (only remapped channels)."""
        return {INSTRUMENTS[INSTRUMENT_NAMES.index(n)].channel: ch for n, ch in self.channels.items()}


_TOP = {"mode": "mode", "in": "in_port", "out": "out_port", "api": "api", "thru": "thru",
        "suppress_feedback": "suppress_feedback", "program_changes": "program_changes", "record": "record",
        "in_name": "in_name", "out_name": "out_name"}


def _sub(cls, table: dict, where: str, rename: dict | None = None):
    rename = rename or {}
    known = {f.name for f in fields(cls)}
    out = {}
    for key, value in table.items():
        name = rename.get(key, key)
        if key.endswith("_ms") and name == key:
            name, value = key[:-3] + "_s", value / 1000.0
        if name not in known:
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        out[name] = value
    try:
        return cls(**out)
    except (TypeError, ValueError, ConfigError) as exc:  # ConfigError: the settings' own checks, without `where`
        raise ConfigError(f"{where}: {exc}") from None


def _channel(value, where: str) -> int:
    """A MIDI channel as the file writes it (1-16) -> the 0-based number; the range is checked by the config."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: a channel is a whole number 1-16, got {value!r}")
    return value - 1


def load_toml(path: str | Path, base: BridgeConfig | None = None) -> BridgeConfig:
    """Settings from a TOML file over `base` (defaults). ConfigError names the file and the bad key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    base = base or BridgeConfig()
    changes: dict = {}
    for key, value in data.items():
        if key in _TOP:
            changes[_TOP[key]] = value
        elif key == "channel":
            changes["channel"] = _channel(value, f"config {path}: channel")
        elif key == "engine":
            changes["engine"] = {**base.engine, **value}
        elif key == "channels":
            changes["channels"] = {k: _channel(v, f"config {path} [channels] {k}") for k, v in value.items()}
        elif key == "cc":
            cc = {k: _channel(v, f"config {path} [cc] channel") if k == "channel" else v
                  for k, v in value.items()}
            changes["cc"] = _sub(CCMap, cc, f"config {path} [cc]")
        elif key in ("modes", "clock", "scheduler"):
            cls = {"modes": ModeConfig, "clock": ClockConfig, "scheduler": SchedulerConfig}[key]
            changes[key] = _sub(cls, value, f"config {path} [{key}]")
        else:
            raise ConfigError(f"config {path}: unknown setting {key!r}")
    try:
        return replace(base, **changes)
    except (TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"config {path}: {exc}") from None
