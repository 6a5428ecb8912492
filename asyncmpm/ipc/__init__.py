"""The lean channel between the front loop and a slot: length-prefixed frames, no pickling."""
