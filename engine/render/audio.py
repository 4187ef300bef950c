"""Hearing a MIDI file: render it to a WAV with fluidsynth and a General MIDI soundfont, and play the WAV.

    wav = render_wav("demo.mid", "demo.wav")          # AudioUnavailable: no fluidsynth or soundfont
    play_wav(wav)                                      # AudioUnavailable: no audio player

fluidsynth is an external program (Debian/Ubuntu: `apt-get install fluidsynth fluid-soundfont-gm`; macOS: `brew
install fluid-synth` plus a General MIDI .sf2 file), run as a subprocess: it renders faster than real time (about
0.5 s for the demo's 14 s, most of it loading the soundfont). Every error is an AudioError (an EngineError) with a
one-line message naming the file and the fix; AudioUnavailable means a tool is not installed, which a caller that
renders only by default (the demo without --wav) may report and carry on from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import wave
from pathlib import Path

from ..errors import EngineError
from ..files import atomic_write

SOUNDFONT_ENV = "MUSEBRIDGE_SOUNDFONT"  # a soundfont chosen by the user, before any of the places below

# Where packages put a General MIDI soundfont: Debian/Ubuntu fluid-soundfont-gm (and its default-GM alternative),
# Fedora/Arch fluid-soundfont-gm, then fluidsynth's own compiled-in default (PREFIX/share/soundfonts/default.sf2)
# for the system, Homebrew on Apple silicon and Homebrew on Intel Macs. Homebrew's fluid-synth installs no GM
# soundfont, so on macOS the user puts one at that default or in the macOS sound-bank folder (SOUNDFONT_FOLDERS).
SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/local/share/soundfonts/default.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
)
# Folders searched (in name order) for any *.sf2 when none of SOUNDFONTS exists: macOS's sound-bank folder.
SOUNDFONT_FOLDERS = ("~/Library/Audio/Sounds/Banks",)

INSTALL_HINT = ("Debian/Ubuntu: sudo apt-get install fluidsynth fluid-soundfont-gm; "
                "macOS: brew install fluid-synth and put a General MIDI .sf2 (e.g. GeneralUser GS) "
                "in ~/Library/Audio/Sounds/Banks; "
                f"or set {SOUNDFONT_ENV}=FILE.sf2")

# Players tried in order, each with its arguments before the file: macOS, PulseAudio/PipeWire, PipeWire, ALSA,
# ffmpeg. Each blocks until the sound ends.
PLAYERS = (("afplay", ()), ("paplay", ()), ("pw-play", ()), ("aplay", ("-q",)),
           ("ffplay", ("-nodisp", "-autoexit", "-loglevel", "error")))

GAIN = 0.8  # fluidsynth's master gain (its default 0.2 is quiet; above 1 a full band clips)
RATE = 44100  # samples per second of the WAV


class AudioError(EngineError):
    """A WAV that cannot be rendered or played; the message is one line naming the file and the fix."""


class AudioUnavailable(AudioError):
    """fluidsynth, a soundfont or an audio player is not installed; the message says how to get it."""


def is_soundfont(path: str | os.PathLike) -> bool:
    """True when `path` is a readable SoundFont 2 file (RIFF....sfbk)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return head[:4] == b"RIFF" and head[8:12] == b"sfbk"


def find_soundfont(soundfont: str | os.PathLike | None = None) -> Path | None:
    """The soundfont to render with: `soundfont` if given, else $MUSEBRIDGE_SOUNDFONT if set (either must be a
    SoundFont 2 file: AudioError otherwise), else the first of SOUNDFONTS and SOUNDFONT_FOLDERS that exists, else
    None."""
    chosen = soundfont or os.environ.get(SOUNDFONT_ENV) or None
    if chosen is not None:
        path = Path(chosen).expanduser()
        if not is_soundfont(path):
            where = "" if soundfont else f" (from ${SOUNDFONT_ENV})"
            problem = "is not a SoundFont 2 (.sf2) file" if path.is_file() else "does not exist"
            raise AudioError(f"soundfont {path}{where} {problem}; give a General MIDI .sf2 file")
        return path
    for name in SOUNDFONTS:
        if Path(name).is_file():
            return Path(name)
    for folder in SOUNDFONT_FOLDERS:
        found = sorted(Path(folder).expanduser().glob("*.sf2"))
        if found:
            return found[0]
    return None


def check_tools(soundfont: str | os.PathLike | None = None) -> tuple[str, Path]:
    """(fluidsynth executable, soundfont) or AudioUnavailable (one line: how to install them); AudioError for a
    chosen soundfont that is not one."""
    synth = shutil.which("fluidsynth")
    font = find_soundfont(soundfont)
    if synth is None or font is None:
        needs = (("fluidsynth", synth), ("a General MIDI soundfont", font))
        missing = " and ".join(name for name, found in needs if not found)
        raise AudioUnavailable(f"no audio: rendering a WAV needs {missing} ({INSTALL_HINT})")
    return synth, font


