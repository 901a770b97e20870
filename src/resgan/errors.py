"""The project's one-line errors.

Every error a user can act on (a wrong params value, a missing or broken file, a registry
lock not freed, workers that never came) derives from ``ResganError``: the stages and the CLI
print its message as one line and exit 1; anything else is a bug and keeps its traceback.
"""


class ResganError(Exception):
    """An error whose message alone tells the user what is wrong and what to do."""
