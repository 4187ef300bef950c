"""The token vocabulary and the codec between MIDI and tokens: vocab, codec, MIDI files, instrument classes, keys,
retiming."""
