"""A session: its timeline of tokens, the generator that samples under constraints and follows the player, and
offline generation on top of them."""
