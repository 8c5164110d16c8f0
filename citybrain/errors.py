"""CityBrain's errors: every message names the bad value, the rule or limit, and the fix.

Two kinds, so callers (the CLI, the DAG tasks, the supervisor of a live platform) can act
without parsing messages:

- :class:`InputError`: what a person gave (a setting, a contract, a file, an option) breaks a
  rule. Running again changes nothing until it is fixed; the CLI exits 2.
- :class:`ServiceError`: a service the platform needs (the broker, its topics) failed or did
  not answer. ``retriable`` says whether trying again later may succeed.

:class:`ExitCode` is what every ``citybrain`` command exits with, defined once here beside the errors
it follows from (:func:`exit_code_for`).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CityBrainError", "ExitCode", "InputError", "ServiceError", "exit_code_for"]


class CityBrainError(Exception):
    """Base of every error CityBrain raises on purpose."""

    #: True when the same call may succeed later without anything being fixed (aiokafka's convention).
    retriable: bool = False


class InputError(CityBrainError, ValueError):
    """A setting, contract, file or option breaks a rule; the message names it, the rule and the fix."""


class ServiceError(CityBrainError, RuntimeError):
    """A service the platform needs failed or did not answer."""

    retriable = True


class ExitCode(IntEnum):
    """What every ``citybrain`` command exits with; scripts and the supervisor act on these, not on messages."""

    OK = 0
    #: A check found a problem (a stale file, a service down, a failed DAG), or the run itself failed.
    FAILURE = 1
    #: An option, file, contract or setting breaks a rule (an :class:`InputError`, or a usage error): nothing done.
    BAD_INPUT = 2
    #: Done, but some records were dead-lettered (their rule and fix are printed).
    PARTLY_ACCEPTED = 3
    #: A service the command needs (the broker, Airflow, the platform) failed or did not answer (a
    #: :class:`ServiceError`): trying again later may succeed.
    SERVICE_UNAVAILABLE = 4


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code of an error by its kind: bad input 2, an unavailable service 4, anything else 1."""
    if isinstance(exc, InputError):
        return ExitCode.BAD_INPUT
    if isinstance(exc, ServiceError):
        return ExitCode.SERVICE_UNAVAILABLE
    return ExitCode.FAILURE
