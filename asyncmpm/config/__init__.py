"""Configuration: one frozen :class:`Config`, built from directives (CLI or httpd.conf)."""

from asyncmpm.config.directives import DIRECTIVES, Directive
from asyncmpm.config.model import MPM, Backend, Config, ListenAddress, MPMLimits

__all__ = ["DIRECTIVES", "MPM", "Backend", "Config", "Directive", "ListenAddress", "MPMLimits"]
