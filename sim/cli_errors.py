"""One path from a command's outcome to an exit status and a one-line message, for every `servesim`
command (`run`, `plan`, `calibrate`, ...).

    0    done (or the reader of stdout went away: `servesim run | head`)
    2    bad input: a ConfigError, or an error type the command declares as the user's (one line)
    130  interrupted (Ctrl-C)

A command may return another status of its own (`run` returns 3 for an unstable scenario).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Callable

from .configio import ConfigError

Command = Callable[[argparse.Namespace], "int | None"]


def _say(message: str) -> None:
    print(f"servesim: {' '.join(str(message).split())}", file=sys.stderr)


def run_command(func: Command, args: argparse.Namespace, user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """func(args) as an exit status; ConfigError and `user_errors` become `servesim: error: <one line>`, 2."""
    try:
        return int(func(args) or 0)
    except (ConfigError, *user_errors) as exc:
        _say(f"error: {exc}")
        return 2
    except BrokenPipeError:
        # The reader went away (servesim run | head): stop quietly, as cat and grep do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except (MemoryError, RecursionError) as exc:
        _say(f"error: the input is too large to simulate ({type(exc).__name__}); reduce num_requests, replicas "
             f"or nesting")
        return 2


def user_errors(*errors: type[BaseException]) -> Callable[[Command], Command]:
    """Decorate a command whose own exception types (besides ConfigError) are the user's fault: called
    directly or from a CLI, it exits through run_command."""
    def wrap(func: Command) -> Command:
        @functools.wraps(func)
        def command(args: argparse.Namespace) -> int:
            return run_command(func, args, errors)
        return command
    return wrap
