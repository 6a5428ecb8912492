"""Apache's mod_status: ``/server-status`` (HTML, ``?notable``) and ``?auto``, rendered from one
:class:`~asyncmpm.supervisor.scoreboard.ScoreboardSnapshot`. Pure functions, no I/O."""
