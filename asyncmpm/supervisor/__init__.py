"""The supervisor: scoreboard, the pure spare-server policy, and the effects that carry it out."""
