"""What a user gets out besides MIDI: audio through fluidsynth, piano-roll pictures."""
