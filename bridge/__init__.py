"""Live MIDI: ports, input capture, clock follower, output scheduler, held-note tracking, play modes.

Talks to the engine only through the engine's client. Importing it does nothing else (no threads, no ports).

    errors.py        BridgeError family: PortError, ConfigError, EngineLost
    clock.py         Clock interface: MonotonicClock (real), FakeClock (tests); real-time priority helper
    ports.py         port interface, name matching, in-memory MIDI system (MemoryMidi, MemoryBackend)
    rtmidi_ports.py  real ports through python-rtmidi: ALSA, JACK, CoreMIDI, WinMM; API choice
    notes.py         held-note tracking by note id, panic messages
    scheduler.py     due-time sender: note ids, maximum note length, cancel/release/panic, silence epochs
    midiclock.py     MIDI clock follower (24 ppqn, transport, song position, tempo), quantization grids
    feedback.py      echo suppression for loopback ports
    engine_link.py   the engine session over engine/client.py; the server event watcher
    modes.py         respond, accompany, harmonize, generate, thru
    core.py          Bridge: input thread, engine worker, scheduler, modes, CC map, panic paths
    recorder.py      both parts to a .mid (atomic)
    journal.py       the take on disk while it is played; recovery after a crash
    config.py        BridgeConfig, ModeConfig, CCMap; TOML settings
    live.py          LiveSession: a whole running bridge in a with-block (play, demo)
    launcher.py      find or start `musebridge serve`
    status.py        the live status line
    play_cli.py      `musebridge play`;  ports_cli.py: `musebridge ports`
"""
