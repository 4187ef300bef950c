"""Live MIDI as a pipeline: ports -> input stage -> typed work events -> modes -> one output stage.

Talks to the engine only through the engine's client. Importing it does nothing else (no threads, no ports).

    errors.py        BridgeError family: PortError, ConfigError, EngineLost
    clock.py         Clock interface: MonotonicClock (real), FakeClock (tests); real-time priority helper
    ports.py         port interface, name matching, in-memory MIDI system (MemoryMidi, MemoryBackend)
    rtmidi_ports.py  real ports through python-rtmidi: ALSA, JACK, CoreMIDI, WinMM; API choice
    notes.py         held-note tracking by note id, panic messages
    scheduler.py     due-time sender: note ids, maximum note length, cancel/release/panic, silence epochs
    midiclock.py     MIDI clock follower (24 ppqn, transport, song position, tempo), quantization grids
    feedback.py      echo suppression for loopback ports
    engine_link.py   the engine session over engine/server/client.py; the server event watcher
    input.py         input stage: the callback queues; the input thread filters, maps CCs, silences, passes thru
    work.py          typed work events from the input stage and the engine watcher to the worker
    worker.py        engine worker: the current mode, connect / reconnect, mode switches
    context.py       ModeContext: what a mode sees (engine, play on a timebase, release, now, tempo)
    modes.py         respond, accompany, harmonize, generate, thru
    output.py        output stage: note ids, quantization shift, held notes, harmony voices, the player's keys
    core.py          Bridge: the pieces assembled, opened, started and stopped together
    recorder.py      both parts to a .mid (atomic)
    journal.py       the take on disk while it is played; recovery after a crash
    config.py        BridgeConfig, ModeConfig, CCMap; TOML settings
    live.py          LiveSession: a whole running bridge in a with-block (play, demo)
    launcher.py      find or start `musebridge serve`
    status.py        the live status line
    play_cli.py      `musebridge play`;  ports_cli.py: `musebridge ports`
"""
