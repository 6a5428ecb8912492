"""Requests meet slots here: the dispatcher picks a free slot, the slot handle talks to it."""
