"""The ``gan-ext`` command line.

Each command is a module of this package (``info``, ``bench``, ``train``,
``sample``, ``eval``) holding its arguments, its run function and its
:class:`Command` record (help, description, examples); :data:`COMMANDS` in
``parser`` lists them, so a new command is one more module and one more entry.
What several commands share (argument types, options, output) is in ``common``.

Mistakes a user can make (a bad option value, asking for CUDA on a machine
without it) end with one line on stderr and exit code 2, never a traceback;
``GAN_EXT_DEBUG=1`` shows the traceback anyway.
"""
from __future__ import annotations

from .common import PROG, Command, UsageError
from .parser import COMMANDS, build_parser, main

__all__ = ["PROG", "Command", "UsageError", "COMMANDS", "build_parser", "main"]
