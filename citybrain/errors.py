"""CityBrain's errors: every message names the bad value, the rule or limit, and the fix.

Two kinds, so callers (the CLI, the DAG tasks, the supervisor of a live platform) can act
without parsing messages:

- :class:`InputError`: what a person gave (a setting, a contract, a file, an option) breaks a
  rule. Running again changes nothing until it is fixed; the CLI exits 2.
- :class:`ServiceError`: a service the platform needs (the broker, its topics) failed or did
  not answer. ``retriable`` says whether trying again later may succeed.
"""

from __future__ import annotations

__all__ = ["CityBrainError", "InputError", "ServiceError"]


class CityBrainError(Exception):
    """Base of every error CityBrain raises on purpose."""

    #: True when the same call may succeed later without anything being fixed (aiokafka's convention).
    retriable: bool = False


class InputError(CityBrainError, ValueError):
    """A setting, contract, file or option breaks a rule; the message names it, the rule and the fix."""


class ServiceError(CityBrainError, RuntimeError):
    """A service the platform needs failed or did not answer."""

    retriable = True
