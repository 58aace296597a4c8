"""The lab's exception family: the lab could not be built, a process did not come up, a wait ran
out. Subclasses ElsewhereError so the CLI can turn it into one clear line."""

from __future__ import annotations

from elsewhere.errors import ElsewhereError


class LabError(ElsewhereError):
    """Something in the censor lab did not happen the way it had to."""