def check_writable(wav_path: str | os.PathLike) -> None:
    """AudioError unless `wav_path` ends in .wav and its folder exists and is writable (a check before the work
    whose result it will hold)."""
    path = Path(wav_path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.suffix.lower() != ".wav":
        raise AudioError(f"{path}: the audio file must end in .wav; choose another name")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise AudioError(f"{path}: cannot write there (folder {folder} is missing or read-only); "
                         "choose another path")


def render_wav(midi_path: str | os.PathLike, wav_path: str | os.PathLike,
               soundfont: str | os.PathLike | None = None, timeout_s: float = 600.0) -> Path:
    """Render the MIDI file to a 16-bit stereo WAV at RATE Hz (written atomically: a temporary file in the same
    folder, renamed over `wav_path` only when complete and valid). `soundfont`: a .sf2 file (default:
    find_soundfont()). `timeout_s`: seconds fluidsynth may take. Returns `wav_path`; raises AudioUnavailable
    without fluidsynth or a soundfont, AudioError when the file cannot be made (nothing is left behind)."""
    wav, midi = Path(wav_path), Path(midi_path)
    check_writable(wav)
    try:
        with open(midi, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise AudioError(f"{midi}: cannot read the MIDI file to render ({exc.strerror}); check the path") from None
    if head != b"MThd":
        raise AudioError(f"{midi}: not a Standard MIDI file (no MThd header); render a .mid file")
    synth, font = check_tools(soundfont)

    def make(tmp: Path) -> None:
        # -n no MIDI input, -i no shell; the file type follows the .wav suffix. fluidsynth exits 0 after some
        # failures (a soundfont it cannot load, an output it cannot open), so its stderr and the file are checked.
        proc = subprocess.run([synth, "-ni", "-g", str(GAIN), "-r", str(RATE), "-F", str(tmp), str(font),
                               str(midi)], capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or "fluidsynth: error" in proc.stderr:
            raise AudioError(f"{wav}: fluidsynth could not render {midi} ({_reason(proc)}); "
                             f"try `fluidsynth -ni -F {wav} {font} {midi}` to see why")
        _check_wav(tmp, wav)

    try:
        return atomic_write(wav, make, AudioError, suffix=".tmp.wav")
    except subprocess.TimeoutExpired:
        raise AudioError(f"{wav}: fluidsynth took more than {timeout_s:g} s to render {midi}; "
                         "render a shorter file") from None


def _check_wav(tmp: Path, wav: Path) -> None:
    try:
        with wave.open(str(tmp), "rb") as w:
            w.getnframes()
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"{wav}: fluidsynth wrote no valid WAV ({exc}); check that it was built with "
                         "libsndfile (`fluidsynth -T help` lists wav)") from None


def _reason(proc: subprocess.CompletedProcess) -> str:
    """The line of a failed program's stderr that says why: fluidsynth's own error first, else the last line."""
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    mark = "fluidsynth: error:"
    own = [line.removeprefix(mark).strip() for line in lines if line.startswith(mark)]
    return (own or lines or [f"exit status {proc.returncode}"])[0 if own else -1]


def find_player() -> tuple[str, tuple[str, ...]] | None:
    """(executable, arguments before the file) of the first audio player in PLAYERS on PATH, or None."""
    for name, extra in PLAYERS:
        found = shutil.which(name)
        if found:
            return found, extra
    return None


def play_wav(wav_path: str | os.PathLike, midi_path: str | os.PathLike | None = None,
             soundfont: str | os.PathLike | None = None, timeout_s: float | None = None) -> str:
    """Play the WAV through the first player in PLAYERS and wait until it ends; with none installed, play
    `midi_path` (the WAV's source) through fluidsynth's own audio output instead. Returns what played it.
    `timeout_s`: seconds to wait (default: the WAV's length plus 30). AudioUnavailable when nothing can play,
    AudioError when the player fails (no sound device, say)."""
    wav = Path(wav_path)
    if timeout_s is None:
        try:
            with wave.open(str(wav), "rb") as w:
                timeout_s = w.getnframes() / w.getframerate() + 30.0
        except (OSError, wave.Error, EOFError) as exc:
            raise AudioError(f"{wav}: not a readable WAV ({exc}); render it again") from None
    player = find_player()
    if player is not None:
        exe, extra = player
        command = [exe, *extra, str(wav)]
    elif midi_path is not None and shutil.which("fluidsynth"):
        exe, font = check_tools(soundfont)
        command = [exe, "-ni", "-g", str(GAIN), str(font), str(midi_path)]
    else:
        raise AudioUnavailable(f"no audio player found ({', '.join(n for n, _ in PLAYERS)}); "
                               f"open {wav} in any audio player")
    name = Path(exe).name
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AudioError(f"{name} did not finish playing {wav} within {timeout_s:g} s; "
                         "open it in another player") from None
    except OSError as exc:
        raise AudioError(f"cannot run {exe} ({exc.strerror}); open {wav} in another player") from None
    if proc.returncode != 0:
        raise AudioError(f"{name} could not play {wav} ({_reason(proc)}); open it in another player")
    return name
